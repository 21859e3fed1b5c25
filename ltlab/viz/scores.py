"""Failure-prediction figures: per-sample confidence scores (MSP, free energy, residual
energy) for correct vs incorrect predictions by shot group, risk-coverage curves (AURC x
1000) and the energy bias against training count (``energy_calibration.md`` §3-4)."""
from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ltlab.evaluation.metrics import GROUPS, aurc, auroc, risk_coverage, shot_groups
from ltlab.viz.base import (
    GROUP_COLORS,
    OUTCOME_COLORS,
    SCORE_LABELS,
    _correct,
    _figure,
    _mark_shot_boundaries,
    _np,
    _score,
)


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
