"""How sure is a number: bootstrap intervals on the metrics of one run, and the spread over seeds.

Bootstrap over test images (Efron & Tibshirani 1993, *An Introduction to the Bootstrap*): the
test set is one draw of N images; redrawing N images with replacement and recomputing a metric
B times approximates the metric's sampling distribution, and its (1 - level)/2 and
(1 + level)/2 quantiles are the percentile interval (ch. 13). The redraw is stratified by class
(Davison & Hinkley 1997, sec. 3.2): each class keeps its test count and is resampled within
itself, because test sets (balanced, or the forwardR/backwardR subsets) fix the per-class counts
by design, so class counts are not part of the sampling noise.

Speed. A resample only repeats images, so a metric on a resample is the same metric on the
original images with integer weights (how often each was drawn). All B resamples form a (B, N)
count matrix W and every metric here is computed for all rows at once, exactly (the ECE bin
sums in float32, to ~1e-7):

* accuracies: per-class sums of W * correct (images are kept in class-sorted order, so a class is
  a contiguous run of columns and one ``np.add.reduceat`` gives all class sums);
* ECE: with 15 fixed bins, sum_b |acc_b - conf_b| n_b / N = sum_b |sum_{i in b} w_i (correct_i -
  conf_i)| / N, a (B, N) @ (N, 15) product;
* AUROC and AURC of the MSP: images are sorted by score once; a tie run (equal scores, which
  includes the copies of one image) becomes one block with its weighted positive / negative
  counts; AUROC is the weighted Mann-Whitney statistic (ties count 1/2), AURC the risk-coverage
  area with the error count interpolated linearly inside a tie run (the expectation over a random
  order of the tied images), summed per block in closed form with harmonic numbers. With all
  weights 1 these are the plain definitions (sklearn's roc_auc_score; CRL's AURC).

Resampling runs in blocks of about ``CHUNK_ELEMENTS`` / N rows (bounding memory for any N) from
one seeded generator, so a seed gives the same resamples in :func:`stratified_bootstrap_indices`, :func:`bootstrap_cis` and
``paired.paired_bootstrap``. Everything here is numpy/scipy on saved logits.
"""
from __future__ import annotations

import math

import numpy as np
from scipy import stats

METRICS = ("top1", "balanced_acc", "many", "medium", "few", "ece", "ece_ts", "auroc", "aurc")
GROUPS = ("many", "medium", "few")
N_BINS = 15
CHUNK_ELEMENTS = 2_500_000   # weights per block of resamples (250 rows at N = 10,000); part of the seeding


# --------------------------------------------------------------------------- layout and resampling

def _labels(labels, num_classes: int | None = None) -> np.ndarray:
    y = np.asarray(labels)
    if y.ndim != 1:
        raise ValueError(f"labels must be 1-d, got shape {y.shape}")
    y = y.astype(np.int64)
    if y.size and y.min() < 0:
        raise ValueError("labels must be >= 0")
    if num_classes is not None and y.size and y.max() >= num_classes:
        raise ValueError(f"a label is >= num_classes={num_classes}")
    return y


def _check_level(level: float) -> float:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    return float(level)


