"""The calibrations EM can work on, each fitted on the validation split (the choice between them,
and what each is for: ltlab.evaluation.calibrated_em; the cross-validated choice: calibration_cv).

All are softmax(z / T + b) with a source prior (:class:`Calibration`): ``ts`` (b = 0, source prior
the model prior pi), ``bcts`` (free b, source prior the val prior; Alexandari et al. 2020),
``bcts_l2`` (b shrunk by a Gaussian prior, source prior pi), ``none`` (T = 1, b = 0, pi).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
from scipy.optimize import minimize, minimize_scalar

from ltlab.evaluation import metrics as M
from ltlab.evaluation import posthoc

FITTED = ("ts", "bcts", "bcts_l2")    # fitted on the val split: the candidates of 'auto'
BIAS_SIGMA = 1.0                      # prior std of bcts_l2's class biases (calibrated_em's docstring)


@dataclass(frozen=True)
class Calibration:
    """softmax(logits / temperature + bias): posteriors under ``source_prior``."""
    method: str
    temperature: float
    bias: np.ndarray
    source_prior: np.ndarray
    val_nll: float = float("nan")
    info: dict = field(default_factory=dict)

    def probs(self, logits) -> np.ndarray:
        return M.softmax(self.scaled(logits))

    def scaled(self, logits) -> np.ndarray:
        """logits / temperature + bias: the log-posteriors up to a constant per image (no
        underflow, unlike log(probs), where a confident image's tail classes would round to 0)."""
        return np.asarray(logits, dtype=np.float64) / self.temperature + self.bias

    @property
    def label(self) -> str:
        """The method, prefixed 'auto: ' when cross-validation chose it (the em_calibration column)."""
        return f"auto: {self.method}" if self.info.get("cv_nll") else self.method

    def describe(self) -> str:
        """'ts (T = 1.89)', or for a choice made by cross-validation 'ts (T = 1.89), chosen by
        5-fold CV NLL (x4) on 200 val images: ts 0.541 vs bcts_l2 0.553 vs bcts 0.563'."""
        text = f"{self.method} (T = {self.temperature:.3g}"
        if self.method != "ts" and self.method != "none":
            text += f", bias range {float(self.bias.max() - self.bias.min()):.3g}"
        text += ")"
        cv = self.info.get("cv_nll")
        if cv:
            others = " vs ".join(f"{m} {v:.3f}" for m, v in cv.items())
            text += (f", chosen by {self.info['n_folds']}-fold CV NLL (x{self.info['n_repeats']}) "
                     f"on {self.info['n_val']} val images: {others}")
        if self.info.get("excluded"):
            text += f" ({'; '.join(self.info['excluded'])})"
        return text


def _nll_grad(params, f, onehot, offset=0.0, ridge=0.0):
    """Mean NLL of softmax(a f + b + offset) plus ridge |b|^2 / 2, and its gradient in (a, b);
    convex (linear logits, a convex penalty)."""
    a, b = params[0], params[1:]
    z = a * f + b + offset
    logp = M.log_softmax(z)
    n = f.shape[0]
    nll = -float((logp * onehot).sum()) / n + 0.5 * ridge * float(b @ b)
    r = (np.exp(logp) - onehot) / n          # d NLL / d z
    return nll, np.concatenate([[float((r * f).sum())], r.sum(axis=0) + ridge * b])


def fit_bcts(logits, labels, init=None) -> tuple[float, np.ndarray, float]:
    """(T, b, NLL) minimising the mean NLL of softmax(logits / T + b) (Alexandari et al. 2020).

    The NLL is convex in (1/T, b) (the logits are linear in them), so L-BFGS from the
    temperature-scaling solution reaches the global minimum. b is returned with mean 0 (the
    softmax ignores a common shift). Every class needs a label in ``labels``: an absent class
    would drive its bias to -infinity. ``init`` (T, b): a start (e.g. the fit on the whole split
    when refitting on a resample of it; the minimum is the same, reached in fewer steps).
    """
    f = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels).astype(np.int64).ravel()
    n, c = f.shape
    missing = np.flatnonzero(np.bincount(y, minlength=c) == 0)
    if missing.size:
        raise ValueError(f"BCTS needs every class in the calibration labels; classes {missing.tolist()[:10]} "
                         "have none")
    onehot = np.zeros((n, c))
    onehot[np.arange(n), y] = 1.0
    x0 = _start(init, f, y, c)
    res = minimize(_nll_grad, x0, args=(f, onehot), jac=True, method="L-BFGS-B",
                   bounds=[(1e-3, 1e3)] + [(None, None)] * c, options={"maxiter": 2000, "gtol": 1e-9})
    a, b = float(res.x[0]), res.x[1:] - res.x[1:].mean()
    return 1.0 / a, b, float(res.fun)


