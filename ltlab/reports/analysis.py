"""Tables behind the analysis notebooks, and comparison across runs and seeds.

Single run: :func:`failure_table` (how well each confidence score separates correct from
wrong predictions) and :func:`calibration_table` (calibration errors, overall and per
many/medium/few group, before/after temperature scaling).
Many runs: :func:`leaderboard` (mean and std over seeds of runs that share a config) and
the side-by-side figures of 05_compare.

Only finished runs (summary.json present) are ever read: an unfinished run directory is
skipped and listed, or refused with :class:`ltlab.evaluation.run_dir.RunNotFinished`.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ltlab import viz
from ltlab.evaluation import metrics as M
from ltlab.evaluation import posthoc, scores, shift
from ltlab.evaluation.run_dir import RunNotFinished, is_finished, load_run

FAILURE_SCORES = ("msp", "energy", "residual_energy", "max_logit", "neg_entropy")
LEADERBOARD_METRICS = ("top1", "balanced_acc", "many", "medium", "few", "ece", "nll", "brier",
                       "auroc_msp", "auroc_energy", "auroc_residual_energy", "aurc_msp", "ece_ts")
# Config keys that do not define "the same experiment": seeds are what we average over;
# paths, logging and stage-one run directories (one per seed) differ between seeds.
NOT_GROUPED = ("seed", "run_dir", "run_name", "progress", "eval_every", "stage1_run", "device", "compile")


def _groups_of(labels, train_counts):
    """[('all', mask), ('many', mask), ...] by true class; absent groups are left out."""
    g = M.shot_groups(train_counts)[np.asarray(labels, dtype=np.int64)]
    out = [("all", np.ones(g.shape[0], bool))]
    return out + [(name, g == i) for i, name in enumerate(M.GROUPS) if (g == i).any()]


def open_run(run_dir):
    """load_run with the notebooks' error messages: an empty run_dir and an unfinished run
    (no summary.json) are refused before any figure is drawn."""

    if not str(run_dir).strip():
        raise ValueError("run_dir is empty: pass a finished run directory, e.g. "
                         "papermill NOTEBOOK OUT -p run_dir runs/demo_ce_if100_s0")
    return load_run(run_dir)


# ------------------------------------------------------------------ one run: tables

def failure_table(logits, labels, train_counts, score_names=FAILURE_SCORES, T: float = 1.0) -> pd.DataFrame:
    """Failure prediction per score and group (true class): AUROC (correct = positive),
    AURC and E-AURC (x1000), FPR at 95% TPR, AUPR of errors, n and error rate.

    Correctness is that of argmax logits, whatever T (temperature changes only the
    scores' ranking across samples). Metrics undefined on a group (no error, or no correct
    prediction) are NaN.
    """
    f = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    correct = f.argmax(1) == y
    rows = []
    for name in score_names:
        s = scores.SCORES[name](f, T=T)
        for group, m in _groups_of(y, train_counts):
            sm, cm = s[m], correct[m]
            rows.append({"score": name, "group": group, "n": int(m.sum()), "error": float(1 - cm.mean()),
                         "AUROC": M.auroc(sm, cm), "AURC x1000": 1000 * M.aurc(sm, cm),
                         "E-AURC x1000": 1000 * M.eaurc(sm, cm), "FPR95": M.fpr_at_tpr(sm, cm, 0.95),
                         "AUPR-error": M.aupr_error(sm, cm)})
    return pd.DataFrame(rows).set_index(["score", "group"])


def energy_caveat(logits, atol: float = 1e-4) -> str | None:
    """A sentence for the energy page when the energy scores cannot say what their names
    promise, else None: logits that are log-probabilities (logsumexp 0 on every row; the
    mixture head of enmos saves log p(y|x), having no other logit vector of its own) carry no
    magnitude: at T = 1, -E(x) = 0 (its ranking is rounding noise) and
    BE = E(x) - log(1 - MSP) = -log(1 - MSP)."""
    f = np.asarray(logits, dtype=np.float64)
    if f.ndim != 2 or f.shape[0] == 0:
        return None
    if np.max(np.abs(scores.neg_energy(f))) > atol:   # -E(x) at T = 1 is the row's logsumexp
        return None
    return (f"These logits are log-probabilities (logsumexp within {atol:g} of 0 on all {f.shape[0]} rows, "
            "as a mixture head saves them), so every score here is a function of the probabilities alone: "
            "at T = 1 the free energy is 0 for every image but for rounding, so it ranks by noise (AUROC near "
            "0.5), and the residual energy equals -log(1 - MSP), which ranks exactly like MSP.")


def calibration_row(logits, labels, n_bins: int = 15) -> dict:
    """n, accuracy, ECE, MCE, RMSCE, classwise ECE, adaptive ECE, NLL, Brier of logits."""
    f = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    p = M.softmax(f)
    conf, ok = p.max(1), p.argmax(1) == y
    e, mc, rms = M._calibration_errors(conf, ok, n_bins)
    return {"n": int(y.shape[0]), "accuracy": float(ok.mean()), "ECE": e, "MCE": mc, "RMSCE": rms,
            "classwise ECE": M.classwise_ece(p, y, n_bins), "adaptive ECE": M.adaptive_ece(p, y, n_bins),
            "NLL": M.nll(f, y), "Brier": M.brier(p, y)}


def calibration_table(logits, labels, train_counts, temperature: float | None = None,
                      n_bins: int = 15) -> pd.DataFrame:
    """Calibration metrics overall and per many/medium/few group (samples of the group's
    true classes), for the raw logits and, when ``temperature`` is given (fit it on the
    validation split), for logits / temperature. Index (calibration, group)."""
    f = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    variants = [("raw (T = 1)", f)]
    if temperature is not None:
        variants.append((f"TS (T = {temperature:.3g})", posthoc.apply_temperature(f, temperature)))
    rows = []
    for vname, z in variants:
        for group, m in _groups_of(y, train_counts):
            rows.append({"calibration": vname, "group": group, **calibration_row(z[m], y[m], n_bins)})
    return pd.DataFrame(rows).set_index(["calibration", "group"])


# ------------------------------------------------------------------ many runs

def load_finished(run_dirs, skip_unfinished: bool = True):
    """(finished runs, skipped run directories); loaded Run objects pass through.
    ``skip_unfinished=False`` raises
    RunNotFinished at the first unfinished one; no finished run at all always raises."""

    if isinstance(run_dirs, (str, Path)):
        run_dirs = [run_dirs]
    runs, skipped = [], []
    for d in run_dirs:
        if hasattr(d, "summary") and hasattr(d, "config"):    # an already loaded Run
            runs.append(d)
        elif is_finished(d):
            runs.append(load_run(d))
        elif skip_unfinished:
            skipped.append(str(d))
        else:
            load_run(d)          # raises RunNotFinished with the reason
    if not runs:
        given = ", ".join(map(str, run_dirs)) or "none"
        raise RunNotFinished(f"no finished run among the run directories given ({given}): "
                             "a run counts only once its summary.json exists")
    return runs, skipped


def _group_key(config: dict) -> str:
    return json.dumps({k: v for k, v in config.items() if k not in NOT_GROUPED}, sort_keys=True, default=str)


def _flat(config: dict) -> dict:
    """The config with the method's extra keys lifted to the top (a label names mixup_alpha, not
    the whole extra dict)."""
    out = {k: v for k, v in config.items() if k != "extra"}
    for k, v in (config.get("extra") or {}).items():
        out.setdefault(k, v)
    return out


def _differing(configs: list, keys_out=()) -> list:
    keys = sorted({k for c in configs for k in c} - {"method", *keys_out})
    return [k for k in keys if len({json.dumps(c.get(k), sort_keys=True, default=str) for c in configs}) > 1]


# Keys a label leaves out unless nothing else tells two groups apart: where the data lies says less
# than what the recipe does (the archive holds the same runs trained from two copies of CIFAR-10).
LABEL_LAST = ("data_root",)


def group_runs(runs) -> dict:
    """{label: [runs]}: runs whose configs agree on everything but NOT_GROUPED keys share a
    group. A group's label is its method, followed, where other groups share that method, by the
    keys that tell them apart ('ce' and 'ce, mixup_alpha=1.0, lr_gamma=0.1')."""
    by_key: dict[str, list] = {}
    for r in runs:
        by_key.setdefault(_group_key(r.config), []).append(r)
    configs = [_flat(json.loads(k)) for k in by_key]
    out = {}
    for cfg, group in zip(configs, by_key.values()):
        method = str(cfg.get("method", "run"))
        same = [c for c in configs if str(c.get("method", "run")) == method]
        keys = _differing(same, LABEL_LAST)
        if len({json.dumps([c.get(k) for k in keys], default=str) for c in same}) < len(same):
            keys = _differing(same)      # only a LABEL_LAST key tells some of them apart
        label = ", ".join([method] + [f"{k}={cfg.get(k)}" for k in keys])
        while label in out:       # identical labels cannot happen with distinct keys, but be safe
            label += "'"
        out[label] = sorted(group, key=lambda r: r.config.get("seed", 0))
    return out


def leaderboard(run_dirs, metrics=LEADERBOARD_METRICS, skip_unfinished: bool = True) -> pd.DataFrame:
    """Mean and sample std (ddof 1; NaN for one seed) over seeds, one row per config group,
    sorted by balanced accuracy. Columns: runs, seeds, then '<metric> mean' / '<metric> std'.
    ``df.attrs['skipped']`` lists unfinished run directories that were left out."""
    runs, skipped = load_finished(run_dirs, skip_unfinished)
    rows = []
    for label, group in group_runs(runs).items():
        vals = pd.DataFrame([{m: r.summary.get(m) for m in metrics} for r in group], dtype=float)
        row = {"group": label, "runs": len(group), "seeds": ", ".join(str(r.config.get("seed")) for r in group)}
        for m in metrics:
            row[f"{m} mean"] = vals[m].mean()
            row[f"{m} std"] = vals[m].std(ddof=1)
        rows.append(row)
    df = pd.DataFrame(rows).set_index("group")
    key = "balanced_acc mean" if "balanced_acc mean" in df else df.columns[2]
    df = df.sort_values(key, ascending=False, na_position="last")
    df.attrs["skipped"] = skipped
    return df


def format_leaderboard(board: pd.DataFrame, percent=("top1", "balanced_acc", "many", "medium", "few", "ece",
                                                     "ece_ts")) -> pd.DataFrame:
    """'mean ± std' strings (accuracies and ECE in % with one decimal, the rest to 4 significant
    digits) for display."""
    out = board[["runs", "seeds"]].copy()
    for col in board.columns:
        if not col.endswith(" mean"):
            continue
        m = col[:-5]
        scale = 100.0 if m in percent else 1.0
        mean, std = board[col] * scale, board[f"{m} std"] * scale
        fmt = ".1f" if m in percent else ".4g"
        out[m] = [("n/a" if pd.isna(a) else f"{a:{fmt}}" + ("" if pd.isna(s) else f" ± {s:{fmt}}"))
                  for a, s in zip(mean, std)]
    return out


# ------------------------------------------------------------------ many runs: figures

def group_bars_compare(board: pd.DataFrame) -> Figure:
    """Many/medium/few/top-1 bars, one group of bars per config (means over seeds)."""

    res = {label: {k: board.loc[label].get(f"{k} mean") for k in ("many", "medium", "few", "top1")}
           for label in board.index}
    fig = viz.group_bars(res)
    fig.axes[0].set_title("Accuracy by shot group (mean over seeds)")
    return fig


def _pooled(group, split="test"):
    preds = [r.predictions(split) for r in group]
    return (np.concatenate([p["logits"] for p in preds]), np.concatenate([p["labels"] for p in preds]),
            preds[0]["train_counts"])


def reliability_compare(groups: dict, n_bins: int = 15, max_panels: int = 8) -> Figure:
    """Reliability diagrams side by side, one per config group, the test predictions of all
    its seeds pooled; same bins and axes in every panel, ECE of the pool in the legend."""

    labels = list(groups)[:max_panels]
    ncol = min(len(labels), 4)
    nrow = -(-len(labels) // ncol)
    fig = Figure(figsize=(4.2 * ncol, 4.4 * nrow), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrow, ncol, squeeze=False)).ravel()
    for ax, label in zip(axes, labels):
        logits, y, _ = _pooled(groups[label])
        viz.reliability_diagram(M.softmax(logits), y, n_bins=n_bins, ax=ax,
                                title=f"{label} ({len(groups[label])} seed(s) pooled)")
    for ax in axes[len(labels):]:
        ax.set_visible(False)
    fig.suptitle("Reliability on the test split")
    return fig


def _val_predictions(run):
    try:
        return run.predictions("val")
    except FileNotFoundError:
        return None


def run_shift_table(run, em_calibration: str = "auto", em: bool = True, shifts=shift.SHIFTS):
    """(shift.shift_table of one run, the calibration it used): the run's own source prior
    (shift.source_prior 'auto') and its val split's ``em_calibration`` (None without a val split:
    the raw logits)."""
    p = run.predictions("test")
    val = _val_predictions(run)
    src = shift.source_prior(run.config, p, val)[0]
    cal = None if val is None else shift.run_calibration(run.config, p, val, em_calibration)
    return shift.shift_table(p["logits"], p["labels"], p["train_counts"], shifts=shifts, source_counts=src,
                             calibration=cal, em=em), cal


def shift_compare(groups: dict, variants=("none", "known"), em: bool = False,
                  em_calibration: str = "auto") -> pd.DataFrame:
    """Accuracy across the CIFAR-style test distributions, mean over each group's seeds:
    rows = SHIFTS, one column per (group, variant). Each run's own source prior is used
    (shift.source_prior's 'auto': fitted on its val split where it has one). Needs class-balanced
    test splits (CIFAR, demo). The known prior (and EM, with ``em``: add "em" to ``variants`` to
    show it) reweights each run's posteriors calibrated on its val split by ``em_calibration``
    (shift.run_calibration: 'auto' chooses by cross-validated NLL); a run without a val split
    uses its raw logits."""
    cols = {}
    for label, group in groups.items():
        tables = [run_shift_table(r, em_calibration, em)[0] for r in group]
        mean = sum(t[list(variants)] for t in tables) / len(tables)
        for v in variants:
            cols[f"{label} ({v})" if len(variants) > 1 else label] = mean[v]
    return pd.DataFrame(cols)
