"""Knob views of a finished run, and the ipywidgets that drive them in live JupyterLab.

Each ``*_view(run, knob, ...)`` is a pure function of the run's saved predictions: it
returns ``(Figure, dict of numbers)`` and is what batch notebooks call with the default
knob values and what the tests check. The ``*_widget`` builders only wire sliders and
dropdowns (``continuous_update=False``: one redraw per release, not per pixel dragged) to
those views through ``interactive_output``; widgets do not survive papermill or HTML
(papermill#400, ipywidgets#3713), so notebooks build them only when ``interactive`` is set.

Predictions are read once per run and split and kept in memory (:func:`predictions`), so
a redraw costs only the post-hoc arithmetic (milliseconds; see posthoc.benchmark_posthoc).
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ltlab import viz
from ltlab.evaluation import calibrated_em, posthoc, posthoc_classifier, posthoc_tde, scores, shift
from ltlab.evaluation import metrics as M
from ltlab.evaluation.run_dir import read_predictions
from ltlab.interactive.redraw import InPlace, SameLayout, figure_png
from ltlab.reports.analysis import calibration_row

FAILURE_SCORES = ("msp", "energy", "residual_energy")


# ----------------------------------------------------------------------- cached data

@lru_cache(maxsize=4)   # a large benchmark run holds hundreds of MB of features
def _load(path: str, split: str, mtime_ns: int) -> dict:
    out = read_predictions(Path(path) / "predictions" / f"{split}.npz")   # float16 archives: float32
    for a in out.values():
        a.setflags(write=False)   # shared between calls: nobody may modify the cache
    return out


def predictions(run, split: str = "test") -> dict:
    """run.predictions(split), read once and cached (keyed by path and file mtime)."""
    f = Path(run.path) / "predictions" / f"{split}.npz"
    if not f.exists():
        return run.predictions(split)    # raises the run's own FileNotFoundError
    return _load(str(f.parent.parent.resolve()), split, f.stat().st_mtime_ns)


def has_split(run, split: str) -> bool:
    return (Path(run.path) / "predictions" / f"{split}.npz").exists()


def _accuracy_numbers(logits, labels, counts) -> dict:
    pred = np.asarray(logits).argmax(1)
    c = len(counts)
    out = {"top1": M.top1(pred, labels), "balanced_acc": M.balanced_accuracy(pred, labels, c)}
    out.update(M.group_accuracy(M.per_class_accuracy(pred, labels, c), counts))
    return out


def _accuracy_figure(logits, labels, counts, title: str, into: Figure | None = None) -> Figure:
    """Per-class accuracy vs count; ``into``: a figure of this kind to move in place."""
    pca = M.per_class_accuracy(np.asarray(logits).argmax(1), labels, len(counts))
    fig = viz.per_class_accuracy_vs_count(pca, counts) if into is None else viz.set_per_class_accuracy(into, pca)
    fig.axes[0].set_title(title)
    return fig


# ----------------------------------------------------------------------- pure views

def energy_numbers(run, T: float = 1.0, split: str = "test") -> dict:
    """AUROC and AURC (correct = positive) of each failure score at temperature T."""
    p = predictions(run, split)
    f, y = p["logits"], p["labels"]
    correct = f.argmax(1) == y
    nums = {"T": float(T)}
    for name in FAILURE_SCORES:
        s = scores.SCORES[name](f, T=T)
        nums[f"auroc_{name}"] = M.auroc(s, correct)
        nums[f"aurc_{name}"] = M.aurc(s, correct)
    return nums


def energy_view(run, T: float = 1.0, split: str = "test", score: str | None = None,
                into: Figure | None = None):
    """Score distributions (MSP, -E, residual energy at temperature T) for correct vs
    incorrect predictions per group; numbers: AUROC and AURC of each score. ``score`` draws
    that score's row only (the widget's choice: a quarter of the drawing per redraw);
    ``into``: a figure of the same scores to move to T in place (viz.set_score_temperature)."""
    if score is not None and score not in FAILURE_SCORES:
        raise ValueError(f"score '{score}' is not one of {', '.join(FAILURE_SCORES)}")
    drawn = [score] if score else list(FAILURE_SCORES)
    if into is not None and getattr(into, "_ltlab_scores", {}).get("scores") == drawn:
        fig = viz.set_score_temperature(into, T)
    else:
        p = predictions(run, split)
        fig = viz.score_distributions(p["logits"], p["labels"], p["train_counts"], scores=drawn, T=T)
    return fig, energy_numbers(run, T, split)


def calibration_view(run, temperature: float = 1.0, split: str = "test", n_bins: int = 15,
                     into: Figure | None = None):
    """Reliability diagram of softmax(logits / temperature); numbers: accuracy, ECE, MCE,
    RMSCE, classwise/adaptive ECE, NLL, Brier (from ltlab.reports.analysis.calibration_row).
    ``into``: a reliability figure of as many bins to move in place (viz.set_reliability)."""

    p = predictions(run, split)
    z = posthoc.apply_temperature(p["logits"], temperature)
    probs, title = M.softmax(z), f"{split}, T = {temperature:.3g}"
    if into is not None and getattr(into, "_ltlab_reliability", {}).get("n_bins") == n_bins:
        fig = viz.set_reliability(into, probs, p["labels"], title=title)
    else:
        fig = viz.reliability_diagram(probs, p["labels"], n_bins=n_bins, title=title)
    return fig, {"temperature": float(temperature), **calibration_row(z, p["labels"], n_bins)}


def has_classifier(run) -> bool:
    p = predictions(run, "test")
    return "classifier_weight" in p and "features" in p and np.asarray(p["classifier_weight"]).ndim == 2


def tau_view(run, tau: float = 1.0, split: str = "test"):
    """tau-normalised classifier features @ (w / ||w||^tau).T, bias dropped (Decoupling);
    figure: weight norms before/after; numbers: accuracy by group at this tau."""
    p = predictions(run, split)
    if "classifier_weight" not in p or "features" not in p:
        raise ValueError(f"run '{run.path}' saved no classifier_weight/features: tau-norm needs a linear head")
    W, counts = p["classifier_weight"], p["train_counts"]
    z = posthoc_classifier.tau_norm_logits(p["features"], W, tau)
    nums = {"tau": float(tau), **_accuracy_numbers(z, p["labels"], counts)}
    fig = viz.weight_norms(W, counts, taus=(0.0, float(tau)) if tau != 0 else (0.0,))
    fig.axes[0].set_title(f"Classifier weight norms; τ = {tau:g}: balanced accuracy "
                          f"{100 * nums['balanced_acc']:.1f}%")
    return fig, nums


def is_tde(run) -> bool:
    """A TDE run whose alpha can be changed: an archive without features has only its logits."""
    p = predictions(run, "test")
    return "tde_weight" in p and "features" in p


def tde_view(run, alpha: float | None = None, split: str = "test", into: Figure | None = None):
    """TDE logits recomputed for ``alpha`` (None: the run's own) from the saved features,
    weight and direction; figure: per-class accuracy vs count (``into``: redraw that one)."""
    p = predictions(run, split)
    if "tde_weight" not in p:
        raise ValueError(f"run '{run.path}' is not a TDE run (no tde_weight in its predictions)")
    a = float(p["tde_alpha"]) if alpha is None else float(alpha)
    z = posthoc_tde.from_predictions(p, a)
    nums = {"alpha": a, **_accuracy_numbers(z, p["labels"], p["train_counts"]),
            "ece": M.ece(M.softmax(z), p["labels"])}
    return _accuracy_figure(z, p["labels"], p["train_counts"], f"TDE, α = {a:g}", into), nums


def logit_adjust_view(run, tau: float = 1.0, split: str = "test", into: Figure | None = None):
    """Post-hoc logit adjustment f - tau log pi (pi: the prior the logits encode, source_prior's
    'auto'; tau 0 = raw logits); ``into``: redraw that figure in place."""
    p = predictions(run, split)
    src = source_counts(run)
    z = posthoc.logit_adjust(p["logits"], src, tau)
    nums = {"tau": float(tau), **_accuracy_numbers(z, p["labels"], p["train_counts"]),
            "ece": M.ece(M.softmax(z), p["labels"])}
    return _accuracy_figure(z, p["labels"], p["train_counts"], f"logit adjustment, τ = {tau:g}", into), nums


def source_prior(run, source: str = "auto") -> tuple[np.ndarray, str]:
    """(counts, how): the prior the run's logits encode (shift.source_prior: 'auto' fits it on the
    val split when the run has one, else the rule by method; 'val', 'method', 'train', 'uniform')."""
    if source not in shift.SOURCES:
        raise ValueError(f"source prior {source!r}: expected one of {', '.join(shift.SOURCES)}")
    test = Path(run.path) / "predictions" / "test.npz"
    val = Path(run.path) / "predictions" / "val.npz"
    if not test.exists():
        predictions(run, "test")       # raises the run's own FileNotFoundError
    key = (str(Path(run.path).resolve()), test.stat().st_mtime_ns, val.stat().st_mtime_ns if val.exists() else None,
           source)
    if key not in _SOURCE_PRIORS:   # the val fit once per run and source: a dropdown move only reruns EM
        p = predictions(run, "test")
        v = predictions(run, "val") if val.exists() else None
        _SOURCE_PRIORS[key] = shift.source_prior(run.config, p, v, source)
    counts, how = _SOURCE_PRIORS[key]
    return counts.copy(), how


_SOURCE_PRIORS: dict = {}   # (run, file dates, source) -> (counts, how): C floats an entry


def source_counts(run, source: str = "auto") -> np.ndarray:
    """The counts of :func:`source_prior`."""
    return source_prior(run, source)[0]


def em_calibration(run, method: str = "auto", source: str = "auto") -> calibrated_em.Calibration:
    """The calibration EM works on (calibrated_em.fit_calibration: auto, ts, bcts, bcts_l2 or none),
    fitted on the run's val split; ``source`` is the prior the raw logits encode (see source_counts).
    A run without a val split gets an error for any calibration but 'none', never a silent 'none'."""
    if method == "none":
        return calibrated_em.fit_calibration("none", model_prior=source_counts(run, source))
    if not has_split(run, "val"):
        raise ValueError(f"EM calibration {method!r} needs the run's val split, and {run.path} has none: "
                         "train with a val split, or choose calibration 'none' (EM on the raw logits)")
    d = Path(run.path) / "predictions"
    # 'auto' and 'val' are the val fit (shift.run_calibration without source counts); the others fixed
    src = None if source in ("auto", "val") else tuple(source_counts(run, source))
    return _fitted_calibration(str(Path(run.path).resolve()), (d / "test.npz").stat().st_mtime_ns,
                               (d / "val.npz").stat().st_mtime_ns, method, src)


@lru_cache(maxsize=16)   # fitted once per run, method and source prior: a dropdown move only reruns EM
def _fitted_calibration(run_dir: str, test_mtime: int, val_mtime: int, method: str,
                        src: tuple | None) -> calibrated_em.Calibration:
    test, val = _load(run_dir, "test", test_mtime), _load(run_dir, "val", val_mtime)
    return shift.run_calibration({}, test, val, method, None if src is None else np.asarray(src))


def prior_view(run, shift_name: str = "forward50", source: str = "auto", calibration: str = "auto",
               seed: int = 0, subsets: dict | None = None, into: Figure | None = None):
    """One test distribution: its true class prior, the EM estimate (from the posteriors
    calibrated on val by ``calibration``, see em_calibration; no test labels) and the source
    prior; accuracy by group without correction, with the known prior and with the EM prior
    (empty when the estimate is flagged). ``subsets`` (e.g. shift.list_shift_subsets)
    replaces the CIFAR-style subset. ``into``: a prior figure of this run to move in place."""
    p = predictions(run, "test")
    f, y, counts = p["logits"], p["labels"], p["train_counts"]
    c = f.shape[1]
    idx = subsets[shift_name] if subsets is not None else \
        shift.shift_subset(y, *shift.parse_shift(shift_name), seed=seed, num_classes=c)
    src = source_counts(run, source)
    cal = em_calibration(run, calibration, source)
    row = shift.shift_row(f[idx], y[idx], counts, src, cal, em=False)   # known: cal's posteriors
    em_cols, res = shift.em_columns(f[idx], y[idx], counts, cal)
    row.update(em_cols)
    q_true = np.bincount(y[idx], minlength=c) / len(idx)
    order = np.argsort(-np.asarray(counts), kind="stable")        # classes by training count
    same = into is not None and np.array_equal(getattr(into, "_ltlab_prior", {}).get("order"), order)
    fig = _prior_figure(q_true, res.prior, cal.source_prior, order, row, shift_name, into if same else None)
    return fig, {"shift": shift_name, **row}


def _prior_figure(q_true, q_hat, q_src, order, row, name, into: Figure | None = None) -> Figure:
    """Class priors (left, log scale, classes in ``order``) and accuracy by group with three
    corrections (right); ``into``: a figure made here for the same order, moved in place."""
    keys, cats = ("none", "known", "em"), ["all", *M.GROUPS]
    if into is None:
        x = np.arange(len(order))
        fig = Figure(figsize=(12.0, 4.2), layout="constrained")
        ax_p, ax_a = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.4, 1]})
        ax_p.plot(x, np.ones(len(x)), "-o", ms=3, color="black", label="true test prior q")
        ax_p.plot(x, np.ones(len(x)), "--s", ms=3, color="tab:purple", label="EM estimate")
        ax_p.plot(x, np.ones(len(x)), ":", color="0.5", label="source prior (of the calibrated posteriors)")
        ax_p.set_yscale("log")
        ax_p.set(xlabel="class (by descending training count)", ylabel="class prior (log)")
        ax_p.grid(alpha=0.3, which="both")
        ax_p.legend(fontsize=8)
        width = 0.8 / len(keys)
        bars = [ax_a.bar(np.arange(4) + (j - 1) * width, np.zeros(4), width * 0.95, color=f"C{j}", label=lab)
                for j, lab in enumerate(("no correction", "known prior", "EM prior"))]
        ax_a.set_xticks(np.arange(4), cats)
        ax_a.set(ylim=(0, 115), ylabel="accuracy (%)")
        ax_a.grid(axis="y", alpha=0.3)
        ax_a.legend(fontsize=8, loc="upper right")
        fig._ltlab_prior = {"bars": bars, "labels": [], "order": order}
    fig = into if into is not None else fig
    st = fig._ltlab_prior
    ax_p, ax_a = fig.axes
    for line, q in zip(ax_p.lines, (q_true, q_hat, q_src)):
        line.set_ydata(np.asarray(q)[order])
    ax_p.get_legend().get_texts()[1].set_text(
        f"EM estimate, {row['em_calibration']} (TV {row['em_tv']:.3f}, {row['em_iter']} it., {row['em_status']})")
    ax_p.set_autoscaley_on(True)       # the floor below switched it off on the last move
    ax_p.relim()
    ax_p.autoscale_view()
    # a collapsed EM estimate reaches 1e-50: keep the true and source priors readable
    floor = 0.2 * min(np.min(q[q > 0]) for q in (np.asarray(q_true), np.asarray(q_src)) if (np.asarray(q) > 0).any())
    if ax_p.get_ylim()[0] < floor:
        ax_p.set_ylim(bottom=floor)
    ax_p.set_title(f"{name}: n = {row['n']}")
    for lab in st["labels"]:
        lab.remove()
    st["labels"] = []
    for k, bars in zip(keys, st["bars"]):
        vals = [row[k]] + [row.get(f"{k}_{g}", np.nan) for g in M.GROUPS]
        for bar, v in zip(bars, vals):
            bar.set_height(100 * v)
        # labels given, not fmt: bar_label would format the heights the bars were created with
        st["labels"] += ax_a.bar_label(bars, labels=["" if np.isnan(v) else f"{100 * v:.1f}" for v in vals],
                                       fontsize=7, rotation=90, padding=2)
    status = row.get("em_status", "ok")
    # always two title lines: a layout frozen by the widget keeps room for either
    ax_a.set_title("Accuracy on this distribution\n" + ("EM prior from the estimate above" if status == "ok"
                                                        else f"(EM prior not shown: estimate {status})"))
    return fig


def leaderboard_view(board, metric: str = "balanced_acc"):
    """Bars of one leaderboard metric (mean over seeds, std as error bars) per group."""
    if f"{metric} mean" not in board:
        raise ValueError(f"metric {metric!r} is not in the leaderboard")
    scale = 100.0 if metric in PERCENT else 1.0    # the leaderboard table's units
    mean, std = scale * board[f"{metric} mean"].astype(float), scale * board[f"{metric} std"].astype(float)
    fig = Figure(figsize=(max(5.0, 0.9 * len(board) + 2.5), 4.0), layout="constrained")
    ax = fig.subplots()
    x = np.arange(len(board))
    bars = ax.bar(x, mean.to_numpy(), yerr=np.nan_to_num(std.to_numpy()), capsize=4, color="tab:blue")
    ax.bar_label(bars, labels=[f"{v:.1f}" if scale == 100 else f"{v:.3g}" for v in mean], padding=3, fontsize=8)
    labels = [str(i) if len(str(i)) <= 40 else str(i)[:39] + "…" for i in board.index]   # full names: the table
    tilt = len(board) > 3 or max(map(len, labels), default=0) > 20
    ax.set_xticks(x, labels, rotation=20 if tilt else 0, ha="right" if tilt else "center")
    unit = f"{metric} (%)" if scale == 100 else metric
    ax.set(ylabel=unit, title=f"{unit}: mean ± std over seeds")
    ax.grid(axis="y", alpha=0.3)
    return fig, {"metric": unit, **{str(k): round(float(v), 1) if scale == 100 else float(v) for k, v in mean.items()}}


# ----------------------------------------------------------------------- widgets

# accuracy and calibration numbers are shown in percent with one decimal, as in the tables
PERCENT = {"top1", "balanced_acc", "many", "medium", "few", "accuracy", "ece", "ece_ts", "ECE", "MCE", "RMSCE",
           "classwise ECE", "adaptive ECE", "none", "known", "em", "auroc_msp", "auroc_energy",
           "auroc_residual_energy"}


def _is_percent(key: str) -> bool:
    return key in PERCENT or key.rsplit("_", 1)[0] in {"none", "known", "em"} and key.rsplit("_", 1)[-1] in M.GROUPS


TABLE_PERCENT = PERCENT | {"error", "AUROC", "FPR95", "AUPR-error"}   # the analysis tables' column names


def percent_table(table: pd.DataFrame) -> pd.DataFrame:
    """An analysis table as the widgets show numbers: accuracies, errors, calibration errors
    and AUROCs in percent with one decimal, the column renamed "X (%)"; other floats to 4
    decimals (NLL, Brier, total variation; AURC columns say their own x1000)."""
    out = table.copy()
    names = {}
    for col in table.columns:
        if not pd.api.types.is_float_dtype(table[col]):
            continue
        if col in TABLE_PERCENT or _is_percent(str(col)):
            out[col] = (100 * table[col]).round(1)
            names[col] = f"{col} (%)"
        else:
            out[col] = table[col].round(4)
    return out.rename(columns=names)


def numbers_table(nums: dict):
    """One-row table of a view's numbers: accuracies, calibration errors and AUROCs in %
    (one decimal, column named '... (%)'), the rest as they are."""

    row = {}
    for k, v in nums.items():
        if _is_percent(k) and isinstance(v, (int, float, np.floating)):
            row[f"{k} (%)"] = f"{100 * float(v):.1f}" if np.isfinite(v) else "n/a"
        else:
            row[k] = v
    return pd.DataFrame([row])


def render_outputs(result) -> tuple[bytes, str]:
    """What displaying a view sends to the browser: the figure as PNG, the numbers as HTML."""
    fig, nums = result
    return figure_png(fig), numbers_table(nums)._repr_html_()


def show_view(result) -> None:
    """Display a view's figure (PNG) and its numbers (one-row table, see numbers_table)."""
    from IPython.display import Image, display

    fig, nums = result
    display(Image(data=figure_png(fig), format="png"))
    display(numbers_table(nums))


