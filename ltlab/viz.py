"""Figures for long-tailed recognition runs (training curves, shot groups, calibration).

Every function takes numpy arrays / DataFrames (never run directories) and returns a
:class:`matplotlib.figure.Figure` built without pyplot, so it is safe under Agg and in
notebooks; nothing is shown or closed. Conventions follow the reference notes
(``energy_calibration.md`` §3 and §5): many > 100, medium 20-100, few < 20 training
images; 15 equal-width confidence bins; AURC reported x 1000.

The analysis figures (score distributions, risk-coverage, weight norms, confusion matrix,
energy bias) live in :mod:`ltlab.viz_analysis` and are re-exported here.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ltlab.metrics import GROUPS, calibration_bins, ece, shot_groups, softmax
from ltlab.posthoc import apply_temperature
from ltlab.viz_analysis import (GROUP_COLORS, _figure, _mark_shot_boundaries, _np, _root_figure,
                                confusion_matrix, energy_vs_count, risk_coverage_curves,
                                score_distributions, set_score_temperature, weight_norms)

__all__ = [
    "learning_curves", "per_class_accuracy_vs_count", "group_bars", "reliability_diagram",
    "reliability_before_after", "reliability_by_group", "score_distributions", "set_score_temperature",
    "set_per_class_accuracy",
    "risk_coverage_curves", "weight_norms", "confusion_matrix", "accuracy_across_shifts",
    "energy_vs_count",
]

ACC_LABEL, GAP_LABEL_PREFIX = "Accuracy", "Gap"   # legend labels of the reliability bars


# --------------------------------------------------------------------------- training


def learning_curves(metrics: pd.DataFrame) -> Figure:
    """Three panels against epoch: train loss (log y), test accuracy (evaluated epochs
    only; ECE dashed on the same axis) and learning rate."""
    df = metrics.sort_values("epoch")
    fig = _figure((13.5, 3.8))
    ax_loss, ax_acc, ax_lr = fig.subplots(1, 3)
    loss = df[["epoch", "train_loss"]].dropna()
    ax_loss.plot(loss["epoch"], loss["train_loss"], color="C0", lw=1.4, marker=_markers(len(loss)), ms=4)
    if len(loss) and (loss["train_loss"] > 0).all() and loss["train_loss"].max() / loss["train_loss"].min() >= 10:
        ax_loss.set_yscale("log")   # under a decade, log ticks read as 4.4 x 10^0
    ax_loss.set(xlabel="epoch", ylabel="train loss", title="Training loss")
    shown = False
    for col, style, label in (("test_top1", "-o", "top-1"),
                              ("test_balanced_acc", "-s", "balanced accuracy"),
                              ("test_ece", "--^", "ECE")):
        if col in df:
            s = df[["epoch", col]].dropna()
            if len(s):
                ax_acc.plot(s["epoch"], s[col], style, ms=3.5, lw=1.3, label=label)
                shown = True
    if shown:
        ax_acc.legend(loc="best", fontsize=9)
    else:
        ax_acc.text(0.5, 0.5, "no evaluated epochs", ha="center", transform=ax_acc.transAxes)
    ax_acc.set(xlabel="epoch", ylabel="test accuracy / ECE", title="Test metrics")
    lr = df[["epoch", "lr"]].dropna() if "lr" in df else df.iloc[:0]
    ax_lr.plot(lr["epoch"], lr["lr"], color="C2", lw=1.4, marker=_markers(len(lr)), ms=4)
    if len(lr) and (lr["lr"] > 0).all() and lr["lr"].max() / lr["lr"].min() >= 100:
        ax_lr.set_yscale("log")
    ax_lr.set(xlabel="epoch", ylabel="learning rate", title="Learning rate")
    for ax in (ax_loss, ax_acc, ax_lr):
        ax.grid(alpha=0.3, which="both")
    if "seconds" in df and df["seconds"].notna().any():
        fig.suptitle(f"{len(df)} epochs, {df['seconds'].sum() / 60:.1f} min of training")
    return fig


def _markers(n_points: int):
    """Markers on short series: a 1-epoch run is one point, and a line through one point is invisible."""
    return "o" if n_points <= 30 else None


# --------------------------------------------------------------------------- shot groups


def _binned_means(x, acc):
    """Mean accuracy in log-spaced count bins (at least 2, at most 10, about 5 classes each)."""
    valid = np.isfinite(acc)
    if valid.sum() < 2 or np.ptp(x[valid]) <= 0:
        return None
    n_bins = int(np.clip(valid.sum() // 5, 2, 10))
    edges = np.geomspace(x[valid].min(), x[valid].max() * (1 + 1e-9), n_bins + 1)
    idx = np.digitize(x[valid], edges) - 1
    cx, cy = [], []
    for b in range(n_bins):
        sel = idx == b
        if sel.any():
            cx.append(np.exp(np.log(x[valid][sel]).mean()))
            cy.append(acc[valid][sel].mean())
    return cx, cy


def _group_label(g, m, acc) -> str:
    return f"{GROUPS[g]}: {int(m.sum())} classes, mean {np.nanmean(acc[m]):.1%}"


def per_class_accuracy_vs_count(per_class_acc, train_counts, class_names=None) -> Figure:
    """Per-class accuracy against training count (log x): scatter coloured by shot group,
    the mean accuracy in log-spaced count bins, dashed lines at 20 and 100 images.
    :func:`set_per_class_accuracy` moves the same figure to other accuracies (widgets)."""
    acc = _np(per_class_acc, float)
    counts = _np(train_counts, float)
    x = np.maximum(counts, 1.0)
    groups = shot_groups(_np(train_counts))
    fig = _figure((7.0, 4.4))
    ax = fig.subplots()
    scatters = {}
    for g in range(3):
        m = groups == g
        if m.any():
            scatters[g] = ax.scatter(x[m], acc[m], s=22, alpha=0.75, color=GROUP_COLORS[g],
                                     label=_group_label(g, m, acc))
    binned = _binned_means(x, acc)
    line = ax.plot(*binned, "-D", color="black", ms=4, lw=1.5, label="binned mean")[0] if binned else None
    if class_names is not None and len(acc) <= 30:
        for xi, yi, name in zip(x, acc, class_names):
            ax.annotate(str(name), (xi, yi), xytext=(3, 3), textcoords="offset points", fontsize=7)
    ax.set_xscale("log")
    ax.set_ylim(-0.03, 1.08)
    _mark_shot_boundaries(ax)
    ax.set(xlabel="training images per class (log scale)", ylabel="per-class test accuracy",
           title="Per-class accuracy vs training frequency")
    ax.grid(alpha=0.3, which="both")
    # outside the axes: tail classes sit low-left, head classes high-right, any corner can hide one
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, borderaxespad=0)
    fig._ltlab_pca = dict(x=x, groups=groups, scatters=scatters, line=line,
                          annotated=class_names is not None and len(acc) <= 30)
    return fig


def set_per_class_accuracy(fig: Figure, per_class_acc) -> Figure:
    """Move a :func:`per_class_accuracy_vs_count` figure to other per-class accuracies of the
    same classes, in place: points, binned means and the legend's group means."""
    st = fig._ltlab_pca
    if st["annotated"]:
        raise ValueError("a figure with class-name annotations is not updated in place; build a new one")
    acc, x, groups = _np(per_class_acc, float), st["x"], st["groups"]
    if acc.shape != x.shape:
        raise ValueError(f"{acc.size} per-class accuracies for a figure of {x.size} classes")
    ax = fig.axes[0]
    labels = []
    for g, coll in st["scatters"].items():
        m = groups == g
        coll.set_offsets(np.column_stack([x[m], acc[m]]))
        coll.set_label(_group_label(g, m, acc))
        labels.append(coll.get_label())
    if st["line"] is not None:
        binned = _binned_means(x, acc)
        st["line"].set_data(*binned)
        labels.append("binned mean")
    for text, label in zip(ax.get_legend().get_texts(), labels):
        text.set_text(label)
    return fig


