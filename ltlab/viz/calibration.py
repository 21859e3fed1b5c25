"""Calibration figures: reliability diagrams (Guo et al. 2017) with confidence histograms,
before / after temperature scaling and by shot group, over 15 equal-width right-closed bins
(``energy_calibration.md`` §5); :func:`set_reliability` moves one to other probabilities in
place (the calibration widget)."""
from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from ltlab.evaluation.metrics import GROUPS, calibration_bins, ece, shot_groups, softmax
from ltlab.evaluation.posthoc import apply_temperature
from ltlab.viz.base import _figure, _np, _root_figure

ACC_LABEL, GAP_LABEL_PREFIX = "Accuracy", "Gap"   # legend labels of the reliability bars


def _draw_reliability(ax, conf, correct, n_bins, ece_value, title) -> dict:
    # every bin gets a bar (empty ones hidden) so set_reliability can move them in place
    bins = calibration_bins(conf, correct, n_bins=n_bins)
    edges = _np(bins["edges"], float)
    acc_bars = ax.bar(edges[:-1], np.zeros(n_bins), width=np.diff(edges), align="edge", color="tab:blue",
                      edgecolor="black", linewidth=0.6, label=ACC_LABEL)
    gap_bars = ax.bar(edges[:-1], np.zeros(n_bins), width=np.diff(edges), align="edge",
                      facecolor=(1, 0, 0, 0.25), edgecolor="red", hatch="//", linewidth=0.6, label=GAP_LABEL_PREFIX)
    ax.plot([0, 1], [0, 1], ls="--", color="0.3", lw=1, label="perfect calibration")
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence", ylabel="accuracy")
    ax.set_aspect("equal")
    ax.legend(loc="best", fontsize=8)
    ax._ltlab_bars = (acc_bars, gap_bars)
    _move_reliability(ax, bins, ece_value, title)
    return bins


def _move_reliability(ax, bins, ece_value, title) -> None:
    acc_bars, gap_bars = ax._ltlab_bars
    acc, cf, cnt = _np(bins["acc"], float), _np(bins["conf"], float), _np(bins["count"])
    for a, g, ai, ci, n in zip(acc_bars, gap_bars, acc, cf, cnt):
        a.set_visible(n > 0)      # hidden and flat: the legend's "best" place ignores them
        g.set_visible(n > 0)
        a.set_height(ai if n > 0 else 0.0)
        g.set_y(ai if n > 0 else 0.0)
        g.set_height(ci - ai if n > 0 else 0.0)
    label = f"{GAP_LABEL_PREFIX} (ECE = {100 * ece_value:.2f}%)"
    gap_bars.set_label(label)
    # the legend lists the y = x line first: find the gap's entry by its text, not its place
    next(t for t in ax.get_legend().get_texts() if t.get_text().startswith(GAP_LABEL_PREFIX)).set_text(label)
    ax.set_title(title, fontsize=10)


def _draw_confidence_hist(ax, conf, correct, bins) -> None:
    edges = _np(bins["edges"], float)
    ax._ltlab_hist = ax.bar(edges[:-1], np.zeros(len(edges) - 1), width=np.diff(edges), align="edge",
                            color="tab:blue", edgecolor="black", linewidth=0.6)
    ax.axvline(0.0, color="tab:green", ls="--", lw=1.5, label="accuracy")
    ax.axvline(0.0, color="tab:red", ls="--", lw=1.5, label="avg. confidence")
    ax.set(xlim=(0, 1), xlabel="confidence", ylabel="% of samples")
    ax.set_title("Confidence histogram", fontsize=10)
    ax.legend(loc="best", fontsize=8)
    _move_confidence_hist(ax, conf, correct, bins)


def _move_confidence_hist(ax, conf, correct, bins) -> None:
    cnt = _np(bins["count"], float)
    pct = 100 * cnt / max(cnt.sum(), 1)
    for bar, h in zip(ax._ltlab_hist, pct):
        bar.set_height(h)
    texts = ax.get_legend().get_texts()
    for line, text, name, x in zip(ax.lines, texts, ("accuracy", "avg. confidence"), (np.mean(correct), np.mean(conf))):
        line.set_xdata([x, x])
        text.set_text(f"{name} ({100 * x:.1f}%)")
    ax.set_ylim(0, 1.05 * max(pct.max(), 1e-9))


def _conf_correct(probs, labels):
    probs = _np(probs, float)
    return probs.max(axis=1), probs.argmax(axis=1) == _np(labels, int)


