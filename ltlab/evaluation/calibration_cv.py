"""Which calibration EM should work on, chosen per run by cross-validated NLL on its val split.

Alexandari et al. (ICML 2020) recommend BCTS with thousands of held-out images; a CIFAR-LT run
has 20 a class, and C free biases fitted on them can cost more than they correct (on the archived
CE run, EM's error was larger with BCTS than with temperature scaling alone). Rather than fixing
one calibration, ``auto`` lets the run's own val split choose among

* ``ts``: T only (importance-weighted NLL, source prior the model prior pi);
* ``bcts``: T and C free biases (source prior the val prior);
* ``bcts_l2``: T and C biases shrunk to 0 by a Gaussian prior (calibration_fit.fit_bcts_l2),

by stratified K-fold cross-validation (Stone 1974; stratified, Kohavi 1995), repeated over
``n_repeats`` seeded splits to lower the variance of the estimate.

The score. EM uses a calibration through one model: the calibrated posterior moved to a new
prior q, p_q(y | x) ∝ p(y | x) q_y / s_y (s the calibration's source prior; Saerens et al. 2002).
Each candidate is scored by exactly that model on the held-out fold with q = the val prior:
-log p_qval(y | x), averaged over every val image (each is held out once per repeat). The three
candidates have different source priors (pi for ts and bcts_l2, the val prior for bcts), so
their plain NLLs are not comparable; after the move they all predict val labels and are.
The val prior used is the whole split's class frequencies (fixed by design for a balanced val
split; stratified folds reproduce it up to rounding), so a class absent from a fitting fold is
still scored.

The winner has the lowest mean held-out NLL (ties, to 1e-12, go to the simpler candidate, in
the order ts, bcts_l2, bcts) and is refitted on the whole val split. Everything is recorded in
``Calibration.info``: cv_nll and cv_se (standard error of each mean over images) per candidate,
n_folds, n_repeats, seed, n_val, and which candidates were excluded and why.
"""
from __future__ import annotations

import numpy as np

from ltlab.evaluation import calibration_fit as CF
from ltlab.evaluation import metrics as M
from ltlab.evaluation import posthoc

CANDIDATES = ("ts", "bcts_l2", "bcts")   # simplest first: the order ties are broken in
N_FOLDS = 5
N_REPEATS = 4


def stratified_folds(labels, n_folds: int = N_FOLDS, seed: int = 0) -> np.ndarray:
    """Fold id (0..n_folds-1) of each image: each class's images in a seeded random order are
    dealt to the folds in turn, the dealing continuing from class to class, so each fold gets
    every class's count to within one and the fold sizes differ by at most one."""
    y = np.asarray(labels).astype(np.int64).ravel()
    if n_folds < 2:
        raise ValueError(f"n_folds must be >= 2, got {n_folds}")
    rng = np.random.default_rng(seed)
    fold = np.empty(y.size, dtype=np.int64)
    dealt = 0
    for k in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == k))
        fold[idx] = (dealt + np.arange(idx.size)) % n_folds
        dealt += idx.size
    return fold


def heldout_nll(calibration: CF.Calibration, logits, labels, val_prior) -> np.ndarray:
    """Per-image -log p_q(y | x): the calibrated posterior moved from its source prior to
    ``val_prior`` (the prior EM's model would use if it knew the val prior)."""
    f = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels).astype(np.int64).ravel()
    z = f / calibration.temperature + calibration.bias
    z = z + posthoc._log_prior(val_prior) - posthoc._log_prior(calibration.source_prior)
    return -M.log_softmax(z)[np.arange(y.size), y]


def _fit_on(method, f, y, model_prior, val_prior, bias_sigma) -> CF.Calibration:
    if method == "bcts_l2":
        # the fold's biases move the posteriors to the split's val prior, as in the score
        pi = posthoc.class_prior(model_prior)
        t, b, nll = CF.fit_bcts_l2(f, y, pi, bias_sigma, val_prior=val_prior)
        return CF.Calibration("bcts_l2", t, b, pi, nll)
    return CF.fit_method(method, f, y, model_prior)


def fold_prior(model_prior, source_fit, f, y) -> np.ndarray:
    """The model prior a fit on these val images uses: ``model_prior``, or where it was itself
    fitted on the val split (``source_fit``: the training counts of pi^gamma,
    calibration_fit.fit_prior_power), pi^gamma fitted again on these images alone, so that the
    held-out fold has no say in it."""
    if source_fit is None:
        return model_prior
    counts = np.asarray(source_fit, dtype=np.float64).ravel()
    return np.maximum(counts, 1.0) ** CF.fit_prior_power(f, y, counts)[1]


