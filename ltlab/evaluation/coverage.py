"""Do the intervals cover? Repeated-sampling checks on a run's own predictions.

A run's test predictions are taken as the population (Efron & Tibshirani 1993, ch. 6: a
simulation with a known truth). Each draw takes a sample from it, computes the nominal-level
intervals of ltlab.evaluation.intervals, .paired and .reweighting on the sample, and records
whether they contain the population's value. Over many draws, the fraction that does is the
intervals' actual coverage on this kind of model output (real confidences, real per-class
accuracies, real correlation between two methods), which a synthetic check cannot promise.

Samples, all drawn with replacement so that the population is exactly the distribution sampled
from (a sample without replacement would add a finite-population correction the bootstrap
does not know about, and so over-cover):

* single run and paired comparison: ``fraction`` of each class's images (at least 2 a class),
  class by class, as a test set is built; the truths are the metrics of the whole population
  (top-1, balanced accuracy, many / medium / few, AUROC of MSP; paired: A - B of balanced
  accuracy, top-1, few). ECE is measured but not checked: binned ECE is biased upward on a
  finite sample, so an interval around it does not aim at the population ECE;
* reweighting: ``shifted_n`` images drawn with the class distribution ``shift_prior`` (e.g. a
  forward50 profile; reweighting.draw_shifted_sample), the estimators given that prior; the
  truth is the population's balanced and group accuracy (a uniform target); the same with the
  sample's own label frequencies as its prior (``reweighting_empirical``). With
  ``calibration`` given, the same with the prior EM estimates from the sample (re-estimated on
  each resample; its bias, if the calibration is off, is not in the interval). With
  ``em_method`` instead (``reweighting_em_refit``), every draw also draws a val sample of
  ``val_per_class`` images a class from the val population (``val``, or the population itself),
  fits that calibration method on it ('auto' included), and the interval refits the calibration
  on val resamples: the repeated experiment is then the whole one a user runs, val split included.

Everything is seeded: draw d uses seed ``seed + d`` for its sample and its resamples.
"""
from __future__ import annotations

import numpy as np

from ltlab.evaluation import calibrated_em as CE
from ltlab.evaluation import intervals as I
from ltlab.evaluation import paired as P
from ltlab.evaluation import reweighting as R

SINGLE = ("top1", "balanced_acc", "many", "medium", "few", "auroc", "ece")
PAIRED = ("balanced_acc", "top1", "few", "ece")
NOT_CHECKED = ("ece",)      # reported, not expected to reach nominal coverage (module docstring)


def stratified_draw(labels, fraction: float, rng) -> np.ndarray:
    """Indices: round(fraction * n_k) (at least 2) images of each class k, with replacement."""
    y = np.asarray(labels).astype(np.int64).ravel()
    parts = []
    for k in np.unique(y):
        idx = np.flatnonzero(y == k)
        parts.append(rng.choice(idx, size=max(2, int(round(fraction * idx.size))), replace=True))
    return np.concatenate(parts)


def _truth_single(logits, labels, train_counts):
    return I.point_estimates(logits, labels, train_counts)


def _truth_target(logits, labels, train_counts) -> dict:
    z = np.asarray(logits)
    y = np.asarray(labels).astype(np.int64).ravel()
    acc = np.bincount(y, weights=(z.argmax(1) == y), minlength=z.shape[1]) / np.maximum(
        np.bincount(y, minlength=z.shape[1]), 1)
    g = I.shot_groups(train_counts)
    out = {"balanced_acc": float(acc.mean())}
    out.update({name: float(acc[g == i].mean()) for i, name in enumerate(I.GROUPS) if (g == i).any()})
    return out