class _Layout:
    """Images in class-sorted order: ``order`` maps a sorted position to the original index; class
    ``classes[k]`` occupies positions ``starts[k] : starts[k] + sizes[k]``."""

    def __init__(self, y: np.ndarray):
        if y.size == 0:
            raise ValueError("no test images")
        self.order = np.argsort(y, kind="stable")
        self.y_sorted = y[self.order]
        self.classes, self.starts, self.sizes = np.unique(self.y_sorted, return_index=True, return_counts=True)
        self.n = y.size

    def position_chunks(self, n_resamples: int, seed: int, stratified: bool = True):
        """(b, N) int32 sorted positions of each resample, a block of rows at a time. Stratified: column
        j draws uniformly within j's class. One loop over distinct class sizes per block (balanced
        test sets have one size), because integers() with a scalar bound is 3x faster than with
        a per-column bound."""
        if n_resamples < 1:
            raise ValueError("n_resamples must be >= 1")
        rng = np.random.default_rng(seed)
        size_of = np.repeat(self.sizes, self.sizes)
        start_of = np.repeat(self.starts, self.sizes).astype(np.int32)
        by_size = [(int(s), np.flatnonzero(size_of == s)) for s in np.unique(self.sizes)]
        rows = max(1, CHUNK_ELEMENTS // self.n)
        for lo in range(0, n_resamples, rows):
            b = min(rows, n_resamples - lo)
            if not stratified:
                yield rng.integers(0, self.n, size=(b, self.n), dtype=np.int32)
                continue
            pos = np.empty((b, self.n), dtype=np.int32)
            for s, cols in by_size:
                draw = rng.integers(0, s, size=(b, cols.size), dtype=np.int32)
                pos[:, cols] = draw + start_of[cols]
            yield pos


def resample_counts(pos: np.ndarray, n: int, dtype=np.float32) -> np.ndarray:
    """(b, n) matrix of how often each position was drawn in each resample (row sums are n)."""
    b = pos.shape[0]
    offset = np.arange(b, dtype=np.int64 if b * n >= 2**31 else np.int32) * n
    flat = (pos + offset[:, None]).ravel()
    return np.bincount(flat, minlength=b * n).reshape(b, n).astype(dtype)


def stratified_bootstrap_indices(labels, n_resamples: int = 1000, seed: int = 0) -> np.ndarray:
    """(n_resamples, N) int32 indices into the test set; column i always draws an image of
    labels[i]'s class, so every resample keeps each class's count. Same resamples as
    :func:`bootstrap_cis` with the same seed (up to the order of the columns)."""
    lay = _Layout(_labels(labels))
    chunks = [lay.order[pos].astype(np.int32) for pos in lay.position_chunks(n_resamples, seed)]
    out = np.empty((n_resamples, lay.n), dtype=np.int32)
    out[:, lay.order] = np.concatenate(chunks)   # column i of the result <-> original image i
    return out


# --------------------------------------------------------------------------- one run's quantities

def _softmax_inplace(z: np.ndarray) -> np.ndarray:
    """Row softmax of a float64 array we own, overwriting it (an (N, C) copy is 400 MB at 50,000 x
    1,000)."""
    z -= z.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z


def shot_groups(train_counts, many: int = 100, few: int = 20) -> np.ndarray:
    """Per-class group 0 many (> 100 train images), 1 medium (20..100), 2 few (< 20): the
    OLTR / Decoupling convention (Liu et al. 2019; Kang et al. 2020)."""
    n = np.asarray(train_counts).ravel()
    return np.where(n > many, 0, np.where(n < few, 2, 1))


def _bin_features(conf: np.ndarray, correct: np.ndarray) -> np.ndarray:
    """(N, 15) one-hot of each image's confidence bin times (correct - conf). Bins are
    equal-width and right-closed ((m-1)/M, m/M], conf 0 in the first (Guo et al. 2017)."""
    edges = np.linspace(0.0, 1.0, N_BINS + 1)
    b = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, N_BINS - 1)
    f = np.zeros((conf.size, N_BINS))
    f[np.arange(conf.size), b] = correct - conf
    return f


def _tie_starts(sorted_vals: np.ndarray) -> np.ndarray | None:
    new = np.ones(sorted_vals.size, dtype=bool)
    new[1:] = sorted_vals[1:] != sorted_vals[:-1]
    return None if new.all() else np.flatnonzero(new)


