"""Accuracy on the target (e.g. uniform) test distribution from a labelled sample drawn with a
known label shift, such as a forwardR test subset: importance weighting, its self-normalised
form and a doubly robust estimator, each with a bootstrap interval.

Setting (label shift; Saerens et al. 2002, Lipton et al. 2018, Garg et al. 2020). The sample
S = {(x_i, y_i)}, i = 1..n, is drawn from p_s(x, y) = s(y) p(x | y); the target is
p_t(x, y) = t(y) p(x | y) with the same class-conditionals. With w(k) = t(k) / s(k) (finite
wherever t(k) > 0: the sample must be able to contain every target class), and c = 1[h(x) = y],

    per-class accuracy  a_k = P(h(x) = k | y = k)   is the same under s and t, and
    target accuracy     A_t = sum_k t(k) a_k = E_s[w(y) c]                     (1)

Under a uniform t, A_t is the balanced accuracy; a shot group (many / medium / few) is the same
with t restricted to the group's classes and renormalised.

Estimators (each computed on the sample, and on every bootstrap resample of it):

* ``naive``: the sample's plain accuracy, mean(c). Biased towards the classes s over-weights;
  shown as the number one would report without correction.
* ``ipw``: (1/n) sum_i w(y_i) c_i, the sample mean of (1) (Horvitz & Thompson 1952). Unbiased
  when s is the distribution the labels were drawn from.
* ``snipw``: sum_i w(y_i) c_i / sum_i w(y_i), self-normalised (Hesterberg 1995): consistent
  under the same condition, always in [0, 1], lower variance when the weights are uneven.
* ``dr``: augmented IPW (Robins, Rotnitzky & Zhao 1994). Under label shift the weights are a
  function of y, so the outcome model that pairs with them is a model of E[c | y = k] = a_k,
  written mu_k. For any mu and any weight vector w',

      A_dr = sum_k t(k) mu_k + E_s[w'(y) (c - mu_y)]                          (2)

  equals A_t if w' = w (the residual term removes mu's error: E_s[w(y)(c - mu_y)] =
  sum_k t(k)(a_k - mu_k)), and also if mu = a whatever w' is (each class's residual then has
  mean 0). That is the double robustness: right if the prior is right *or* the outcome model is.
  The first term needs no weights because the target prior t is known.

  The outcome model comes from the calibrated confidence, without labels: with
  q(. | x) = softmax(logits / T) and m(x) = max_k q(k | x), the confidence in the predicted
  class h(x), if q is calibrated for the sample's distribution (q = p_s(y | x)) then
  E_s[1(h = k) m] = P_s(h = k, y = k) and E_s[q(k | x)] = s(k), so

      mu_k = sum_i 1(h(x_i) = k) m(x_i) / sum_i q(k | x_i)  ->  a_k.             (3)

  It uses the sample's logits only (not its labels, not s), so it is an independent second
  source for a_k. The estimate is (2) with the sample mean for E_s and mu clipped to [0, 1].

What each assumes, exactly:

* all: label shift (p(x | y) shared by sample and target) and support (s(k) > 0 wherever
  t(k) > 0; a ValueError otherwise).
* ipw / snipw: ``sample_prior`` is the distribution the sample's labels were drawn from.
* with ``em_calibration`` instead of a prior: the EM estimate of s (from the sample's logits
  alone) is consistent only if the calibration is right for the source the logits encode.
* dr: that, or q calibrated on the sample's distribution (3). Temperature scaling fitted on a
  validation split calibrates q for the validation prior; when that prior differs from s the
  model term is biased and dr leans on the weights (it stays consistent if they are right).
* Where ``sample_prior`` equals the sample's class frequencies (n_k / n; the forwardR subsets
  with their design prior), ipw = snipw = dr = sum_k t(k) * (sample accuracy of class k), the
  post-stratified estimate: with every label observed there is nothing for the model to add.
  They differ when the prior is given independently (a known design or an estimate, e.g. BBSE
  or EM) and the counts deviate from it, and for a target class absent from the sample: ipw
  counts it as 0, snipw drops it, dr uses mu_k.

Intervals: percentile bootstrap (Efron & Tibshirani 1993, ch. 13). ``stratified=True`` keeps
each class's count (right when the counts are fixed by design, as in the shift subsets);
``stratified=False`` resamples images i.i.d. (right when the labels were drawn at random from s,
so the class counts are part of the noise).
"""
from __future__ import annotations

