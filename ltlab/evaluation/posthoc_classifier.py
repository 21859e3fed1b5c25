"""Post-hoc classifiers on frozen features (Decoupling, Kang et al., ICLR 2020): pure numpy.

tau-normalisation rescales the stage-one classifier's weight rows; NCM replaces the classifier
by nearest class means. Both act on saved features, so they can be re-evaluated from a run's
predictions/*.npz without the model.
"""
from __future__ import annotations

import numpy as np

from ltlab.evaluation.metrics import balanced_accuracy, top1

TAU_GRID = np.round(np.arange(0, 2.01, 0.1), 1)        # 0, 0.1, ..., 2.0 as in tau_norm.py
NCM_VARIANTS = ("un", "l2n", "cl2n")
TAU_METRICS = ("balanced accuracy", "top1")
_EPS = 1e-12


def tau_norm_weights(W, tau: float) -> np.ndarray:
    """w_c / ||w_c||^tau for each class row of W (C, d) (Decoupling eq. 3, tau_norm.py's pnorm).

    tau = 0 returns W unchanged; tau = 1 gives unit rows (a cosine-like classifier up to the
    feature norm). A zero row stays zero.
    """
    W = np.asarray(W, dtype=np.float64)
    if W.ndim != 2:
        raise ValueError(f"classifier weight of shape {W.shape}: expected (C, d)")
    if tau == 0:
        return W.copy()
    norms = np.linalg.norm(W, axis=1, keepdims=True)
    return W / np.maximum(norms, _EPS) ** tau


def tau_norm_logits(features, W, tau: float) -> np.ndarray:
    """features (N, d) @ tau_norm_weights(W, tau).T: the bias is dropped, as in Decoupling's
    tau_norm.py, so tau = 0 is the plain classifier *without* its bias (features @ W.T)."""
    f = np.asarray(features, dtype=np.float64)
    return f @ tau_norm_weights(W, tau).T


def choose_tau(val_features, val_labels, W, taus=TAU_GRID, metric: str = "balanced accuracy"):
    """The tau of ``taus`` with the best ``metric`` on a validation split.

    Only the validation features and labels are passed in: the test set cannot take part.
    Ties go to the smallest tau (closest to the plain classifier).
    Returns (tau, taus, scores), scores[i] being the metric at taus[i].
    """
    if metric not in TAU_METRICS:
        raise ValueError(f"tau metric {metric!r}: expected one of {', '.join(TAU_METRICS)}")
    y = np.asarray(val_labels, dtype=np.int64).ravel()
    taus = np.asarray(taus, dtype=np.float64).ravel()
    if y.size == 0 or taus.size == 0:
        raise ValueError("choose_tau needs a non-empty validation split and tau grid")
    W = np.asarray(W, dtype=np.float64)
    scores = []
    for tau in taus:
        pred = tau_norm_logits(val_features, W, tau).argmax(1)
        scores.append(balanced_accuracy(pred, y, W.shape[0]) if metric == "balanced accuracy" else top1(pred, y))
    scores = np.asarray(scores, dtype=np.float64)
    return float(taus[int(np.argmax(scores))]), taus, scores


def _l2n(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), _EPS)


def ncm_transform(features, mean, variant: str = "cl2n") -> np.ndarray:
    """Feature map applied before the means: 'un' raw, 'l2n' L2-normalised, 'cl2n' centred by the
    mean training feature, then L2-normalised (Decoupling's KNNClassifier)."""
    if variant not in NCM_VARIANTS:
        raise ValueError(f"NCM variant {variant!r}: expected one of {', '.join(NCM_VARIANTS)}")
    f = np.asarray(features, dtype=np.float64)
    if variant == "cl2n":
        return _l2n(f - np.asarray(mean, dtype=np.float64))
    if variant == "l2n":
        return _l2n(f)
    return f


def ncm_centroids(train_features, train_labels, C: int, variant: str = "cl2n"):
    """Class means of the transformed training features (not re-normalised, as in Decoupling).

    Returns (centroids (C, d), mean (d,)): the mean training feature is what 'cl2n' centres by,
    and ncm_logits needs it. Every class must have at least one training feature.
    """
    f = np.asarray(train_features, dtype=np.float64)
    y = np.asarray(train_labels, dtype=np.int64).ravel()
    mean = f.mean(axis=0)
    g = ncm_transform(f, mean, variant)
    counts = np.bincount(y, minlength=C)[:C]
    if (counts == 0).any() or y.max() >= C:
        raise ValueError(f"NCM: classes {np.flatnonzero(counts == 0).tolist()} have no training feature")
    sums = np.zeros((C, f.shape[1]))
    np.add.at(sums, y, g)
    return sums / counts[:, None], mean


def ncm_logits(features, centroids, mean, variant: str = "cl2n") -> np.ndarray:
    """-||phi(x) - mu_c||^2: minus the squared Euclidean distance to each class centroid."""
    g = ncm_transform(features, mean, variant)
    mu = np.asarray(centroids, dtype=np.float64)
    d2 = (g * g).sum(1, keepdims=True) - 2.0 * g @ mu.T + (mu * mu).sum(1)[None, :]
    return -np.maximum(d2, 0.0)