class _Run:
    """One run's per-image quantities in the layout's class-sorted order, computed once."""

    def __init__(self, logits, lay: _Layout, group_of_class=None, temperature=None):
        z = np.asarray(logits)
        if z.ndim != 2 or z.shape[0] != lay.n:
            raise ValueError(f"logits have shape {z.shape} but labels has {lay.n} entries: expected ({lay.n}, C)")
        if lay.classes[-1] >= z.shape[1]:
            raise ValueError(f"a label is >= the number of logit columns {z.shape[1]}")
        self.lay = lay
        z = z[lay.order].astype(np.float64, copy=False)          # a fresh copy either way
        self.has_ts = temperature is not None
        if self.has_ts:
            if not temperature > 0:
                raise ValueError(f"temperature must be > 0, got {temperature}")
            conf_ts = _softmax_inplace(z / float(temperature)).max(axis=1)   # argmax, hence correct, unchanged
        p = _softmax_inplace(z)
        pred = p.argmax(axis=1)
        self.conf = p[np.arange(lay.n), pred]
        self.correct = (pred == lay.y_sorted).astype(np.float64)
        feats = [_bin_features(self.conf, self.correct)]
        if self.has_ts:
            feats.append(_bin_features(conf_ts, self.correct))
        self.bin_feats = np.concatenate(feats, axis=1)
        self._feats32 = self.bin_feats.astype(np.float32)
        # columns of the present classes in each shot group (None: no class of that group)
        self.group_cols = {g: None for g in GROUPS}
        if group_of_class is not None:
            g_present = np.asarray(group_of_class)[lay.classes]
            for gi, g in enumerate(GROUPS):
                cols = np.flatnonzero(g_present == gi)
                self.group_cols[g] = cols if cols.size else None
        # MSP order, ascending, for AUROC / AURC
        self.score_order = np.argsort(self.conf, kind="stable")
        self.pos_int = self.correct[self.score_order].astype(np.int32)
        self.neg_float = 1.0 - self.correct[self.score_order]
        self.blocks = _tie_starts(self.conf[self.score_order])
        self.harmonic = np.concatenate([[0.0], np.cumsum(1.0 / np.arange(1, lay.n + 1))])

    def metrics(self, W: np.ndarray, want=METRICS) -> dict:
        """Each metric for every row of the (b, N) weight matrix W (how often each image is in the
        test set that row describes), as (b,) float64 arrays; None for a metric that does not exist
        for this run (no class in a group, no temperature)."""
        lay, n, out = self.lay, self.lay.n, {}
        if W.shape[1] != n:
            raise ValueError("weight matrix does not match the run")
        hits = np.add.reduceat(W * self.correct.astype(W.dtype), lay.starts, axis=1).astype(np.float64)
        cls_w = np.add.reduceat(W, lay.starts, axis=1).astype(np.float64)   # = sizes when stratified
        with np.errstate(invalid="ignore", divide="ignore"):
            acc = hits / cls_w
        total = W.sum(axis=1, dtype=np.float64)                 # n for a resample
        out["top1"] = hits.sum(axis=1) / total
        out["balanced_acc"] = np.nanmean(acc, axis=1) if np.isnan(acc).any() else acc.mean(axis=1)
        for g in GROUPS:
            cols = self.group_cols[g]
            out[g] = None if cols is None else np.nanmean(acc[:, cols], axis=1)
        if "ece" in want or "ece_ts" in want:
            feats = self._feats32 if W.dtype == np.float32 else self.bin_feats
            sums = np.abs((W @ feats).astype(np.float64))
            out["ece"] = sums[:, :N_BINS].sum(axis=1) / total
            out["ece_ts"] = sums[:, N_BINS:].sum(axis=1) / total if self.has_ts else None
        if "auroc" in want or "aurc" in want:
            # weights are counts (or ones): integer arithmetic keeps the pair counts exact
            out["auroc"], out["aurc"] = self._ranking(np.take(W, self.score_order, axis=1).astype(np.int32))
        return {k: out[k] for k in want}

    def _ranking(self, Wi: np.ndarray):
        """Weighted AUROC (correct = positive) and AURC of the MSP from integer weights in
        ascending-score order: exactly the plain metrics of the resampled test set, ties included.

        Block t (a run of equal scores) holds P_t correct and Q_t wrong images, m_t = P_t + Q_t,
        K_t = m_1 + ... + m_t. One cumulative sum serves both metrics:

        * AUROC numerator = sum_t P_t (wrong below t + Q_t / 2), and the wrong images below t are
          K_{t-1} minus the correct ones below, whose total over t is the number of pairs of
          correct images in different blocks, (n_pos^2 - sum_t P_t^2) / 2;
        * AURC: by descending score, block t covers ranks k0+1..k (k = N - K_{t-1}, k0 = N - K_t) and
          the expected error count at rank k0 + j is E0 + j r_t with r_t = Q_t / m_t, so
          sum_k err(k)/k summed by parts is sum_t Q_t (H_N - H_k) - r_t k0 (H_k - H_k0) + Q_t with
          harmonic numbers H.
        """
        P = Wi * self.pos_int
        Q = Wi - P
        if self.blocks is not None:
            P = np.add.reduceat(P, self.blocks, axis=1)
            Q = np.add.reduceat(Q, self.blocks, axis=1)
        m = P + Q
        below = np.cumsum(m, axis=1)
        total = below[:, -1].astype(np.int64)
        below -= m                                          # images strictly below each block
        n_pos = P.sum(axis=1, dtype=np.int64)
        n_neg = total - n_pos
        pairs = (n_pos * n_pos - np.einsum("ij,ij->i", P, P, dtype=np.int64)) / 2.0
        num = np.einsum("ij,ij->i", P, below, dtype=np.int64) - pairs
        if self.blocks is not None:
            num = num + 0.5 * np.einsum("ij,ij->i", P, Q, dtype=np.int64)
        with np.errstate(invalid="ignore", divide="ignore"):
            auroc = np.where((n_pos > 0) & (n_neg > 0), num / (n_pos * n_neg), np.nan)

        H = self.harmonic
        k = total[:, None] - below                          # descending rank of each block's last image
        Hk = H[k]
        Hk0 = np.zeros_like(Hk)                             # k0 of block t is k of block t + 1
        Hk0[:, :-1] = Hk[:, 1:]
        if self.blocks is None:
            r = self.neg_float                              # one image per block: r is 0 or 1
        else:
            r = np.divide(Q, m, out=np.zeros(Q.shape), where=m > 0)
        t1 = np.einsum("ij,ij->i", Q, H[total][:, None] - Hk)
        t2 = np.einsum("ij,ij->i", r * (k - m), Hk - Hk0)
        aurc = (t1 - t2 + Q.sum(axis=1)) / total
        return auroc, aurc


