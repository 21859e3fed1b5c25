"""Failure prediction (selective classification) on saved predictions: AUROC of a
confidence score for correct vs wrong, risk-coverage, AURC, E-AURC, FPR at a TPR, AUPR of
errors, and the class-balanced AURC.

Same conventions as ltlab.evaluation.metrics (which re-exports everything here): ``score`` is oriented
higher = more likely correct, ``correct`` is the boolean vector 1[argmax == label], pure
numpy in float64, a sort or two per metric.
"""
from __future__ import annotations

import numpy as np


def _score_correct(score, correct):
    s = np.asarray(score, dtype=np.float64).ravel()
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
    y = np.asarray(labels).astype(np.int64, copy=False).ravel()
    if y.shape != s.shape:
        raise ValueError(f"labels has {y.shape[0]} entries, expected {s.shape[0]}")
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
