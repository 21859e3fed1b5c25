"""Where the accuracy goes: learning curves, per-class accuracy against training count,
shot-group bars, the confusion matrix, classifier weight norms and accuracy across test
label distributions."""
from __future__ import annotations

import matplotlib
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

from ltlab.evaluation.metrics import GROUPS, shot_groups
from ltlab.viz.base import GROUP_COLORS, _figure, _mark_shot_boundaries, _np


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


def _group_variant(columns) -> list | None:
    """[(group, variant)] when every column reads 'group (variant)' with two or more variants
    (analysis.shift_compare's columns), else None."""
    parts = []
    for col in map(str, columns):
        if not col.endswith(")") or " (" not in col:
            return None
        group, variant = col[:-1].rsplit(" (", 1)
        parts.append((group, variant))
    return parts if len({v for _, v in parts}) > 1 else None


def accuracy_across_shifts(table: pd.DataFrame) -> Figure:
    """Accuracy across test label distributions: rows = distributions in the given order
    (e.g. forward50 ... uniform ... backward50), one line per column (method / variant).
    A non-numeric first column is used as the row labels when the index is a RangeIndex.
    Columns named 'group (variant)' (analysis.shift_compare) get one panel per variant, a colour
    per group and the legend beside the panels: twenty lines on one axis hide each other."""
    df = table
    if isinstance(df.index, pd.RangeIndex) and len(df.columns) and \
            not pd.api.types.is_numeric_dtype(df[df.columns[0]]):
        df = df.set_index(df.columns[0])
    df = df.select_dtypes("number")
    x = np.arange(len(df))
    names = [str(v) for v in df.index]
    paneled = _group_variant(df.columns)
    pairs = paneled or [(str(c), None) for c in df.columns]   # one panel, variant None
    variants = list(dict.fromkeys(v for _, v in pairs))
    groups = list(dict.fromkeys(g for g, _ in pairs))
    width = max(6.0, 0.6 * len(df) + 3)
    fig = _figure((width * (0.75 * len(variants) if paneled else 1) + (3 if len(groups) > 6 else 0), 4.4))
    axes = fig.subplots(1, len(variants), sharey=True, squeeze=False)[0]
    colors = {g: (f"C{i}" if len(groups) <= 10 else matplotlib.colormaps["tab20"](i % 20))
              for i, g in enumerate(groups)}
    for ax, variant in zip(axes, variants):
        for (group, v), col in zip(pairs, df.columns):
            y = df[col].to_numpy(float)
            if v == variant and np.isfinite(y).any():
                ax.plot(x, y, marker="o", ms=4, lw=1.5, color=colors[group], label=group)
        if "uniform" in names:
            ax.axvline(names.index("uniform"), color="0.5", ls=":", lw=1)
        rot = 40 if len(names) > 5 else 0
        ax.set_xticks(x, names, rotation=rot, ha="right" if rot else "center")
        ax.set(xlabel="test label distribution",
               title="Accuracy across test label distributions" if variant is None else variant)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy")
    if len(groups) > 6 or paneled:
        fig.legend(*axes[0].get_legend_handles_labels(), loc="outside right upper", fontsize=9)
    else:
        axes[0].legend(loc="best", fontsize=9)
    if paneled:
        fig.suptitle("Accuracy across test label distributions")
    return fig