def simulate_coverage(logits, labels, train_counts, other_logits=None, *, shift_prior=None, draws: int = 200,
                      fraction: float = 0.05, shifted_n: int = 2000, n_resamples: int = 200, level: float = 0.95,
                      seed: int = 0, temperature: float = 1.0, calibration: CE.Calibration | None = None,
                      em_method: str | None = None, model_prior=None, val=None, val_per_class: int = 20) -> dict:
    """Coverage of the nominal ``level`` intervals over ``draws`` samples of a run's predictions.

    ``other_logits``: a second run on the same test images (the paired comparison is A = this run,
    B = other); ``shift_prior`` (C,): the class distribution of the reweighting samples (None
    skips them); ``temperature``: dr's outcome model; ``calibration``: adds the estimated-prior
    reweighting with that calibration held fixed; ``em_method`` (with ``model_prior``, the prior
    the logits encode; ``val`` = (logits, labels) of a val population, default this one): adds it
    with a calibration fitted on each draw's val sample and refitted within the interval.
    Returns {"single": {metric: rate}, "paired": {...}, "reweighting": {"<estimator>
    <target>": rate}, "reweighting_empirical": {...}, "reweighting_em": {...}, "reweighting_em_refit": {...},
    "width": {same keys: mean interval width},
    "truth": {...}, "draws", "level", "not_checked"} (absent parts omitted).
    """
    z = np.asarray(logits, dtype=np.float32)
    y = np.asarray(labels).astype(np.int64).ravel()
    zb = None if other_logits is None else np.asarray(other_logits, dtype=np.float32)
    truth = {"single": _truth_single(z, y, train_counts)}
    if zb is not None:
        tb = _truth_single(zb, y, train_counts)
        truth["paired"] = {k: (None if truth["single"][k] is None else truth["single"][k] - tb[k]) for k in PAIRED}
    if shift_prior is not None:
        truth["reweighting"] = _truth_target(z, y, train_counts)

    if em_method is not None:
        if shift_prior is None or model_prior is None:
            raise ValueError("em_method needs shift_prior and model_prior")
        zv, yv = (z, y) if val is None else (np.asarray(val[0], dtype=np.float32),
                                             np.asarray(val[1]).astype(np.int64).ravel())
    hits: dict = {}
    widths: dict = {}

    def record(part, key, ci, true):
        if ci is None or true is None:
            return
        hits.setdefault(part, {}).setdefault(key, []).append(ci[0] <= true <= ci[1])
        widths.setdefault(part, {}).setdefault(key, []).append(ci[1] - ci[0])

    for d in range(draws):
        rng = np.random.default_rng([seed, d])
        idx = stratified_draw(y, fraction, rng)
        ci = I.bootstrap_cis(z[idx], y[idx], train_counts, n_resamples=n_resamples, seed=seed + d, level=level)
        for k in SINGLE:
            record("single", k, ci[k], truth["single"][k])
        if zb is not None:
            out = P.paired_bootstrap(z[idx], zb[idx], y[idx], train_counts, n_resamples=n_resamples, seed=seed + d,
                                     level=level)
            for k in PAIRED:
                record("paired", k, out[k]["ci"], truth["paired"][k])
        if shift_prior is not None:
            sidx = R.draw_shifted_sample(y, shift_prior, shifted_n, seed=int(rng.integers(2**31)))
            priors = {"reweighting": (shift_prior, None, None), "reweighting_empirical": ("empirical", None, None)}
            if calibration is not None:
                priors["reweighting_em"] = (None, calibration, None)
            if em_method is not None:
                vidx = np.concatenate([rng.choice(np.flatnonzero(yv == k), val_per_class) for k in np.unique(yv)])
                cal_d = CE.fit_calibration(em_method, zv[vidx], yv[vidx], model_prior)
                priors["reweighting_em_refit"] = (None, cal_d, vidx)
            for part, (prior, em_cal, vidx) in priors.items():
                val_kw = {} if vidx is None else dict(val_logits=zv[vidx], val_labels=yv[vidx])
                for r in R.estimate_target_accuracy(z[sidx], y[sidx], prior, temperature=temperature,
                                                    train_counts=train_counts, n_resamples=n_resamples,
                                                    seed=seed + d, level=level, stratified=False,
                                                    em_calibration=em_cal, **val_kw):
                    ci = None if r["ci_lo"] is None else [r["ci_lo"], r["ci_hi"]]
                    record(part, f"{r['estimator']} {r['target']}", ci, truth["reweighting"].get(r["target"]))
    out = {part: {k: float(np.mean(v)) for k, v in h.items()} for part, h in hits.items()}
    out["width"] = {part: {k: float(np.mean(v)) for k, v in w.items()} for part, w in widths.items()}
    out.update(truth=truth, draws=int(draws), level=level, not_checked=list(NOT_CHECKED) + ["naive *"])
    return out
