"""Accuracy and calibration metrics on saved predictions (failure prediction lives in
ltlab.evaluation.failure and is re-exported here, so ``metrics.auroc`` etc. keep working).

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

from ltlab.evaluation.failure import aupr_error, aurc, auroc, balanced_aurc, eaurc, fpr_at_tpr, risk_coverage  # noqa: F401 (re-exported)

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