def cv_nll(val_logits, val_labels, model_prior, candidates=CANDIDATES, n_folds: int = N_FOLDS,
           n_repeats: int = N_REPEATS, seed: int = 0, bias_sigma: float = CF.BIAS_SIGMA,
           source_fit=None) -> dict:
    """{candidate: (n_repeats, N) held-out NLL of every val image in every repeat}; repeat r uses
    the folds of seed ``seed + r``. ``source_fit``: see :func:`fold_prior`."""
    f = np.asarray(val_logits, dtype=np.float64)
    y = np.asarray(val_labels).astype(np.int64).ravel()
    q_val = np.bincount(y, minlength=f.shape[1]) / y.size
    out = {m: np.empty((n_repeats, y.size)) for m in candidates}
    for r in range(n_repeats):
        fold = stratified_folds(y, n_folds, seed + r)
        for k in range(n_folds):
            test = fold == k
            fit = ~test
            prior = fold_prior(model_prior, source_fit, f[fit], y[fit])
            for m in candidates:
                cal = _fit_on(m, f[fit], y[fit], prior, q_val, bias_sigma)
                out[m][r, test] = heldout_nll(cal, f[test], y[test], q_val)
    return out


def choose_calibration(val_logits, val_labels, model_prior, candidates=CANDIDATES, n_folds: int = N_FOLDS,
                       n_repeats: int = N_REPEATS, seed: int = 0, bias_sigma: float = CF.BIAS_SIGMA,
                       source_fit=None) -> CF.Calibration:
    """The candidate with the lowest cross-validated NLL (module docstring), refitted on the whole
    val split, with the evidence in ``info``. ``model_prior``: the prior the raw logits encode
    (shift.source_prior, shift.calibrated_source_prior). ``source_fit``: the training counts, when
    ``model_prior`` is the val fit's pi^gamma; each fold then fits gamma on its own images
    (:func:`fold_prior`), as the folds refit everything else.

    Folds: ``n_folds``, fewer where a class has fewer val images (at least 2). ``bcts`` is left
    out (and the reason recorded) when a class has fewer than 2 val images, since a fitting fold
    would then miss it and BCTS cannot fit a class it never sees.
    """
    if val_logits is None or val_labels is None:
        raise ValueError("calibration 'auto' needs a validation split (logits and labels); "
                         "pass calibration 'none' to run EM on the uncalibrated logits")
    if model_prior is None:
        raise ValueError("calibration 'auto' needs the model prior (the prior the logits encode)")
    f = np.asarray(val_logits, dtype=np.float64)
    y = np.asarray(val_labels).astype(np.int64).ravel()
    if f.ndim != 2 or f.shape[0] != y.size:
        raise ValueError(f"val logits {f.shape} and labels ({y.size},) do not match")
    unknown = [m for m in candidates if m not in CF.FITTED]
    if unknown or not candidates:
        raise ValueError(f"candidates {unknown or '()'}: choose among {', '.join(CF.FITTED)}")
    counts = np.bincount(y, minlength=f.shape[1])
    fewest = int(counts.min())
    excluded = []
    if fewest < 2 and "bcts" in candidates:
        short = np.flatnonzero(counts < 2)[:10].tolist()
        excluded.append(f"bcts left out: classes {short} have fewer than 2 val images")
        candidates = tuple(m for m in candidates if m != "bcts")
    if not candidates:
        raise ValueError(excluded[0])
    present_min = int(counts[counts > 0].min())
    k = min(n_folds, max(present_min, 2))
    if y.size < 2 * k:
        raise ValueError(f"{y.size} val images are too few to cross-validate a calibration")
    order = [m for m in CANDIDATES if m in candidates]
    losses = cv_nll(f, y, model_prior, order, k, n_repeats, seed, bias_sigma, source_fit)
    mean = {m: float(v.mean()) for m, v in losses.items()}
    # the SE of a mean over images: the repeats reuse the same images, so average them first
    se = {m: float(v.mean(axis=0).std(ddof=1) / np.sqrt(y.size)) for m, v in losses.items()}
    best = min(order, key=lambda m: (round(mean[m], 12), order.index(m)))
    chosen = CF.fit_method(best, f, y, model_prior, bias_sigma)
    info = dict(chosen.info, selected_by="cross-validated NLL", cv_nll=mean, cv_se=se, n_folds=k,
                n_repeats=n_repeats, seed=seed, n_val=int(y.size), excluded=excluded)
    if "bcts_l2" in order:
        info["bias_sigma"] = float(bias_sigma)
    return CF.Calibration(chosen.method, chosen.temperature, chosen.bias, chosen.source_prior,
                          chosen.val_nll, info)