import numpy as np

from ltlab.evaluation import calibrated_em as CE
from ltlab.evaluation import prior_intervals as PI
from ltlab.evaluation.intervals import (
    GROUPS,
    _check_level,
    _Layout,
    _percentile,
    _softmax_inplace,
    resample_counts,
    shot_groups,
)

ESTIMATORS = ("naive", "ipw", "snipw", "dr")
MAX_REFITS = 200     # distinct calibrations refitted on val resamples (estimate_target_accuracy)


def _prior(p, num_classes: int, name: str) -> np.ndarray:
    v = np.asarray(p, dtype=np.float64).ravel()
    if v.size != num_classes:
        raise ValueError(f"{name} has {v.size} entries, logits have {num_classes} classes")
    if (v < 0).any() or not np.isfinite(v).all() or v.sum() <= 0:
        raise ValueError(f"{name} must be finite, >= 0 and not all 0")
    return v / v.sum()


class _Sample:
    """The sample's per-image quantities in class-sorted order and the per-resample class sums."""

    def __init__(self, logits, labels, temperature: float):
        z = np.asarray(logits, dtype=np.float64)
        y = np.asarray(labels).astype(np.int64).ravel()
        if z.ndim != 2 or z.shape[0] != y.size:
            raise ValueError(f"logits {z.shape} and labels ({y.size},) do not match")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if y.size and (y.min() < 0 or y.max() >= z.shape[1]):
            raise ValueError("labels out of range of the logit columns")
        self.lay = _Layout(y)
        self.C = z.shape[1]
        z = z[self.lay.order]
        q = _softmax_inplace(z / float(temperature))
        pred = q.argmax(axis=1)
        self.correct = (pred == self.lay.y_sorted).astype(np.float64)
        self.q = q
        conf = q[np.arange(y.size), pred]
        # sum by predicted class of m(x): images sorted by prediction, one reduceat
        self.by_pred = np.argsort(pred, kind="stable")
        self.conf_by_pred = conf[self.by_pred]
        self.pred_classes, self.pred_starts = np.unique(pred[self.by_pred], return_index=True)

    def class_sums(self, W: np.ndarray):
        """(b, C) arrays per resample: correct images H and images N of each true class, sum of
        confidence over images predicted as each class P, and sum of q(k | x) Q."""
        lay, b = self.lay, W.shape[0]
        H = np.zeros((b, self.C))
        N = np.zeros((b, self.C))
        P = np.zeros((b, self.C))
        H[:, lay.classes] = np.add.reduceat(W * self.correct, lay.starts, axis=1)
        N[:, lay.classes] = np.add.reduceat(W, lay.starts, axis=1)
        Wp = np.take(W, self.by_pred, axis=1) * self.conf_by_pred
        P[:, self.pred_classes] = np.add.reduceat(Wp, self.pred_starts, axis=1)
        Q = W @ self.q
        return H, N, P, Q


def _estimates(H, N, P, Q, t_g: np.ndarray, s: np.ndarray, in_g: np.ndarray) -> dict:
    """Each estimator, per resample ((b,) arrays), for one target prior t_g and the sample prior s:
    (C,), or (b, C) when it is re-estimated on each resample."""
    w_g = np.divide(t_g, s, out=np.zeros(np.broadcast_shapes(t_g.shape, s.shape)), where=s > 0)
    n = N.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        naive = H[:, in_g].sum(axis=1) / N[:, in_g].sum(axis=1)
        hw = (H * w_g).sum(axis=1)
        mu = np.clip(np.divide(P, Q, out=np.zeros_like(P), where=Q > 0), 0.0, 1.0)   # (3)
        dr = mu @ t_g + (hw - (mu * N * w_g).sum(axis=1)) / n                         # (2)
        return dict(naive=naive, ipw=hw / n, snipw=hw / (N * w_g).sum(axis=1), dr=dr)