def group_bars(results: dict) -> Figure:
    """Grouped bars of many/medium/few (and top-1) accuracy, one group per run/method.

    ``results[name] = {"many": .., "medium": .., "few": .., "top1": ..}`` in [0, 1];
    None / NaN / missing values get no bar and an 'n/a' mark."""
    names = list(results)
    keys = [k for k in ("many", "medium", "few", "top1")
            if any(_value((results[n] or {}).get(k)) is not None for n in names)]
    keys = keys or ["many", "medium", "few", "top1"]
    colors = {"many": GROUP_COLORS[0], "medium": GROUP_COLORS[1], "few": GROUP_COLORS[2],
              "top1": "0.45"}
    fig = _figure((max(5.0, 1.1 * len(names) * len(keys) / 2 + 2.5), 4.4))
    ax = fig.subplots()
    width = 0.8 / len(keys)
    for j, key in enumerate(keys):
        xs, hs = [], []
        for i, name in enumerate(names):
            x = i + (j - (len(keys) - 1) / 2) * width
            v = _value((results[name] or {}).get(key))
            if v is None:
                ax.text(x, 1.5, "n/a", ha="center", va="bottom", rotation=90, fontsize=8,
                        color="0.35")
            else:
                xs.append(x)
                hs.append(100 * v)
        bars = ax.bar(xs, hs, width=width * 0.95, color=colors[key], label=key,
                      edgecolor="white", linewidth=0.5)
        ax.bar_label(bars, fmt="%.1f", rotation=90, padding=2, fontsize=7)
    ax.set_xticks(np.arange(len(names)), names, rotation=20 if len(names) > 3 else 0,
                  ha="right" if len(names) > 3 else "center")
    ax.set(ylim=(0, 112), ylabel="accuracy (%)", title="Accuracy by shot group")
    ax.grid(axis="y", alpha=0.3)
    fig.legend(loc="outside upper center", ncol=len(keys), fontsize=9, frameon=False)
    return fig


