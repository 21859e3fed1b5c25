"""How sure a label-shift number is: EM's estimated prior with its intervals, and target-accuracy
estimates from a shifted sample against the truth (tables: ltlab.reports.shift_report)."""
from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ltlab.viz.base import _figure

TARGET_TITLES = {"balanced_acc": "balanced accuracy", "target_acc": "target accuracy",
                 "many": "many-shot", "medium": "medium-shot", "few": "few-shot"}


def prior_with_intervals(pi, train_counts=None, title: str = "") -> Figure:
    """The true prior (where known) and EM's estimate with its bootstrap interval per class
    (``pi``: prior_intervals.PriorIntervals), classes by descending training count, log scale."""
    c = pi.estimate.size
    order = np.arange(c) if train_counts is None else np.argsort(-np.asarray(train_counts), kind="stable")
    x = np.arange(c)
    fig = _figure((max(6.5, 0.35 * c + 3.0), 4.2))
    ax = fig.subplots()
    est, ci = pi.estimate[order], pi.ci[order]
    err = np.vstack([est - ci[:, 0], ci[:, 1] - est]).clip(min=0)
    ax.errorbar(x, est, yerr=err, fmt="s", ms=4, color="tab:purple", ecolor="tab:purple", capsize=3,
                label=f"EM estimate ({pi.calibration}), {pi.level:.0%} interval")
    if pi.true_prior is not None:
        ax.plot(x, pi.true_prior[order], "o", ms=5, mfc="none", color="black", label="true prior")
    ax.set_yscale("log")
    ax.set(xlabel="class (by descending training count)" if train_counts is not None else "class",
           ylabel="class prior (log)")
    if c <= 30:
        ax.set_xticks(x, [str(k) for k in order])
    tv = "" if pi.tv is None else f"\nTV to the true prior {pi.tv:.3f}, {pi.level:.0%} interval " \
                                  f"[{pi.tv_ci[0]:.3f}, {pi.tv_ci[1]:.3f}]"
    ax.set_title((title + ": " if title else "") + f"resampled {pi.resampled}{tv}", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return fig


def estimates_vs_truth(table: pd.DataFrame) -> Figure:
    """One panel per target (balanced accuracy, many, medium, few): each estimator's estimate
    with its interval, one colour per weighting, and the truth as a horizontal line
    (``table``: shift_report.biased_sample_table)."""
    targets = list(dict.fromkeys(table["target"]))
    weights = list(dict.fromkeys(table["weights"]))
    estimators = list(dict.fromkeys(table["estimator"]))
    fig = _figure((3.3 * len(targets) + 0.6, 3.9))
    axes = np.atleast_1d(fig.subplots(1, len(targets), sharey=False))
    width = 0.7 / max(len(weights), 1)
    for ax, target in zip(axes, targets):
        sub = table[table["target"] == target]
        for j, w in enumerate(weights):
            rows = sub[sub["weights"] == w].set_index("estimator").reindex(estimators)
            est = 100 * rows["estimate"].astype(float).to_numpy()
            lo = 100 * rows["ci_lo"].astype(float).to_numpy()
            hi = 100 * rows["ci_hi"].astype(float).to_numpy()
            x = np.arange(len(estimators)) + (j - (len(weights) - 1) / 2) * width
            ax.errorbar(x, est, yerr=np.vstack([est - lo, hi - est]).clip(min=0), fmt="o", ms=4, capsize=3,
                        color=f"C{j}", label=w)
        truth = sub["truth"].dropna()
        if len(truth):
            ax.axhline(100 * float(truth.iloc[0]), color="black", lw=1.2, ls="--", label="truth (full test set)")
        ax.set_xticks(np.arange(len(estimators)), estimators)
        ax.set_title(TARGET_TITLES.get(target, target), fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("accuracy on the uniform test (%)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=len(labels), fontsize=9)
    fig.suptitle("Estimate from the shifted sample against the truth", fontsize=11)
    return fig
