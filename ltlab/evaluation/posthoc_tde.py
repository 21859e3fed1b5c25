"""Causal-TDE inference from saved arrays (pure numpy), so alpha can change without retraining.

Tang et al., NeurIPS 2020 (see ltlab.models.causal_norm for the formulas). A ``tde`` run
saves, in predictions/<split>.npz, the features and the arrays ``tde_weight`` (C, d),
``tde_direction`` (d,), ``tde_alpha``, ``tde_tau``, ``tde_gamma`` and ``tde_heads``; then

    z = tde_logits(p["features"], p["tde_weight"], p["tde_direction"], alpha,
                   float(p["tde_tau"]), float(p["tde_gamma"]), int(p["tde_heads"]))

reproduces the saved logits (up to fp32 rounding) for alpha = p["tde_alpha"], and gives the
de-confounded logits for alpha = 0.
"""
from __future__ import annotations

import numpy as np

from ltlab.evaluation.metrics import balanced_accuracy

NORM_EPS = 1e-12   # as in ltlab.models.causal_norm: a zero feature chunk stays zero, not NaN


def _chunk_unit(x: np.ndarray, heads: int) -> np.ndarray:
    xs = x.reshape(x.shape[0], heads, -1)
    return xs / np.maximum(np.linalg.norm(xs, axis=-1, keepdims=True), NORM_EPS)


def tde_logits(features, weight, direction, alpha: float, tau: float = 16.0, gamma: float = 1 / 32,
               heads: int = 2) -> np.ndarray:
    """TDE logits (N, C), float64:
    (tau/K) sum_k < x_k/|x_k| - alpha cos(x_k, d_k) d_k/|d_k| , w_ck/(|w_ck| + gamma) >."""
    x = np.asarray(features, dtype=np.float64)
    w = np.asarray(weight, dtype=np.float64)
    d = np.asarray(direction, dtype=np.float64).ravel()
    if x.ndim != 2 or w.ndim != 2 or x.shape[1] != w.shape[1] or d.shape[0] != x.shape[1]:
        raise ValueError(f"shapes features {x.shape}, weight {w.shape}, direction {d.shape}: expected "
                         "(N, d), (C, d), (d,)")
    if x.shape[1] % heads:
        raise ValueError(f"feature size {x.shape[1]} is not divisible by heads = {heads}")
    wk = w.reshape(w.shape[0], heads, -1)
    wn = wk / (np.linalg.norm(wk, axis=-1, keepdims=True) + gamma)          # (C, K, h)
    xn = _chunk_unit(x, heads)                                                # (N, K, h)
    dn = _chunk_unit(d[None], heads)[0]                                       # (K, h)
    cos = (xn * dn).sum(-1)                                                   # (N, K)
    scale = tau / heads
    factual = scale * np.einsum("nkh,ckh->nc", xn, wn)
    effect = scale * cos @ np.einsum("kh,ckh->kc", dn, wn)
    return factual - alpha * effect


def from_predictions(pred: dict, alpha: float | None = None) -> np.ndarray:
    """TDE logits from a loaded predictions dict (ltlab.evaluation.run_dir.Run.predictions()); alpha
    defaults to the run's own."""
    a = float(pred["tde_alpha"]) if alpha is None else float(alpha)
    return tde_logits(pred["features"], pred["tde_weight"], pred["tde_direction"], a,
                      float(pred["tde_tau"]), float(pred["tde_gamma"]), int(pred["tde_heads"]))


def choose_alpha(pred_val: dict, alphas=None) -> tuple[float, dict]:
    """Alpha maximising balanced accuracy on a validation split's predictions (never the test
    split). Ties go to the smallest alpha. Returns (alpha, {alpha: balanced accuracy})."""

    alphas = np.round(np.linspace(0.0, 3.0, 31), 6) if alphas is None else np.asarray(alphas, dtype=np.float64)
    labels = np.asarray(pred_val["labels"])
    c = int(np.asarray(pred_val["tde_weight"]).shape[0])
    scores = {float(a): float(balanced_accuracy(from_predictions(pred_val, a).argmax(1), labels, c))
              for a in alphas}
    best = max(scores.items(), key=lambda kv: (kv[1], -kv[0]))[0]
    return best, scores
