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
- ``none``: the raw logits with the prior they encode (shift.source_prior); EM as before.

An estimate is flagged (``EMResult.status``) instead of reported when EM stopped at its
iteration cap, or when its entropy collapsed (see :func:`em_status`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ltlab.evaluation import posthoc
from ltlab.evaluation.calibration_cv import choose_calibration
from ltlab.evaluation.calibration_fit import (  # noqa: F401 (the calibrations' home for callers)
    BIAS_SIGMA,
    FITTED,
    SOURCE_FIT,
    Calibration,
    fit_bcts,
    fit_bcts_l2,
    fit_method,
    fit_weighted_temperature,
    source_prior_on,
    with_fitted_source,
)

CALIBRATIONS = ("auto", "ts", "bcts", "bcts_l2", "none")
STATUS_OK, STATUS_CAP, STATUS_COLLAPSED = "ok", "iteration cap", "collapsed"
# An estimate whose perplexity exp(H(q)) falls below this fraction of the perplexity of the
# mean calibrated posterior (EM's first step, a label-free reference) is flagged as collapsed.
COLLAPSE_RATIO = 0.5
EM_MAX_ITER = 1000


def fit_calibration(method: str, val_logits=None, val_labels=None, model_prior=None, *,
                    bias_sigma: float = BIAS_SIGMA, **auto_options) -> Calibration:
    """The calibration ``method`` (auto, ts, bcts, bcts_l2, none) fitted on the validation split.

    ``model_prior``: counts (or a prior) of the label distribution the logits encode
    (shift.source_prior on the raw scale, shift.calibrated_source_prior for the posteriors of a
    fitted calibration); the source prior of 'ts', 'bcts_l2' and 'none'. 'auto' passes
    ``auto_options`` (n_folds, n_repeats, seed, candidates, source_fit) to calibration_cv.choose_calibration.
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
        return choose_calibration(val_logits, val_labels, model_prior, bias_sigma=bias_sigma, **auto_options)
    if auto_options:
        raise TypeError(f"{', '.join(auto_options)}: options of calibration 'auto' only")
    f = np.asarray(val_logits, dtype=np.float64)
    y = np.asarray(val_labels).astype(np.int64).ravel()
    return fit_method(method, f, y, model_prior, bias_sigma)


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