def estimate_target_accuracy(logits, labels, sample_prior, target_prior=None, temperature: float = 1.0,
                             train_counts=None, n_resamples: int = 1000, seed: int = 0, level: float = 0.95,
                             stratified: bool = True, em_calibration=None, val_logits=None,
                             val_labels=None) -> list[dict]:
    """Target-distribution accuracy (balanced accuracy under a uniform target) and, with
    ``train_counts``, the many / medium / few accuracies, by each of naive, ipw, snipw and dr.

    ``sample_prior`` (C,): the class distribution the sample was drawn from (known or estimated;
    normalised here); ``"empirical"``: the sample's own label frequencies n_k / n, the maximum-
    likelihood estimate of that distribution when the labels were drawn at random from it, taken
    again on every resample (then ipw = snipw = dr = the post-stratified estimate
    sum_k t(k) * (sample accuracy of class k): the module docstring's last point).
    ``target_prior`` (C,): default uniform. ``temperature``: fitted on
    validation; it only affects dr's outcome model. Returns rows
    {estimator, target, estimate, ci_lo, ci_hi} (fractions; ``pandas.DataFrame(rows)`` for a
    table); target is "balanced_acc" under a uniform target, "target_acc" otherwise, or a group.
    A group with no class, or no target mass, is left out.

    ``em_calibration`` (a calibrated_em.Calibration; then ``sample_prior`` is None): the sample
    prior is not known but estimated by EM from the sample's calibrated posteriors, without its
    labels (calibrated_em.estimate_prior), and estimated again on every resample, so the interval
    carries the estimate's noise (held fixed, it covered the truth in only about half of the
    backward50 samples of scripts/coverage_real.py). With ``val_logits`` / ``val_labels`` (the
    split the calibration was fitted on), the calibration's method is also refitted on stratified
    val resamples (``MAX_REFITS`` of them, cycled over the resamples), so the interval carries
    the calibration's noise too. It does not carry a bias of the estimated prior: on backward50
    samples (scripts/coverage_real.py, setting 5) these intervals still covered in only 80-87% of
    draws, against 95-96% on forward50 (docs/results.md).
    """
    level = _check_level(level)
    smp = _Sample(logits, labels, temperature)
    C = smp.C
    prior_of = None
    if em_calibration is None and (val_logits is not None or val_labels is not None):
        raise ValueError("val_logits / val_labels refit the EM calibration: give em_calibration too")
    if em_calibration is not None:
        if sample_prior is not None:
            raise ValueError("give sample_prior (known) or em_calibration (estimated), not both")
        post = em_calibration.probs(np.asarray(logits)[smp.lay.order])
        s = CE.estimate_prior(np.asarray(logits), em_calibration).prior

        # at most MAX_REFITS calibrations, resample j taking number j mod MAX_REFITS: a BCTS fit
        # costs 0.1-0.3 s on 200 val images, and 200 draws of the calibration already trace its spread
        cals = PI.val_refits(em_calibration, val_logits, val_labels, min(n_resamples, MAX_REFITS), seed + 1)
        z_sorted = np.asarray(logits, dtype=np.float64)[smp.lay.order]
        block = max(1, PI.BLOCK_ELEMENTS // (z_sorted.size or 1))

        def prior_of(W, first, N):   # every resample's EM estimate, started from the sample's
            if cals is None:
                return PI._em_block(post, W, s, em_calibration.source_prior, CE.EM_MAX_ITER, 1e-6)[0]
            out = np.empty((W.shape[0], C))
            for a in range(0, W.shape[0], block):
                rows = range(a, min(a + block, W.shape[0]))
                use = [cals[(first + j) % len(cals)] for j in rows]
                out[a:rows.stop] = PI.em_each_calibration(use, z_sorted, W[a:rows.stop], s)[0]
            return out
    elif isinstance(sample_prior, str):
        if sample_prior != "empirical":
            raise ValueError(f"sample_prior {sample_prior!r}: a (C,) prior, None with em_calibration, or 'empirical'")
        s = np.bincount(np.asarray(labels).astype(np.int64).ravel(), minlength=C) / smp.lay.n

        def prior_of(W, first, N):   # each resample's own label frequencies
            return N / N.sum(axis=1, keepdims=True)
    else:
        s = _prior(sample_prior, C, "sample_prior")
    t = np.full(C, 1.0 / C) if target_prior is None else _prior(target_prior, C, "target_prior")
    if ((t > 0) & (s == 0)).any():
        bad = np.flatnonzero((t > 0) & (s == 0))[:10].tolist()
        raise ValueError(f"sample_prior is 0 for target classes {bad}: no reweighting can recover them")
    if (s[smp.lay.classes] == 0).any():
        raise ValueError("the sample contains classes whose sample_prior is 0")

    overall = "balanced_acc" if np.allclose(t, 1.0 / C) else "target_acc"
    targets = {overall: np.ones(C, dtype=bool)}
    if train_counts is not None:
        g = shot_groups(train_counts)
        if g.size != C:
            raise ValueError(f"train_counts has {g.size} entries, logits have {C} classes")
        for gi, name in enumerate(GROUPS):
            targets[name] = g == gi
    plans = {}
    for name, in_g in targets.items():
        if not in_g.any() or t[in_g].sum() == 0:
            continue
        plans[name] = (np.where(in_g, t, 0.0) / t[in_g].sum(), in_g)

    n = smp.lay.n
    point = {name: _estimates(*smp.class_sums(np.ones((1, n))), t_g, s, in_g) for name, (t_g, in_g) in plans.items()}
    boot = {name: {e: [] for e in ESTIMATORS} for name in plans}
    done = 0
    for pos in smp.lay.position_chunks(n_resamples, seed, stratified=stratified):
        W = resample_counts(pos, n, dtype=np.float64)
        sums = smp.class_sums(W)
        s_b = s if prior_of is None else prior_of(W, done, sums[1])
        done += W.shape[0]
        for name, (t_g, in_g) in plans.items():
            for e, v in _estimates(*sums, t_g, s_b, in_g).items():
                boot[name][e].append(v)

    rows = []
    for name in plans:
        for e in ESTIMATORS:
            est = float(point[name][e][0])
            # clipped to [0, 1], where the accuracy lies: an estimated prior near 0 for a class gives
            # a few resamples enormous weights (ipw, dr), and clipping cannot exclude the truth
            ci = None if np.isnan(est) else _percentile(np.concatenate(boot[name][e]), level)
            ci = None if ci is None else [min(max(v, 0.0), 1.0) for v in ci]
            rows.append(dict(estimator=e, target=name, estimate=None if np.isnan(est) else est,
                             ci_lo=None if ci is None else ci[0], ci_hi=None if ci is None else ci[1]))
    return rows


def draw_shifted_sample(labels, sample_prior, n: int, seed: int = 0) -> np.ndarray:
    """Indices of ``n`` images drawn i.i.d. from a label-shifted copy of a labelled set: a class k
    with probability ``sample_prior[k]``, then one of that class's images uniformly, with
    replacement. The class-conditionals are the set's own, so label shift holds exactly and the
    set's per-class accuracies are the truth the estimators above aim at (the set taken as the
    population); the class counts are random (resample with ``stratified=False``)."""
    y = np.asarray(labels).astype(np.int64).ravel()
    C = int(max(y.max() + 1, np.size(sample_prior)))
    s = _prior(sample_prior, C, "sample_prior")
    have = np.bincount(y, minlength=C)
    if ((s > 0) & (have == 0)).any():
        raise ValueError(f"sample_prior puts mass on classes {np.flatnonzero((s > 0) & (have == 0))[:10].tolist()} "
                         "that have no image to draw")
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(int(n), s)
    order = np.argsort(y, kind="stable")
    starts = np.concatenate([[0], np.cumsum(have)[:-1]])
    parts = [order[starts[k] + rng.integers(0, have[k], size=counts[k])] for k in range(C) if counts[k]]
    return rng.permutation(np.concatenate(parts)) if parts else np.empty(0, dtype=np.int64)
