"""Accuracy, calibration and failure-prediction metrics on saved predictions.

Pure numpy, float64 internally, vectorised (a sort or two per metric, no Python loop
over samples) so a full re-evaluation of 10,000 x 100 logits takes milliseconds.

Conventions shared by every function here:

* ``score`` (a confidence) is oriented higher = more likely correct; ``correct`` is the
  boolean vector 1[argmax == label].
* Probabilities are (N, C); C is always ``probs.shape[1]``, never inferred from labels,
  because a long-tailed test split may miss tail classes entirely.
* Ties in ``argmax`` go to the lowest class index (numpy's rule).
"""
from __future__ import annotations

import numpy as np

GROUPS = ("many", "medium", "few")


# --------------------------------------------------------------------------- basics

def _f64(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def _labels(labels, n: int | None = None) -> np.ndarray:
    y = np.asarray(labels).astype(np.int64, copy=False).ravel()
    if n is not None and y.shape[0] != n:
        raise ValueError(f"labels has {y.shape[0]} entries, expected {n}")
    return y


def _probs2d(probs) -> np.ndarray:
    p = _f64(probs)
    if p.ndim != 2:
        raise ValueError(f"expected an (N, C) array, got shape {p.shape}")
    return p


def shot_groups(train_counts, many: int = 100, few: int = 20) -> np.ndarray:
    """Per-class group index: 0 many (> many), 1 medium (few..many inclusive), 2 few (< few).

    Thresholds follow the OLTR/Decoupling ``shot_acc`` protocol (Liu et al. 2019; Kang et
    al. 2020) used by every ImageNet-LT / Places-LT paper.
    """
    n = np.asarray(train_counts).ravel()
    g = np.ones(n.shape[0], dtype=np.int64)
    g[n > many] = 0
    g[n < few] = 2
    return g


def _exp_parts(z: np.ndarray):
    """(row max m, exp(z - m), row sum s) of a float64 (N, C) array.

    The shared kernel of softmax / log_softmax / logsumexp (max-shift so exp never
    overflows); exp is taken in place to save one (N, C) allocation. ``summary`` reuses
    it so its numbers are bitwise those of the public functions.
    """
    m = z.max(axis=-1)
    e = z - m[..., None]
    np.exp(e, out=e)
    return m, e, e.sum(axis=-1)


def logsumexp(logits) -> np.ndarray:
    m, _, s = _exp_parts(_f64(logits))
    return m + np.log(s)


def log_softmax(logits) -> np.ndarray:
    z = _f64(logits)
    m, _, s = _exp_parts(z)
    return z - (m + np.log(s))[..., None]


def softmax(logits) -> np.ndarray:
    _, e, s = _exp_parts(_f64(logits))
    e /= s[..., None]
    return e


# ------------------------------------------------------------------------- accuracy

def per_class_accuracy(pred, labels, num_classes: int) -> np.ndarray:
    """Recall of each class; NaN where the class has no test sample."""
    y = _labels(labels)
    p = _labels(pred, y.shape[0])
    hit = np.bincount(y, weights=(p == y).astype(np.float64), minlength=num_classes)
    n = np.bincount(y, minlength=num_classes).astype(np.float64)
    if hit.shape[0] > num_classes:
        raise ValueError(f"a label is >= num_classes={num_classes}")
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, hit / np.maximum(n, 1.0), np.nan)


def top1(pred, labels) -> float:
    y = _labels(labels)
    p = _labels(pred, y.shape[0])
    return float(np.mean(p == y)) if y.size else float("nan")


def balanced_accuracy(pred, labels, num_classes: int) -> float:
    """Mean recall over the classes present in ``labels`` (= sklearn balanced_accuracy)."""
    acc = per_class_accuracy(pred, labels, num_classes)
    return float(np.nanmean(acc)) if np.isfinite(acc).any() else float("nan")


def group_accuracy(per_class_acc, train_counts) -> dict:
    """Mean per-class accuracy of each shot group over its classes present in the test set."""
    acc = _f64(per_class_acc)
    g = shot_groups(train_counts)
    if g.shape[0] != acc.shape[0]:
        raise ValueError("per_class_acc and train_counts have different lengths")
    out = {}
    for gi, name in enumerate(GROUPS):
        a = acc[(g == gi) & np.isfinite(acc)]
        out[name] = float(a.mean()) if a.size else None
    return out


# ---------------------------------------------------------------------- calibration

def _top_label(probs, labels):
    p = _probs2d(probs)
    y = _labels(labels, p.shape[0])
    pred = p.argmax(axis=1)
    return p[np.arange(p.shape[0]), pred], pred == y