def reliability_diagram(probs, labels, n_bins: int = 15, title: str = "", ax=None) -> Figure:
    """Reliability diagram (Guo et al. 2017) of top-label confidence.

    Bars = per-bin accuracy (empty bins hidden), red hatched gap to the bin's mean
    confidence, dashed y = x, ECE in the legend; beside it the confidence histogram (% of
    samples per bin) with lines at mean accuracy and mean confidence. ``ax`` may be one Axes
    (diagram only) or a pair (diagram, histogram); the Figure holding it is returned.
    :func:`set_reliability` moves a figure made here (``ax=None``) to other probabilities."""
    conf, correct = _conf_correct(probs, labels)
    e = float(ece(_np(probs, float), _np(labels, int), n_bins=n_bins))
    if ax is None:
        fig = _figure((9.0, 4.3))
        ax_rel, ax_hist = fig.subplots(1, 2)
        fig._ltlab_reliability = {"axes": (ax_rel, ax_hist), "n_bins": n_bins}
    elif isinstance(ax, (list, tuple, np.ndarray)):
        ax_rel, ax_hist = ax
    else:
        ax_rel, ax_hist = ax, None
    bins = _draw_reliability(ax_rel, conf, correct, n_bins, e, title or "Reliability diagram")
    if ax_hist is not None:
        _draw_confidence_hist(ax_hist, conf, correct, bins)
    return _root_figure(ax_rel)


def set_reliability(fig: Figure, probs, labels, title: str = "") -> Figure:
    """Move a :func:`reliability_diagram` figure to other probabilities of the same samples'
    kind, in place: bars, gaps, histogram, mean lines, legend numbers and title."""
    st = fig._ltlab_reliability
    ax_rel, ax_hist = st["axes"]
    conf, correct = _conf_correct(probs, labels)
    bins = calibration_bins(conf, correct, n_bins=st["n_bins"])
    _move_reliability(ax_rel, bins, float(ece(_np(probs, float), _np(labels, int), n_bins=st["n_bins"])),
                      title or "Reliability diagram")
    _move_confidence_hist(ax_hist, conf, correct, bins)
    return fig


def reliability_before_after(logits, labels, temperature: float, n_bins: int = 15) -> Figure:
    """Reliability diagrams and confidence histograms before (T = 1) and after temperature
    scaling, side by side with the same bins and axes; ECE in each legend."""
    logits, labels = _np(logits, float), _np(labels, int)
    after = _np(apply_temperature(logits, temperature), float)
    fig = _figure((9.0, 7.6))
    axes = fig.subplots(2, 2, gridspec_kw={"height_ratios": [1.7, 1]})
    for col, (lg, name) in enumerate(((logits, "before TS (T = 1)"),
                                      (after, f"after TS (T = {float(temperature):.3g})"))):
        reliability_diagram(_np(softmax(lg), float), labels, n_bins=n_bins,
                            title=f"Reliability, {name}", ax=(axes[0, col], axes[1, col]))
        axes[1, col].set_title(f"Confidence histogram, {name}", fontsize=10)
    top = max(a.get_ylim()[1] for a in axes[1])
    for a in axes[1]:
        a.set_ylim(0, top)
    return fig


def reliability_by_group(probs, labels, train_counts, n_bins: int = 15, title: str = "") -> Figure:
    """One reliability diagram per many/medium/few group (samples whose true class is in
    the group); empty groups are skipped. Same bins and axes in every panel. ``title`` names
    what the probabilities are (e.g. the temperature), so two such figures can be told apart."""
    probs, labels = _np(probs, float), _np(labels, int)
    sample_group = shot_groups(_np(train_counts))[labels]
    present = [g for g in range(3) if np.any(sample_group == g)]
    fig = _figure((4.2 * max(len(present), 1), 4.4))
    axes = np.atleast_1d(fig.subplots(1, max(len(present), 1)))
    if not present:
        axes[0].text(0.5, 0.5, "no samples", ha="center", transform=axes[0].transAxes)
    for ax, g in zip(axes, present):
        m = sample_group == g
        conf, correct = _conf_correct(probs[m], labels[m])
        e = float(ece(probs[m], labels[m], n_bins=n_bins))
        _draw_reliability(ax, conf, correct, n_bins, e,
                          f"{GROUPS[g]}: n = {int(m.sum())}, acc {100 * correct.mean():.1f}%")
    fig.suptitle("Reliability by shot group (true class)" + (f", {title}" if title else ""))
    return fig