# --------------------------------------------------------------------------- public: one run

def _group_of_class(train_counts, groups, num_classes):
    if groups is not None:
        g = np.asarray(groups).ravel()
    elif train_counts is not None:
        g = shot_groups(train_counts)
    else:
        return None
    if g.size != num_classes:
        raise ValueError(f"train_counts/groups has {g.size} entries, logits have {num_classes} classes")
    return g


def _percentile(values: np.ndarray | None, level: float):
    if values is None or np.isnan(values).all():
        return None
    a = (1.0 - level) / 2.0
    lo, hi = np.nanquantile(values, [a, 1.0 - a])
    return [float(lo), float(hi)]


def point_estimates(logits, labels, train_counts=None, *, temperature=None, groups=None) -> dict:
    """The metrics of :func:`bootstrap_cis` on the test set itself (all weights 1), as fractions."""
    y = _labels(labels)
    logits = np.asarray(logits)
    lay = _Layout(y)
    run = _Run(logits, lay, _group_of_class(train_counts, groups, logits.shape[1]), temperature)
    vals = run.metrics(np.ones((1, lay.n)))
    return {k: (None if v is None or np.isnan(v[0]) else float(v[0])) for k, v in vals.items()}


def bootstrap_cis(logits, labels, train_counts=None, *, n_resamples: int = 1000, seed: int = 0,
                  level: float = 0.95, temperature=None, groups=None) -> dict:
    """Stratified percentile-bootstrap interval of each metric in METRICS: {name: [lo, hi]} as
    fractions (accuracies in [0, 1], ECE/AURC as fractions too), None where the metric does not
    exist (a group without classes; ece_ts without a temperature; AUROC with one outcome).

    ``train_counts`` (C,) defines many / medium / few (> 100, 20..100, < 20 training images);
    ``groups`` (C,) of 0/1/2 overrides it. ``temperature`` is the one fitted on validation.
    """
    level = _check_level(level)
    y = _labels(labels)
    logits = np.asarray(logits)
    lay = _Layout(y)
    run = _Run(logits, lay, _group_of_class(train_counts, groups, logits.shape[1]), temperature)
    parts = [run.metrics(resample_counts(pos, lay.n)) for pos in lay.position_chunks(n_resamples, seed)]
    point = run.metrics(np.ones((1, lay.n)))
    out = {}
    for k in METRICS:
        if point[k] is None or np.isnan(point[k][0]):
            out[k] = None
        else:
            out[k] = _percentile(np.concatenate([p[k] for p in parts]), level)
    return out