def _bin_index(conf: np.ndarray, n_bins: int) -> np.ndarray:
    # searchsorted(side="left") - 1 puts conf == m/M into bin m-1: right-closed bins
    # ((m-1)/M, m/M] as in Guo et al. 2017 / MiSLAS; conf 0 (and < 0) is clipped to bin 0.
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)


def calibration_bins(conf, correct, n_bins: int = 15) -> dict:
    """Reliability-diagram statistics over equal-width, right-closed bins."""
    c = _f64(conf).ravel()
    ok = _f64(correct).ravel()
    idx = _bin_index(c, n_bins)
    count = np.bincount(idx, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = np.bincount(idx, weights=ok, minlength=n_bins) / count
        mconf = np.bincount(idx, weights=c, minlength=n_bins) / count
    empty = count == 0
    acc[empty] = np.nan
    mconf[empty] = np.nan
    return dict(edges=np.linspace(0.0, 1.0, n_bins + 1), acc=acc, conf=mconf,
                count=count.astype(np.int64))


def _calibration_errors(conf, correct, n_bins: int = 15):
    """(ECE, MCE, RMSCE) of Guo et al. 2017 / Naeini et al. 2015 from one binning."""
    b = calibration_bins(conf, correct, n_bins)
    n = b["count"].sum()
    if n == 0:
        return float("nan"), float("nan"), float("nan")
    full = b["count"] > 0
    gap = np.abs(b["acc"][full] - b["conf"][full])
    w = b["count"][full] / n
    return float(np.sum(w * gap)), float(gap.max()), float(np.sqrt(np.sum(w * gap ** 2)))


def ece(probs, labels, n_bins: int = 15) -> float:
    """Top-label expected calibration error, sum_m |B_m|/N |acc - conf| (Guo et al. 2017)."""
    return _calibration_errors(*_top_label(probs, labels), n_bins)[0]


def mce(probs, labels, n_bins: int = 15) -> float:
    """Maximum calibration error over non-empty bins (Naeini et al. 2015)."""
    return _calibration_errors(*_top_label(probs, labels), n_bins)[1]


def rmsce(probs, labels, n_bins: int = 15) -> float:
    """Root-mean-square calibration error, the l2 norm of torchmetrics (no debiasing)."""
    return _calibration_errors(*_top_label(probs, labels), n_bins)[2]


def ece_from_logits(logits, labels, n_bins: int = 15) -> float:
    return ece(softmax(logits), labels, n_bins)


def classwise_ece(probs, labels, n_bins: int = 15) -> float:
    """Classwise ECE (Kull et al. 2019): per class k, bin column p_k over *all* samples
    against 1[y = k], then average the C per-class ECEs.

    In a bin, |B|/N * |freq - mean p| = |sum 1[y=k] - sum p_k| / N, so the C x n_bins
    table is filled with two bincounts over the flattened matrix instead of a class loop.
    """
    p = _probs2d(probs)
    n, c = p.shape
    y = _labels(labels, n)
    if n == 0:
        return float("nan")
    cell = _bin_index(p, n_bins) + n_bins * np.arange(c)[None, :]
    sum_p = np.bincount(cell.ravel(), weights=p.ravel(), minlength=c * n_bins)
    hit_cell = cell[np.arange(n), y]  # the only column where 1[y = k] is 1
    sum_y = np.bincount(hit_cell, minlength=c * n_bins).astype(np.float64)
    per_class = np.abs(sum_y - sum_p).reshape(c, n_bins).sum(axis=1) / n
    return float(per_class.mean())


def adaptive_ece(probs, labels, n_bins: int = 15) -> float:
    """Top-label ECE with equal-mass bins (Nixon et al. 2019; Mukhoti et al. 2020).

    Samples sorted by confidence are cut into ``n_bins`` consecutive chunks of
    floor/ceil(N / n_bins) samples (sorted position i goes to bin i * n_bins // N), so
    every bin has the same mass even with heavy ties at confidence 1.0.
    """
    conf, ok = _top_label(probs, labels)
    n = conf.shape[0]
    if n == 0:
        return float("nan")
    order = np.argsort(conf, kind="stable")
    b = (np.arange(n) * n_bins) // n
    gap = np.bincount(b, weights=ok[order].astype(np.float64), minlength=n_bins) \
        - np.bincount(b, weights=conf[order], minlength=n_bins)
    return float(np.abs(gap).sum() / n)


def nll(logits, labels) -> float:
    """Mean negative log-likelihood, from logits via log_softmax (no log(0) on saturation)."""
    ls = log_softmax(_probs2d(logits))
    y = _labels(labels, ls.shape[0])
    return float(-ls[np.arange(ls.shape[0]), y].mean())


def brier(probs, labels) -> float:
    """Multi-class Brier score, sum over classes (Brier 1950), range [0, 2].

    sum_k (p_k - 1[k=y])^2 = sum_k p_k^2 - 2 p_y + 1 avoids building the one-hot matrix.
    """
    p = _probs2d(probs)
    y = _labels(labels, p.shape[0])
    py = p[np.arange(p.shape[0]), y]
    return float(np.mean(np.einsum("ij,ij->i", p, p) - 2.0 * py + 1.0))


# ----------------------------------------------------------- failure prediction

def _score_correct(score, correct):
    s = _f64(score).ravel()
    ok = np.asarray(correct).astype(bool).ravel()
    if s.shape != ok.shape:
        raise ValueError("score and correct must have the same length")
    if np.isnan(s).any():
        raise ValueError("score contains NaN")
    return s, ok


def _tie_blocks(sorted_vals: np.ndarray):
    """Start/end (exclusive) of each run of equal values, and each position's run id.

    Uses != rather than diff so that runs of +-inf are recognised as ties.
    """
    n = sorted_vals.shape[0]
    new = np.ones(n, dtype=bool)
    new[1:] = sorted_vals[1:] != sorted_vals[:-1]
    starts = np.flatnonzero(new)
    ends = np.append(starts[1:], n)
    return starts, ends, np.cumsum(new) - 1


def auroc(score, correct) -> float:
    """AUROC of separating correct (positive) from wrong predictions by ``score``.

    Mann-Whitney U with average ranks for ties (Hanley & McNeil 1982), which equals
    sklearn's trapezoidal roc_auc_score. NaN when only one class is present.
    """
    s, ok = _score_correct(score, correct)
    n_pos = int(ok.sum())
    n_neg = ok.shape[0] - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="stable")
    starts, ends, bid = _tie_blocks(s[order])
    ranks = ((starts + ends + 1) / 2.0)[bid]  # 1-based mean rank of the tie run
    r_pos = ranks[ok[order]].sum()
    return float((r_pos - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def _expected_cum_errors(s: np.ndarray, err: np.ndarray):
    """Cumulative error count after retaining k = 1..N samples by descending score.

    Ties: inside a run of equal scores, the count is linearly interpolated between the
    run's ends, i.e. its expectation over a uniformly random order of the tied samples.
    The result is order-invariant, matches CRL (Moon et al. 2020) when there are no ties,
    and is exact for runs holding only correct or only wrong samples.
    """
    order = np.argsort(-s, kind="stable")
    cum = np.cumsum(err[order], dtype=np.float64)
    starts, ends, bid = _tie_blocks(-s[order])
    before = np.where(starts > 0, cum[np.maximum(starts - 1, 0)], 0.0)
    inside = cum[ends - 1] - before
    size = (ends - starts).astype(np.float64)
    k_in = np.arange(1, s.shape[0] + 1) - starts[bid]
    return before[bid] + k_in * inside[bid] / size[bid]


def risk_coverage(score, correct):
    """Risk-coverage curve (Geifman & El-Yaniv 2017): coverage k/N and selective risk
    r_k = errors among the k highest-scoring samples / k, k = 1..N (ties: see
    ``_expected_cum_errors``)."""
    s, ok = _score_correct(score, correct)
    k = np.arange(1, s.shape[0] + 1, dtype=np.float64)
    return k / s.shape[0], _expected_cum_errors(s, ~ok) / k


def _aurc_from_cum(cum: np.ndarray) -> float:
    return float(np.mean(cum / np.arange(1, cum.shape[0] + 1, dtype=np.float64)))


def aurc(score, correct) -> float:
    """Area under the risk-coverage curve, (1/N) sum_k r_k, as a fraction (not x1000);
    the CRL / Geifman et al. 2019 estimator, ties by expectation (see risk_coverage)."""
    s, ok = _score_correct(score, correct)
    if s.size == 0:
        return float("nan")
    return _aurc_from_cum(_expected_cum_errors(s, ~ok))


def eaurc(score, correct) -> float:
    """Excess AURC (Geifman et al. 2019): AURC minus the AURC of the oracle ranking.

    The oracle (all correct first) is evaluated with the same discrete sum, not with the
    continuous r + (1-r) ln(1-r), so a perfect ranking scores exactly 0.
    """
    s, ok = _score_correct(score, correct)
    if s.size == 0:
        return float("nan")
    n_ok = int(ok.sum())
    oracle = np.maximum(np.arange(1, s.shape[0] + 1) - n_ok, 0).astype(np.float64)
    return _aurc_from_cum(_expected_cum_errors(s, ~ok)) - _aurc_from_cum(oracle)


def _threshold_counts(s: np.ndarray, pos: np.ndarray):
    """True/false positive counts when accepting score >= t, for every distinct t
    (descending), as sklearn's roc_curve / precision_recall_curve enumerate them."""
    order = np.argsort(-s, kind="stable")
    _, ends, _ = _tie_blocks(-s[order])
    tp = np.cumsum(pos[order])[ends - 1].astype(np.float64)
    return tp, ends.astype(np.float64) - tp


def fpr_at_tpr(score, correct, tpr: float = 0.95) -> float:
    """Fraction of wrong predictions accepted at the strictest threshold that still
    accepts at least ``tpr`` of the correct ones (accept = score >= threshold).

    This is the minimum FPR over ROC points with TPR >= tpr, i.e. sklearn's roc_curve
    point ``fpr[searchsorted(tpr_curve, tpr)]`` (fd-shifts' convention, without its
    0.9495 tolerance). Correct predictions are the positive class. NaN if one class
    is missing.
    """
    s, ok = _score_correct(score, correct)
    n_pos = int(ok.sum())
    n_neg = ok.shape[0] - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    tp, fp = _threshold_counts(s, ok)
    i = int(np.argmax(tp / n_pos >= tpr))  # the last point has TPR 1, so one exists
    return float(fp[i] / n_neg)


def aupr_error(score, correct) -> float:
    """Average precision for detecting errors (positives) with -score, defined as in
    sklearn's average_precision_score: sum_n (R_n - R_{n-1}) P_n over distinct
    thresholds (no interpolation). NaN when there is no error."""
    s, ok = _score_correct(score, correct)
    err = ~ok
    n_pos = int(err.sum())
    if n_pos == 0:
        return float("nan")
    tp, fp = _threshold_counts(-s, err)
    recall = tp / n_pos
    return float(np.sum(np.diff(recall, prepend=0.0) * tp / (tp + fp)))


def balanced_aurc(score, correct, labels) -> float:
    """Class-balanced AURC (the fd-shifts ``b-aurc`` idea for long-tailed data).

    At coverage k the risk is the mean, over classes with at least one retained sample,
    of that class's error rate among the k retained samples; the curve is averaged over
    k = 1..N. Running per-class counts make this one pass: adding a sample of class c
    only changes c's term, so the sum of class error rates is a cumulative sum of deltas.
    Ties: the risk is evaluated only at the end of each run of equal scores (where the
    retained set is well defined) and every k inside the run takes that value; with no
    ties this is the plain per-k definition.
    """
    s, ok = _score_correct(score, correct)
    y = _labels(labels, s.shape[0])
    n = s.shape[0]
    if n == 0:
        return float("nan")
    order = np.argsort(-s, kind="stable")
    ys = y[order]
    es = (~ok[order]).astype(np.float64)
    # occurrence number and running error count of each sample within its own class
    by_cls = np.argsort(ys, kind="stable")
    yc = ys[by_cls]
    first = np.ones(n, dtype=bool)
    first[1:] = yc[1:] != yc[:-1]
    grp_start = np.maximum.accumulate(np.where(first, np.arange(n), 0))
    cum_e = np.cumsum(es[by_cls])
    e_before_grp = np.where(grp_start > 0, cum_e[grp_start - 1], 0.0)
    n_c = np.empty(n)
    e_c = np.empty(n)
    n_c[by_cls] = np.arange(n) - grp_start + 1
    e_c[by_cls] = cum_e - e_before_grp
    prev = np.where(n_c > 1, (e_c - es) / np.maximum(n_c - 1, 1), 0.0)
    sum_rates = np.cumsum(e_c / n_c - prev)
    n_present = np.cumsum(n_c == 1)
    risk = sum_rates / n_present
    _, ends, bid = _tie_blocks(-s[order])
    return float(np.mean(risk[ends - 1][bid]))


# ------------------------------------------------------------------------- groups

def by_group(fn, train_counts, labels, *arrays) -> dict:
    """Apply ``fn(*arrays)`` to the samples whose *true* class is in each shot group.

    ``arrays`` are indexed along their first axis; pass ``labels`` again among them if
    ``fn`` needs it, e.g. ``by_group(ece, counts, y, probs, y)``. A group with no test
    sample maps to None.
    """
    y = _labels(labels)
    g = shot_groups(train_counts)[y]
    arrs = [np.asarray(a) for a in arrays]
    out = {}
    for gi, name in enumerate(GROUPS):
        m = g == gi
        out[name] = fn(*[a[m] for a in arrs]) if m.any() else None
    return out