def _start(init, f, y, c) -> np.ndarray:
    if init is None:
        return np.concatenate([[1.0 / posthoc.fit_temperature(f, y)], np.zeros(c)])
    t, b = init
    return np.concatenate([[1.0 / float(t)], np.asarray(b, dtype=np.float64).ravel()])


def fit_bcts_l2(logits, labels, model_prior, sigma: float = BIAS_SIGMA, val_prior=None,
                init=None) -> tuple[float, np.ndarray, float]:
    """(T, b, penalised mean NLL): softmax(logits / T + b) are posteriors under the model prior pi
    (``model_prior``, counts or a prior); T and b maximise the val likelihood of the same
    posteriors moved to the val prior, softmax(logits / T + b + log q_val - log pi), plus the log
    density of b_k ~ N(0, sigma^2) (MAP; calibrated_em's docstring). ``val_prior``: the q_val to use
    (default: the labels' class frequencies; a cross-validation fold passes the whole split's).
    A class without a val label is allowed: its bias is held by the penalty. ``init``: as fit_bcts.
    """
    f = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels).astype(np.int64).ravel()
    n, c = f.shape
    if not sigma > 0:
        raise ValueError(f"bcts_l2's sigma must be > 0, got {sigma}")
    pi = posthoc.class_prior(model_prior)
    q_val = np.bincount(y, minlength=c) / n if val_prior is None else posthoc.class_prior(val_prior)
    offset = posthoc._log_prior(q_val) - posthoc._log_prior(pi)
    onehot = np.zeros((n, c))
    onehot[np.arange(n), y] = 1.0
    ridge = 1.0 / (sigma * sigma * n)        # the Gaussian log-prior on the summed NLL, per image
    x0 = _start(init, f + offset, y, c)
    res = minimize(_nll_grad, x0, args=(f, onehot, offset, ridge), jac=True, method="L-BFGS-B",
                   bounds=[(1e-3, 1e3)] + [(None, None)] * c, options={"maxiter": 2000, "gtol": 1e-9})
    return 1.0 / float(res.x[0]), res.x[1:].copy(), float(res.fun)


def fit_weighted_temperature(logits, labels, weights) -> float:
    """T minimising sum_i w_i NLL_i(softmax(logits / T)) / sum w (convex in 1/T; bounded
    like posthoc.fit_temperature, T in [0.05, 20])."""
    f = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels).astype(np.int64).ravel()
    w = np.asarray(weights, dtype=np.float64) / np.sum(weights)
    fy = f[np.arange(f.shape[0]), y]

    def nll(beta):
        return float(w @ (M.logsumexp(beta * f) - beta * fy))

    lo, hi = np.exp(-np.asarray(posthoc.LOG_T_BOUNDS[::-1]))
    res = minimize_scalar(nll, bounds=(lo, hi), method="bounded", options={"xatol": 1e-10})
    return float(1.0 / res.x)


PRIOR_POWER_BOUNDS = (-3.0, 4.0)   # gamma of pi^gamma; the archived CIFAR-10-LT runs fit 0.13 to 1.09


