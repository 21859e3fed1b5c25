"""Label-shift estimation from calibrated posteriors: BCTS on the validation split, then EM.

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

- ``bcts``: T and b by NLL on val (the default; needs a val split with every class);
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

CALIBRATIONS = ("bcts", "ts", "none")
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


def _nll_grad(params, f, onehot):
    """Mean NLL of softmax(a f + b) and its gradient in (a, b); convex (linear logits)."""
    a, b = params[0], params[1:]
    z = a * f + b
    logp = M.log_softmax(z)
    n = f.shape[0]
    nll = -float((logp * onehot).sum()) / n
    r = (np.exp(logp) - onehot) / n          # d NLL / d z
    return nll, np.concatenate([[float((r * f).sum())], r.sum(axis=0)])


def fit_bcts(logits, labels) -> tuple[float, np.ndarray, float]:
    """(T, b, NLL) minimising the mean NLL of softmax(logits / T + b) (Alexandari et al. 2020).

    The NLL is convex in (1/T, b) (the logits are linear in them), so L-BFGS from the
    temperature-scaling solution reaches the global minimum. b is returned with mean 0 (the
    softmax ignores a common shift). Every class needs a label in ``labels``: an absent class
    would drive its bias to -infinity.
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
    x0 = np.concatenate([[1.0 / posthoc.fit_temperature(f, y)], np.zeros(c)])
    res = minimize(_nll_grad, x0, args=(f, onehot), jac=True, method="L-BFGS-B",
                   bounds=[(1e-3, 1e3)] + [(None, None)] * c, options={"maxiter": 2000, "gtol": 1e-9})
    a, b = float(res.x[0]), res.x[1:] - res.x[1:].mean()
    return 1.0 / a, b, float(res.fun)


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


def fit_calibration(method: str, val_logits=None, val_labels=None, model_prior=None) -> Calibration:
    """The calibration ``method`` (bcts, ts, none) fitted on the validation split.

    ``model_prior``: counts (or a prior) of the label distribution the raw logits encode
    (shift.model_prior_counts); the source prior of 'ts' and 'none'.
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
    f = np.asarray(val_logits, dtype=np.float64)
    y = np.asarray(val_labels).astype(np.int64).ravel()
    c = f.shape[1]
    q_val = np.bincount(y, minlength=c) / y.size
    if method == "bcts":
        t, b, nll = fit_bcts(f, y)
        return Calibration("bcts", t, b, q_val, nll)
    if model_prior is None:
        raise ValueError("calibration 'ts' needs the model prior (the prior the logits encode)")
    pi = posthoc.class_prior(model_prior)
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
