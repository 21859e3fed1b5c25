"""Analysis figures for ltlab: score distributions, risk-coverage curves, classifier weight
norms, confusion matrices and the energy bias. Re-exported by :mod:`ltlab.viz`.

Every function takes numpy arrays and returns a :class:`matplotlib.figure.Figure` built
without pyplot (Agg-safe; nothing global is left open). Confidence scores are oriented
higher = more likely correct (see :mod:`ltlab.scores`); many/medium/few follow
:func:`ltlab.metrics.shot_groups` (>100 / 20-100 / <20 training images).
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

from ltlab import scores as _scores
from ltlab.metrics import GROUPS, aurc, auroc, risk_coverage, shot_groups

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
    """Evaluate the confidence score ``name`` from :data:`ltlab.scores.SCORES`."""
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


def score_distributions(logits, labels, train_counts, scores=("energy", "residual_energy"),
                        T: float = 1.0) -> Figure:
    """Distribution of each confidence score for correct vs incorrect predictions.

    Grid: rows = scores, columns = all samples + many/medium/few (true class; empty groups
    are skipped). Step histograms normalised per outcome (numpy density + ``ax.stairs``;
    seaborn's histplot cost about a fifth more CPU per energy-widget redraw) so the
    minority "incorrect" curve keeps its shape; each title gives AUROC (correct = positive).
    :func:`set_score_temperature` redraws the same figure at another T (the energy widget).
    """
    logits, labels = _np(logits, float), _np(labels, int)
    correct = _correct(logits, labels)
    sample_group = shot_groups(_np(train_counts))[labels]
    cols = [("all", np.ones(len(labels), bool))]
    cols += [(GROUPS[g], sample_group == g) for g in range(3) if np.any(sample_group == g)]
    scores = list(scores)
    fig = _figure((3.4 * len(cols), 2.9 * len(scores)))
    axes = fig.subplots(len(scores), len(cols), squeeze=False)
    artists = {}
    for r, name in enumerate(scores):
        for c, (_, mask) in enumerate(cols):
            ax = axes[r, c]
            for k in ("correct", "incorrect"):    # which outcomes a group has does not depend on T
                if (correct[mask] == (k == "correct")).any():
                    artists[r, c, k] = (ax.stairs([0.0], [0.0, 1.0], color=OUTCOME_COLORS[k], fill=True,
                                                  alpha=0.25, lw=0),
                                        ax.stairs([0.0], [0.0, 1.0], color=OUTCOME_COLORS[k], lw=1.2,
                                                  label=k if c == 0 else None))
            if c == 0 and any((r, 0, k) in artists for k in ("correct", "incorrect")):
                ax.legend(title="prediction", fontsize=8)
            ax.set_xlabel(SCORE_LABELS.get(name, name))
            ax.set_ylabel("density" if c == 0 else "")
    fig._ltlab_scores = dict(logits=logits, correct=correct, cols=cols, scores=scores, axes=axes,
                             artists=artists)
    set_score_temperature(fig, T)
    return fig


def set_score_temperature(fig: Figure, T: float) -> Figure:
    """Recompute a :func:`score_distributions` figure's histograms, limits and AUROC titles at
    temperature T, in place: no new axes, ticks or legends (a redraw of the same figure)."""
    st = fig._ltlab_scores
    correct, axes, artists = st["correct"], st["axes"], st["artists"]
    for r, name in enumerate(st["scores"]):
        s = _score(name, st["logits"], T)
        finite = np.isfinite(s)
        bins = np.histogram_bin_edges(s[finite], bins=40) if finite.any() else None
        for c, (gname, mask) in enumerate(st["cols"]):
            ax, m = axes[r, c], mask & finite
            top = 0.0
            for k in ("correct", "incorrect"):
                if (r, c, k) not in artists:
                    continue
                sel = s[m & (correct == (k == "correct"))]
                dens = np.histogram(sel, bins=bins, density=True)[0] if len(sel) and bins is not None \
                    else np.zeros(1)
                edges = bins if len(sel) and bins is not None else np.array([0.0, 1.0])
                for patch in artists[r, c, k]:
                    patch.set_data(dens, edges)
                top = max(top, float(dens.max()))
            if bins is None:
                auc_text = "no finite scores"
            elif (correct[m]).any() and (~correct[m]).any():
                auc_text = f"AUROC {auroc(s[m], correct[m]):.3f}"
            else:
                auc_text = "AUROC n/a"
            ax.set_title(f"{gname} (n={int(m.sum())}): {auc_text}", fontsize=10)
            if bins is not None:
                ax.set_xlim(bins[0], bins[-1])
            ax.set_ylim(0.0, 1.05 * top if top > 0 else 1.0)
    fig.suptitle(f"Confidence scores, correct vs incorrect predictions (T = {T:g}; "
                 "columns by true-class group)")
    return fig


def risk_coverage_curves(logits, labels, scores=("msp", "energy", "residual_energy"),
                         T: float = 1.0) -> Figure:
    """Risk-coverage curves (selective risk vs coverage), one per confidence score.

    Adds the oracle curve (all correct predictions accepted first) and the random-ranking
    level (the overall error); legend entries give AURC x 1000 (lower is better).
    """
    logits, labels = _np(logits, float), _np(labels, int)
    correct = _correct(logits, labels)
    n, n_ok = len(correct), int(correct.sum())
    fig = _figure((6.2, 4.6))
    ax = fig.subplots()
    for i, name in enumerate(scores):
        s = _score(name, logits, T)
        cov, risk = risk_coverage(s, correct)
        ax.plot(_np(cov), _np(risk), color=f"C{i}", lw=1.6,
                label=f"{SCORE_LABELS.get(name, name)} (AURC {1000 * aurc(s, correct):.1f})")
    k = np.arange(1, n + 1)
    oracle = np.maximum(k - n_ok, 0) / k
    ax.plot(k / n, oracle, color="black", ls="--", lw=1.2,
            label=f"oracle (AURC {1000 * oracle.mean():.1f})")
    err = 1.0 - n_ok / max(n, 1)
    ax.axhline(err, color="0.5", ls=":", lw=1.2, label=f"random ranking (AURC {1000 * err:.1f})")
    ax.set(xlim=(0, 1), ylim=(0, None), xlabel="coverage (fraction of samples accepted)",
           ylabel="selective risk (error rate of accepted)",
           title=f"Risk-coverage (T = {T:g}, N = {n}, error {100 * err:.1f}%)")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=9)
    return fig


def weight_norms(weight, train_counts, taus=(0.0, 1.0)) -> Figure:
    """Classifier weight norms ||w_c||_2 against frequency-sorted class index.

    Classes are sorted by descending training count; one curve per tau of tau-normalisation
    w_c / ||w_c||^tau (tau = 0 is the raw classifier). Shaded spans mark many/medium/few.
    """
    w = _np(weight, float)
    counts = _np(train_counts)
    order = np.argsort(-counts, kind="stable")
    norms = np.linalg.norm(w.reshape(len(w), -1), axis=1)[order]
    idx = np.arange(len(norms))
    fig = _figure((7.0, 4.2))
    ax = fig.subplots()
    groups = shot_groups(counts)[order]
    for g in range(3):
        pos = idx[groups == g]
        if len(pos):
            ax.axvspan(pos[0] - 0.5, pos[-1] + 0.5, color=GROUP_COLORS[g], alpha=0.08, lw=0)
            ax.text((pos[0] + pos[-1]) / 2, 0.985, f"{GROUPS[g]} ({len(pos)})", ha="center",
                    va="top", transform=ax.get_xaxis_transform(), fontsize=9, color="0.3")
    for i, tau in enumerate(taus):
        with np.errstate(divide="ignore", invalid="ignore"):
            scaled = np.where(norms > 0, norms ** (1.0 - float(tau)), 0.0)
        label = f"τ = {tau:g}" + (" (raw)" if float(tau) == 0 else "")
        ax.plot(idx, scaled, color=f"C{i}", marker="o" if len(idx) <= 50 else None, ms=3,
                lw=1.4, label=label)
    ax.set(xlabel="class index (sorted by descending training count)",
           ylabel="‖w_c‖₂ after τ-norm  w / ‖w‖^τ", title="Classifier weight norms",
           xlim=(-0.5, len(idx) - 0.5))
    ax.set_ylim(0, ax.get_ylim()[1] * 1.08)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right", bbox_to_anchor=(1.0, 0.92), fontsize=9)
    return fig


def _cell_text_color(im, value) -> str:
    return "white" if np.isfinite(value) and value > 0 and im.norm(value) > 0.55 else "black"


def confusion_matrix(pred, labels, train_counts, max_classes: int = 30) -> Figure:
    """Row-normalised confusion matrix, axes sorted by descending training frequency.

    Log colour norm, sequential colormap (white = 0 / no samples). With more than
    ``max_classes`` classes the grouped 3x3 many/medium/few matrix is shown instead, cell
    values annotated (true group = row, group of the predicted class = column).
    """
    pred, labels, counts = _np(pred, int), _np(labels, int), _np(train_counts)
    n_cls = len(counts)
    groups = shot_groups(counts)
    if n_cls <= max_classes:
        order = np.argsort(-counts, kind="stable")
        rank = np.empty(n_cls, int)
        rank[order] = np.arange(n_cls)
        cm = np.zeros((n_cls, n_cls))
        np.add.at(cm, (rank[labels], rank[pred]), 1)
        ticks = [str(c) for c in order]
        title = "Confusion matrix (row-normalised, classes by train count)"
        axis_names = ("predicted class", "true class")
    else:
        cm = np.zeros((3, 3))
        np.add.at(cm, (groups[labels], groups[pred]), 1)
        ticks = [f"{GROUPS[g]}\n({int((groups == g).sum())} cls)" for g in range(3)]
        title = f"Many/medium/few confusion (row-normalised, {n_cls} classes)"
        axis_names = ("group of the predicted class", "group of the true class")
    rows = cm.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.where(rows > 0, cm / rows, np.nan)
    positive = frac[np.isfinite(frac) & (frac > 0)]
    vmin = max(float(positive.min()) if positive.size else 1e-3, 1e-4)
    vmin = min(vmin, 0.1)
    cmap = sns.color_palette("YlGnBu", as_cmap=True).with_extremes(bad="white")
    side = 4.6 if len(frac) <= 3 else min(9.0, 3.5 + 0.22 * len(frac))
    fig = _figure((side + 1.2, side))
    ax = fig.subplots()
    im = ax.imshow(np.ma.masked_where(~(frac > 0), frac), cmap=cmap,
                   norm=LogNorm(vmin=vmin, vmax=1.0), interpolation="nearest")
    fig.colorbar(im, ax=ax, label="fraction of the true row (log scale)", shrink=0.85)
    pos = np.arange(len(frac))
    ax.set_xticks(pos, ticks, fontsize=8 if len(frac) > 3 else 10)
    ax.set_yticks(pos, ticks, fontsize=8 if len(frac) > 3 else 10)
    if len(frac) > 3:
        sorted_groups = groups[np.argsort(-counts, kind="stable")]
        for b in np.flatnonzero(np.diff(sorted_groups)) + 0.5:
            ax.axhline(b, color="0.3", lw=0.8)
            ax.axvline(b, color="0.3", lw=0.8)
    else:
        for i in range(3):
            for j in range(3):
                v = frac[i, j]
                txt = "n/a" if not np.isfinite(v) else f"{100 * v:.1f}%"
                ax.text(j, i, txt, ha="center", va="center", fontsize=11,
                        color=_cell_text_color(im, v))
    ax.set(xlabel=axis_names[0], ylabel=axis_names[1], title=title)
    return fig


def energy_vs_count(logits, train_counts, labels, T: float = 1.0) -> Figure:
    """Energy bias: mean −E(x; T) per true class against its training count (log axis).

    Error bars are standard errors; the dashed line is a least-squares fit against
    log10(count), its slope (per decade) and the Spearman rank correlation in the legend.
    """
    logits, labels, counts = _np(logits, float), _np(labels, int), _np(train_counts, float)
    n_cls = len(counts)
    s = _score("energy", logits, T)
    k = np.bincount(labels, minlength=n_cls).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.bincount(labels, weights=s, minlength=n_cls) / k
        var = np.bincount(labels, weights=s ** 2, minlength=n_cls) / k - mean ** 2
        sem = np.sqrt(np.maximum(var, 0) / np.maximum(k - 1, 1))
    ok = (k > 0) & (counts > 0)
    groups = shot_groups(counts)
    fig = _figure((6.4, 4.4))
    ax = fig.subplots()
    for g in range(3):
        m = ok & (groups == g)
        if m.any():
            ax.errorbar(counts[m], mean[m], yerr=sem[m], fmt="o", ms=4, capsize=2, lw=0.8,
                        color=GROUP_COLORS[g], label=f"{GROUPS[g]} ({int(m.sum())} classes)")
    if ok.sum() >= 2 and np.ptp(np.log10(counts[ok])) > 0:
        x = np.log10(counts[ok])
        slope, icpt = np.polyfit(x, mean[ok], 1)
        rho = np.corrcoef(pd.Series(x).rank(), pd.Series(mean[ok]).rank())[0, 1]
        xs = np.linspace(x.min(), x.max(), 50)
        ax.plot(10 ** xs, slope * xs + icpt, color="black", ls="--", lw=1,
                label=f"fit: {slope:+.2f} per decade (Spearman ρ = {rho:.2f})")
    ax.set_xscale("log")
    _mark_shot_boundaries(ax)
    ax.set(xlabel="training images per class (log scale)",
           ylabel="mean −E(x; T) of test samples",
           title=f"Energy bias by class frequency (T = {T:g})")
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="best", fontsize=9)
    return fig