def _value(v):
    """float(v), or None for None / NaN."""
    if v is None:
        return None
    v = float(v)
    return None if np.isnan(v) else v


# --------------------------------------------------------------------------- calibration


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
    ax.get_legend().get_texts()[1].set_text(f"{GAP_LABEL_PREFIX} (ECE = {100 * ece_value:.2f}%)")
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


# --------------------------------------------------------------------------- label shift


def accuracy_across_shifts(table: pd.DataFrame) -> Figure:
    """Accuracy across test label distributions: rows = distributions in the given order
    (e.g. forward50 ... uniform ... backward50), one line per column (method / variant).
    A non-numeric first column is used as the row labels when the index is a RangeIndex."""
    df = table
    if isinstance(df.index, pd.RangeIndex) and len(df.columns) and \
            not pd.api.types.is_numeric_dtype(df[df.columns[0]]):
        df = df.set_index(df.columns[0])
    df = df.select_dtypes("number")
    x = np.arange(len(df))
    fig = _figure((max(6.0, 0.6 * len(df) + 3), 4.4))
    ax = fig.subplots()
    for i, col in enumerate(df.columns):
        y = df[col].to_numpy(float)
        if np.isfinite(y).any():
            ax.plot(x, y, marker="o", ms=4, lw=1.5, color=f"C{i}", label=str(col))
    names = [str(v) for v in df.index]
    if "uniform" in names:
        ax.axvline(names.index("uniform"), color="0.5", ls=":", lw=1)
    rot = 40 if len(names) > 5 else 0
    ax.set_xticks(x, names, rotation=rot, ha="right" if rot else "center")
    ax.set(xlabel="test label distribution", ylabel="accuracy",
           title="Accuracy across test label distributions")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=9)
    return fig