def summary_fields(logits, labels, train_counts=None, *, n_resamples: int = 1000, seed: int = 0,
                   level: float = 0.95, temperature=None, groups=None) -> dict:
    """Flat fields for summary.json: ``<metric>_ci: [lo, hi]`` for each metric, plus how they were
    made (``ci_level``, ``ci_resamples``, ``ci_seed``, ``ci_method``)."""
    cis = bootstrap_cis(logits, labels, train_counts, n_resamples=n_resamples, seed=seed, level=level,
                        temperature=temperature, groups=groups)
    out = {f"{k}_ci": v for k, v in cis.items()}
    out.update(ci_level=level, ci_resamples=n_resamples, ci_seed=seed,
               ci_method="percentile bootstrap over test images, stratified by class")
    return out


# --------------------------------------------------------------------------- seeds and formatting

def seed_summary(values, level: float = 0.95, percent: bool = True) -> dict:
    """Mean, sample std (ddof=1) and t-interval mean +- t_{n-1} std / sqrt(n) over seeds.

    With one seed there is no spread to report: std and ci are None and the text says so, rather
    than showing +- 0.
    """
    level = _check_level(level)
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size == 0:
        raise ValueError("seed_summary needs at least one value")
    if not np.isfinite(v).all():
        raise ValueError("seed_summary got a non-finite value")
    n, mean = int(v.size), float(v.mean())
    if n == 1:
        return dict(n=1, mean=mean, std=None, ci=None, text="n = 1 (one seed: no spread)")
    std = float(v.std(ddof=1))
    # equal values (a few-class accuracy of 0 in every seed): scipy's interval of scale 0 is nan
    lo, hi = (mean, mean) if std == 0 else stats.t.interval(level, df=n - 1, loc=mean, scale=std / math.sqrt(n))
    s = 100.0 if percent else 1.0
    text = (f"{mean * s:.1f} ± {std * s:.1f} (n = {n} seeds, {level:.0%} t-interval "
            f"[{lo * s:.1f}, {hi * s:.1f}])")
    return dict(n=n, mean=mean, std=std, ci=[float(lo), float(hi)], text=text)


def format_ci(value, ci, percent: bool = True, digits: int = 1) -> str:
    """'65.9 [64.8, 67.0]' (fractions shown as percent); 'n/a' for a missing value."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    s = 100.0 if percent else 1.0
    text = f"{value * s:.{digits}f}"
    if ci is not None:
        text += f" [{ci[0] * s:.{digits}f}, {ci[1] * s:.{digits}f}]"
    return text