def fit_prior_power(logits, labels, train_counts, val_prior=None) -> tuple[float, float, float]:
    """(T, gamma, NLL): the source prior pi^gamma (pi the training prior) that the run's logits
    encode, fitted jointly with a temperature on the val split.

    The posteriors softmax(z / T) are taken to be under the source prior s = pi^gamma / Z, so the
    val split's posteriors are softmax(z / T - gamma log pi + log q_val) (Bayes' rule under label
    shift; Saerens et al. 2002), and (1/T, gamma) minimise their mean NLL. The logits are linear in
    (1/T, gamma), so the NLL is convex and L-BFGS finds the global minimum. For a method whose
    objective does not say which prior its logits carry (TDE's counterfactual logits, margins, a
    re-normalised classifier) this is the evidence; the temperature is fitted with it because
    raw logits' overconfidence would otherwise be absorbed into gamma. ``val_prior``: as fit_bcts_l2.
    """
    f = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels).astype(np.int64).ravel()
    n, c = f.shape
    log_pi = posthoc._log_prior(posthoc.class_prior(train_counts))
    q_val = np.bincount(y, minlength=c) / n if val_prior is None else posthoc.class_prior(val_prior)
    offset = posthoc._log_prior(q_val)
    onehot = np.zeros((n, c))
    onehot[np.arange(n), y] = 1.0

    def nll_grad(x):
        a, g = x
        logp = M.log_softmax(a * f - g * log_pi + offset)
        r = (np.exp(logp) - onehot) / n
        return -float((logp * onehot).sum()) / n, np.array([float((r * f).sum()), -float(r.sum(0) @ log_pi)])

    x0 = np.array([1.0 / posthoc.fit_temperature(f, y), 1.0])
    res = minimize(nll_grad, x0, jac=True, method="L-BFGS-B", bounds=[(1e-3, 1e3), PRIOR_POWER_BOUNDS],
                   options={"maxiter": 2000, "gtol": 1e-10})
    return 1.0 / float(res.x[0]), float(res.x[1]), float(res.fun)


SOURCE_FIT = "source_power_fit"   # Calibration.info key: the training counts whose pi^gamma was fitted on val


def with_fitted_source(cal: Calibration, train_counts) -> Calibration:
    """``cal``, marked as having a source prior pi^gamma fitted on its val split (fit_prior_power),
    so that a refit on a val resample refits gamma too (:func:`source_prior_on`)."""
    return replace(cal, info={**cal.info, SOURCE_FIT: np.asarray(train_counts, dtype=np.float64).ravel()})


def source_prior_on(cal: Calibration, val_logits, val_labels) -> np.ndarray:
    """The source prior a refit of ``cal`` on these val images uses: its own, or for a calibration
    marked by :func:`with_fitted_source` pi^gamma with gamma fitted again on them."""
    counts = cal.info.get(SOURCE_FIT)
    if counts is None:
        return cal.source_prior
    gamma = fit_prior_power(val_logits, val_labels, counts)[1]
    return posthoc.class_prior(np.maximum(counts, 1.0) ** gamma)


def fit_method(method: str, f, y, model_prior=None, bias_sigma: float = BIAS_SIGMA) -> Calibration:
    """``method`` (ts, bcts, bcts_l2) fitted on val logits ``f`` and labels ``y``; calibrated_em.fit_calibration
    checks the arguments and adds 'none' and 'auto'."""
    c = f.shape[1]
    q_val = np.bincount(y, minlength=c) / y.size
    if method == "bcts":
        t, b, nll = fit_bcts(f, y)
        return Calibration("bcts", t, b, q_val, nll)
    if model_prior is None:
        raise ValueError(f"calibration {method!r} needs the model prior (the prior the logits encode)")
    pi = posthoc.class_prior(model_prior)
    if method == "bcts_l2":
        t, b, nll = fit_bcts_l2(f, y, pi, bias_sigma)
        return Calibration("bcts_l2", t, b, pi, nll, {"bias_sigma": float(bias_sigma)})
    if (q_val[y] <= 0).any() or not (pi > 0).all():
        raise ValueError("calibration 'ts' needs a positive model prior for every class")
    t = fit_weighted_temperature(f, y, pi[y] / q_val[y])
    return Calibration("ts", t, np.zeros(c), pi, M.nll(f / t, y))
