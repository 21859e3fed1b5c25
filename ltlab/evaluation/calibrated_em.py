"""Label-shift estimation from calibrated posteriors: a calibration fitted on the validation split, then EM.

EM (Saerens, Latinne & Decaestecker 2002; ltlab.evaluation.posthoc.em_prior) is the maximum-likelihood
estimate of the test prior only if p(y|x) is calibrated. An over-confident long-tailed model
breaks it: every hard example votes for its argmax class at full weight, EM amplifies the
head's share at each step and the estimate can end with nearly all the mass on one class.
Alexandari, Kundaje & Shrikumar, "Maximum Likelihood with Bias-Corrected Calibration is
Hard-To-Beat at Label Shift Adaptation", ICML 2020, calibrate first with bias-corrected
temperature scaling (BCTS): p(y|x) = softmax(z / T + b)_y, T and the class biases b fitted by
NLL on held-out source data. The calibrated posteriors are those of the held-out set's label
distribution, so that distribution (not the training prior) is the source prior EM divides out.

Calibrations (``CALIBRATIONS``):

- ``auto`` (the default): one of ``ts``, ``bcts`` and ``bcts_l2``, the one with the lowest
  K-fold cross-validated NLL on the val split (calibration_cv.choose_calibration). BCTS's C biases
  fitted on 20 images a class can cost more than they correct; the choice is the run's own
  evidence, recorded in ``Calibration.info`` and printed by ``Calibration.describe()``;
- ``bcts``: T and b by NLL on val (needs a val split with every class);
- ``bcts_l2``: softmax(z / T + b) as posteriors under the model prior pi, b the class-bias
  correction beyond the prior change from pi to the val prior, fitted by MAP with a Gaussian
  prior b_k ~ N(0, sigma^2) (sigma = ``BIAS_SIGMA`` = 1: a priori a class's odds are off by a
  factor within e^{+-2} ~ 7 at two sigma; on the seven archived CIFAR-10-LT runs, sigma = 1 had
  a 5-fold CV NLL within 0.015 of the best of sigma in 0.1..4 on each, where 0.5 was up to 0.04
  worse and 0.1 up to 0.15). sigma -> infinity is ``bcts`` (the same model,
  reparametrised: bcts' b = b + log q_val - log pi), sigma -> 0 temperature scaling on the
  prior-corrected posteriors, softmax(z / T + log q_val - log pi). The penalty is added to the summed NLL, so its weight fades as the
  val split grows;
- ``ts``: T only (Guo et al. 2017). The val split is balanced while the logits encode the
  training prior pi, so the NLL is importance-weighted by pi_y / q_val_y: T is the one that
  calibrates the training distribution, and pi stays EM's source prior. (Fitting T on the
  balanced NLL, or after moving the logits to the val prior, makes T absorb the mismatch: on
  over- or under-confident logits the prior they encode is scaled with them.);
- ``none``: the raw logits with the prior they encode (shift.model_prior_counts); EM as before.

An estimate is flagged (``EMResult.status``) instead of reported when EM stopped at its
iteration cap, or when its entropy collapsed (see :func:`em_status`).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import minimize, minimize_scalar

from ltlab.evaluation import metrics as M
from ltlab.evaluation import posthoc

CALIBRATIONS = ("auto", "ts", "bcts", "bcts_l2", "none")
FITTED = ("ts", "bcts", "bcts_l2")    # the candidates of 'auto': fitted on the val split
BIAS_SIGMA = 1.0                      # prior std of bcts_l2's class biases (module docstring)
STATUS_OK, STATUS_CAP, STATUS_COLLAPSED = "ok", "iteration cap", "collapsed"
# An estimate whose perplexity exp(H(q)) falls below this fraction of the perplexity of the
# mean calibrated posterior (EM's first step, a label-free reference) is flagged as collapsed.
COLLAPSE_RATIO = 0.5
EM_MAX_ITER = 1000


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
        return M.softmax(np.asarray(logits, dtype=np.float64) / self.temperature + self.bias)

    @property
    def label(self) -> str:
        """The method, prefixed 'auto: ' when cross-validation chose it (the em_calibration column)."""
        return f"auto: {self.method}" if self.info.get("cv_nll") else self.method

    def describe(self) -> str:
        """'ts (T = 1.89)', or for a choice made by cross-validation
        'ts, chosen by 5-fold CV NLL on 200 val images: ts 0.910 vs bcts 0.970 vs bcts_l2 0.930'."""
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
    density of b_k ~ N(0, sigma^2) (MAP; module docstring). ``val_prior``: the q_val to use
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


def fit_calibration(method: str, val_logits=None, val_labels=None, model_prior=None, *,
                    bias_sigma: float = BIAS_SIGMA, **auto_options) -> Calibration:
    """The calibration ``method`` (auto, ts, bcts, bcts_l2, none) fitted on the validation split.

    ``model_prior``: counts (or a prior) of the label distribution the raw logits encode
    (shift.model_prior_counts); the source prior of 'ts', 'bcts_l2' and 'none'. 'auto' passes
    ``auto_options`` (n_folds, n_repeats, seed, candidates) to calibration_cv.choose_calibration.
    """
    if method not in CALIBRATIONS:
        raise ValueError(f"calibration {method!r}: expected one of {', '.join(CALIBRATIONS)}")
    if method == "none":
        if model_prior is None:
            raise ValueError("calibration 'none' needs the model prior (the prior the logits encode)")
        pi = posthoc.class_prior(model_prior)
        return Calibration("none", 1.0, np.zeros(pi.size), pi)
    if val_logits is None or val_labels is None:
        raise ValueError(f"calibration {method!r} needs a validation split (logits and labels); "
                         "pass calibration 'none' to run EM on the uncalibrated logits")
    if method == "auto":
        # imported here: calibration_cv fits its candidates with this module
        from ltlab.evaluation.calibration_cv import choose_calibration
        return choose_calibration(val_logits, val_labels, model_prior, bias_sigma=bias_sigma, **auto_options)
    if auto_options:
        raise TypeError(f"{', '.join(auto_options)}: options of calibration 'auto' only")
    f = np.asarray(val_logits, dtype=np.float64)
    y = np.asarray(val_labels).astype(np.int64).ravel()
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


def perplexity(p) -> float:
    """exp(entropy) of a distribution: the effective number of classes."""
    p = np.asarray(p, dtype=np.float64)
    nz = p[p > 0]
    return float(np.exp(-(nz * np.log(nz)).sum()))


@dataclass(frozen=True)
class EMResult:
    prior: np.ndarray          # the estimate q_hat
    probs: np.ndarray          # posteriors reweighted by q_hat / source prior
    n_iter: int
    status: str                # 'ok', 'iteration cap' or 'collapsed'
    perplexity: float          # exp(H(q_hat))
    reference_perplexity: float


def em_status(q_hat, q_first, capped: bool, collapse_ratio: float = COLLAPSE_RATIO) -> str:
    """'iteration cap' when EM had not converged, 'collapsed' when exp(H(q_hat)) is below
    ``collapse_ratio`` times exp(H(q_first)) (q_first: the mean calibrated posterior), else 'ok'."""
    if capped:
        return STATUS_CAP
    if perplexity(q_hat) < collapse_ratio * perplexity(q_first):
        return STATUS_COLLAPSED
    return STATUS_OK


def estimate_prior(logits, calibration: Calibration, max_iter: int = EM_MAX_ITER, tol: float = 1e-6,
                   collapse_ratio: float = COLLAPSE_RATIO) -> EMResult:
    """EM on the calibrated posteriors of unlabeled test logits, with its status."""
    p = calibration.probs(logits)
    q, adj, it = posthoc.em_prior(p, calibration.source_prior, max_iter=max_iter, tol=tol)
    # adj is the E-step at q, so its mean is the next iterate: converged iff it barely moves
    capped = it >= max_iter and float(np.max(np.abs(adj.mean(axis=0) - q))) > tol
    q_first = p.mean(axis=0)
    return EMResult(q, adj, int(it), em_status(q, q_first, capped, collapse_ratio), perplexity(q),
                    perplexity(q_first))


def total_variation(p, q) -> float:
    return 0.5 * float(np.abs(np.asarray(p, dtype=np.float64) - np.asarray(q, dtype=np.float64)).sum())
