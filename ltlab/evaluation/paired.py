"""Is method A better than method B? Paired comparisons on the same test images and over seeds.

Two runs evaluated on the same test set share its sampling noise: an image that is hard for A is
usually hard for B. Comparing their separate intervals ignores that and is far too conservative;
the paired tools below resample or pair the same units for both runs.

* :func:`paired_bootstrap`: one set of stratified resamples of the test images (the same as
  ``intervals.bootstrap_cis`` draws with that seed), applied to both runs; the percentile interval
  of the difference A - B of each metric (Efron & Tibshirani 1993, ch. 13).
* :func:`mcnemar_exact`: McNemar's test (McNemar 1947) on per-image correctness. Only the
  discordant images carry information; under H0 (A and B equally often right when they disagree)
  b ~ Binomial(b + c, 1/2), and the exact two-sided p-value is the binomial test's.
* :func:`paired_seeds`: runs matched by seed (same seed = same data order / init where the
  pipeline allows), paired t-interval on the per-seed differences (Student 1908).
* :func:`verdict`: the sentence a report prints. An interval that excludes 0 says which run is
  better *on this test set* (or over these seeds); one that covers 0 says no difference is shown,
  which is not evidence that there is none.
"""
from __future__ import annotations

import math

import numpy as np
from scipy import stats

from ltlab.evaluation.intervals import (
    _check_level,
    _group_of_class,
    _labels,
    _Layout,
    _percentile,
    _Run,
    resample_counts,
)

PAIRED_METRICS = ("balanced_acc", "top1", "few", "ece")
NAMES = {"balanced_acc": "balanced accuracy", "top1": "top-1 accuracy", "few": "few-shot accuracy",
         "many": "many-shot accuracy", "medium": "medium-shot accuracy", "ece": "ECE", "ece_ts": "ECE after TS",
         "auroc": "AUROC", "aurc": "AURC"}
LOWER_IS_BETTER = {"ece", "ece_ts", "aurc", "nll", "brier"}


def verdict(name: str, diff, ci, unit: str = "points", level: float = 0.95, higher_is_better: bool = True,
            where: str = "on this test set") -> str:
    """'balanced accuracy: A − B = +1.2 points, 95% CI [0.4, 2.0]: A is better on this test set'.

    ``diff`` and ``ci`` are fractions (as the metrics are stored); with unit "points" they are
    shown x100 (percentage points), otherwise as they are. ``higher_is_better`` False (ECE, AURC)
    turns a positive difference into "B is better".
    """
    if diff is None or ci is None:
        return f"{name}: not available for both runs"
    s = 100.0 if unit == "points" else 1.0
    u = f" {unit}" if unit else ""
    head = f"{name}: A − B = {diff * s:+.1f}{u}, {level:.0%} CI [{ci[0] * s:.1f}, {ci[1] * s:.1f}]"
    lo, hi = ci
    if lo <= 0.0 <= hi:
        return f"{head}: the interval covers 0: no difference shown {where}"
    a_higher = lo > 0.0
    better = "A" if a_higher == higher_is_better else "B"
    note = "" if higher_is_better else " (lower is better)"
    return f"{head}: {better} is better {where}{note}"


def mcnemar_exact(correct_a, correct_b) -> dict:
    """McNemar's exact test: b = images A gets right and B wrong, c = the reverse, and the
    two-sided binomial p-value of b out of b + c at 1/2 (1.0 when A and B never disagree)."""
    a = np.asarray(correct_a).astype(bool).ravel()
    bb = np.asarray(correct_b).astype(bool).ravel()
    if a.shape != bb.shape:
        raise ValueError(f"correct_a has {a.size} entries and correct_b {bb.size}: not the same test images")
    b = int(np.sum(a & ~bb))
    c = int(np.sum(~a & bb))
    p = 1.0 if b + c == 0 else float(stats.binomtest(b, b + c, 0.5).pvalue)
    return dict(b=b, c=c, n=int(a.size), p_value=p)