def _panel(view, run, controls: dict, **fixed):
    """Controls wired to ``view`` (an InPlace or SameLayout around a view, ltlab.interactive.redraw)."""
    import ipywidgets as w

    def render(**knobs):
        show_view(view(run, **knobs, **fixed))

    out = w.interactive_output(render, controls)
    box = w.VBox([w.HBox(list(controls.values())), out])
    box.ltlab_controls = controls                                     # for ltlab bench --widgets:
    box.ltlab_redraw = lambda **knobs: view(run, **knobs, **fixed)    # what a control change computes
    return box


def _slider(description, value, lo, hi, step, log=False):
    import ipywidgets as w

    kw = dict(description=description, continuous_update=False, readout_format=".3g",
              style={"description_width": "initial"})
    if log:   # temperatures: multiplicative knobs, a log slider spreads them evenly
        return w.FloatLogSlider(value=value, base=10, min=np.log10(lo), max=np.log10(hi), step=step, **kw)
    return w.FloatSlider(value=value, min=lo, max=hi, step=step, **kw)


def energy_widget(run, T: float = 1.0, split: str = "test", score: str = "energy"):
    import ipywidgets as w

    labels = {"msp": "MSP", "energy": "−E(x)", "residual_energy": "residual energy"}
    return _panel(InPlace(energy_view), run,
                  {"T": _slider("energy T", T, 0.05, 20.0, 0.05, log=True),
                   "score": w.Dropdown(options=[(labels[k], k) for k in FAILURE_SCORES], value=score,
                                       description="score")}, split=split)


