"""What every ltlab figure shares: array conversion, a constrained-layout Figure built
without pyplot (Agg-safe; nothing global left open), the group colours, the shot-group
boundaries (many > 100, medium 20-100, few < 20 training images; ``energy_calibration.md`` §3)
and the confidence scores, oriented higher = more likely correct (:mod:`ltlab.evaluation.scores`)."""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from matplotlib.figure import Figure

from ltlab.evaluation import scores as _scores

GROUP_COLORS = ("tab:blue", "tab:orange", "tab:red")   # many, medium, few
OUTCOME_COLORS = {"correct": "tab:green", "incorrect": "tab:red"}
SCORE_LABELS = {
    "msp": "MSP",
    "energy": "−E(x) (free energy)",
    "residual_energy": "residual energy BE(x, ŷ)",
    "max_logit": "max logit",
    "neg_entropy": "−entropy",
}
FEW_MEDIUM, MEDIUM_MANY = 20, 100   # shot-group boundaries drawn as vertical lines


def _np(x, dtype=None) -> np.ndarray:
    """numpy view of an array-like (also detaches torch tensors)."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def _figure(figsize) -> Figure:
    return Figure(figsize=figsize, layout="constrained")


def _root_figure(ax) -> Figure:
    try:
        return ax.get_figure(root=True)
    except TypeError:   # matplotlib < 3.10
        return ax.figure


def _score(name: str, logits: np.ndarray, T: float) -> np.ndarray:
    """Evaluate the confidence score ``name`` from :data:`ltlab.evaluation.scores.SCORES`."""
    table = _scores.SCORES
    fn = table[name] if isinstance(table, Mapping) else getattr(_scores, name)
    return _np(fn(logits, T=T), float).reshape(-1)


def _correct(logits_or_probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    return _np(logits_or_probs).argmax(axis=1) == _np(labels)


def _mark_shot_boundaries(ax, label_regions: bool = True) -> None:
    """Dashed vertical lines at 20 and 100 training images (log-x axes) with region labels."""
    for x in (FEW_MEDIUM, MEDIUM_MANY):
        ax.axvline(x, color="0.4", ls="--", lw=1, zorder=0)
    if not label_regions:
        return
    lo, hi = ax.get_xlim()
    lo, hi = max(lo, 1e-3), max(hi, 1e-3)
    spans = {"few": (lo, FEW_MEDIUM), "medium": (FEW_MEDIUM, MEDIUM_MANY), "many": (MEDIUM_MANY, hi)}
    for name, (a, b) in spans.items():
        a, b = max(a, lo), min(b, hi)
        if b > a:
            ax.text(np.sqrt(a * b), 0.985, name, transform=ax.get_xaxis_transform(),
                    ha="center", va="top", fontsize=9, color="0.3", style="italic")