def paired_bootstrap(logits_a, logits_b, labels, train_counts=None, *, n_resamples: int = 2000, seed: int = 0,
                     level: float = 0.95, groups=None) -> dict:
    """A - B for balanced accuracy, top-1, few-shot accuracy and ECE, each with a paired stratified
    percentile-bootstrap interval over the test images (the same resamples for both runs).

    Returns {metric: {"a", "b", "diff", "ci": [lo, hi], "text"}} (fractions; None entries where a
    metric does not exist, e.g. no few-shot class) plus "mcnemar" (see :func:`mcnemar_exact`) and
    "n_resamples", "level", "seed".
    """
    level = _check_level(level)
    y = _labels(labels)
    za, zb = np.asarray(logits_a), np.asarray(logits_b)
    for nm, z in (("logits_a", za), ("logits_b", zb)):
        if z.ndim != 2 or z.shape[0] != y.size:
            raise ValueError(f"{nm} has shape {z.shape} but labels has {y.size} entries: "
                             "a paired comparison needs both runs on the same test images")
    if za.shape[1] != zb.shape[1]:
        raise ValueError(f"logits_a has {za.shape[1]} classes and logits_b {zb.shape[1]}")
    lay = _Layout(y)
    g = _group_of_class(train_counts, groups, za.shape[1])
    run_a, run_b = _Run(za, lay, g), _Run(zb, lay, g)
    want = PAIRED_METRICS

    diffs = {k: [] for k in want}
    for pos in lay.position_chunks(n_resamples, seed):
        W = resample_counts(pos, lay.n)
        ma, mb = run_a.metrics(W, want), run_b.metrics(W, want)
        for k in want:
            if ma[k] is not None:
                diffs[k].append(ma[k] - mb[k])
    ones = np.ones((1, lay.n))
    pa, pb = run_a.metrics(ones, want), run_b.metrics(ones, want)

    out = {}
    for k in want:
        if pa[k] is None:
            out[k] = dict(a=None, b=None, diff=None, ci=None, text=verdict(NAMES[k], None, None))
            continue
        a, b = float(pa[k][0]), float(pb[k][0])
        ci = _percentile(np.concatenate(diffs[k]), level)
        out[k] = dict(a=a, b=b, diff=a - b, ci=ci,
                      text=verdict(NAMES[k], a - b, ci, level=level, higher_is_better=k not in LOWER_IS_BETTER))
    # correctness of each image, back in the original order, for McNemar
    ca = np.empty(lay.n, dtype=bool)
    cb = np.empty(lay.n, dtype=bool)
    ca[lay.order] = run_a.correct > 0
    cb[lay.order] = run_b.correct > 0
    out["mcnemar"] = mcnemar_exact(ca, cb)
    out.update(n_resamples=n_resamples, level=level, seed=seed)
    return out


def _match_seeds(values_a, values_b):
    """Per-seed values as two aligned arrays. Dicts {seed: value} are matched by seed (seeds present
    in only one are reported, not used); sequences must already be in the same seed order."""
    if isinstance(values_a, dict) != isinstance(values_b, dict):
        raise ValueError("give both runs' values as {seed: value} dicts or both as sequences")
    if isinstance(values_a, dict):
        common = sorted(set(values_a) & set(values_b))
        unmatched = sorted(set(values_a) ^ set(values_b))
        a = np.array([values_a[s] for s in common], dtype=np.float64)
        b = np.array([values_b[s] for s in common], dtype=np.float64)
        return a, b, common, unmatched
    a = np.asarray(values_a, dtype=np.float64).ravel()
    b = np.asarray(values_b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"{a.size} values for A and {b.size} for B: pair them by seed")
    return a, b, list(range(a.size)), []


def paired_seeds(values_a, values_b, level: float = 0.95, name: str = "metric", higher_is_better: bool = True) -> dict:
    """Paired t-interval over seeds of A - B (values as fractions, matched by seed).

    Returns dict(n, seeds, unmatched, mean_diff, std_diff, ci, p_value, text); with fewer than two
    matched seeds ci / std / p_value are None and the text says there is no interval.
    """
    level = _check_level(level)
    a, b, seeds, unmatched = _match_seeds(values_a, values_b)
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("paired_seeds got a non-finite value")
    d = a - b
    n = int(d.size)
    base = dict(n=n, seeds=seeds, unmatched=unmatched)
    if n < 2:
        mean = float(d.mean()) if n else None
        return dict(base, mean_diff=mean, std_diff=None, ci=None, p_value=None,
                    text=f"{name}: n = {n} matched seed{'s' if n != 1 else ''} (< 2): no interval over seeds")
    mean, std = float(d.mean()), float(d.std(ddof=1))
    if std == 0.0:
        # every seed gives the same difference: the t-interval degenerates to that point
        ci, p = [mean, mean], (1.0 if mean == 0.0 else 0.0)
    else:
        lo, hi = stats.t.interval(level, df=n - 1, loc=mean, scale=std / math.sqrt(n))
        ci = [float(lo), float(hi)]
        p = float(2.0 * stats.t.sf(abs(mean) / (std / math.sqrt(n)), df=n - 1))
    text = verdict(name, mean, ci, level=level, higher_is_better=higher_is_better,
                   where=f"over these {n} seeds")
    return dict(base, mean_diff=mean, std_diff=std, ci=ci, p_value=p, text=text)