def calibration_widget(run, temperature: float = 1.0, split: str = "test"):
    return _panel(InPlace(calibration_view), run,
                  {"temperature": _slider("temperature", temperature, 0.05, 20.0, 0.02, log=True)}, split=split)


def tau_widget(run, tau: float = 1.0):
    return _panel(SameLayout(tau_view), run, {"tau": _slider("tau-norm τ", tau, 0.0, 2.0, 0.05)})


def tde_widget(run, alpha: float | None = None):
    a = float(predictions(run)["tde_alpha"]) if alpha is None else alpha
    return _panel(InPlace(tde_view), run, {"alpha": _slider("TDE α", a, 0.0, 3.0, 0.05)})


def logit_adjust_widget(run, tau: float = 1.0):
    return _panel(InPlace(logit_adjust_view), run, {"tau": _slider("logit adjustment τ", tau, -1.0, 3.0, 0.05)})


def prior_widget(run, shift_name: str = "forward50", source: str = "auto", calibration: str = "auto",
                 subsets: dict | None = None):
    import ipywidgets as w

    names = list(subsets) if subsets is not None else shift.SHIFTS
    controls = {"shift_name": w.Dropdown(options=names, value=shift_name, description="test prior"),
                "source": w.Dropdown(options=list(shift.SOURCES), value=source,
                                     description="logit prior"),
                "calibration": w.Dropdown(options=list(calibrated_em.CALIBRATIONS), value=calibration,
                                          description="EM calibration")}
    return _panel(InPlace(prior_view), run, controls, subsets=subsets)


def leaderboard_widget(board, metric: str = "balanced_acc"):
    import ipywidgets as w

    options = [c[:-5] for c in board.columns if c.endswith(" mean")]
    return _panel(SameLayout(leaderboard_view), board,
                  {"metric": w.Dropdown(options=options, value=metric, description="metric")})
