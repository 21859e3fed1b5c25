"""Redraw time of every widget view: what one slider or dropdown move costs in a live kernel.

``ltlab bench --widgets [RUN_DIR ...]`` builds each widget of :mod:`ltlab.interactive.widgets` and times
what moving its control computes: the view's arithmetic, the figure rendered to PNG (what
:func:`ltlab.interactive.widgets.show_view` sends to the browser) and the numbers table rendered to
HTML. Each knob is moved through a few values across its slider range after one warm-up
redraw (the predictions are then cached, as in a notebook where the widget was just
displayed). Besides the given runs, a synthetic run of ``--synthetic N,C`` (default 10,000
test images x 100 classes, the size of CIFAR-100's test split) carries the arrays of a
linear head, of a TDE head and a val split, so every view is timed at that size. Times are
wall-clock and depend on the machine's load: the table says what was measured, nothing
asserts a threshold.
"""
from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from ltlab.config import ConfigError, RunConfig
from ltlab.evaluation import posthoc_tde
from ltlab.evaluation.run_dir import compute_summary, load_run
from ltlab.interactive import widgets
from ltlab.reports.analysis import leaderboard

# knob values a user would visit, across each slider's range
SWEEPS = {
    "energy": ("T", (0.5, 1.0, 2.0, 5.0, 0.2)),
    "calibration": ("temperature", (0.5, 1.0, 1.7, 3.0, 0.8)),
    "tau_norm": ("tau", (0.0, 0.5, 1.0, 1.5, 2.0)),
    "tde": ("alpha", (0.0, 0.5, 1.0, 1.5, 3.0)),
    "logit_adjust": ("tau", (0.0, 0.5, 1.0, 1.5, 2.0)),
    "prior (test prior)": ("shift_name", ("forward50", "uniform", "backward10", "forward5", "backward50")),
    "prior (logit prior)": ("source", ("train", "uniform", "auto", "train", "uniform")),
    "prior (EM calibration)": ("calibration", ("none", "bcts", "ts", "none", "bcts")),
    "leaderboard": ("metric", ("top1", "balanced_acc", "few", "ece", "many")),
}


def synthetic_run(root, n: int = 10_000, c: int = 100, d: int = 64, seed: int = 0) -> Path:
    """A finished run directory with seeded synthetic predictions: n balanced test images of
    c classes, CIFAR-LT training counts at imbalance 100 (img_max 500), d-dimensional
    features, a linear head whose norms grow with the class count (so the logits favour the
    head, as CE training leaves them) and the arrays of a TDE head."""

    rng = np.random.default_rng(seed)
    counts = (500 * 0.01 ** (np.arange(c) / (c - 1))).astype(np.int64)
    means = rng.normal(size=(c, d))
    W = means * (0.6 + 0.4 * np.log(counts) / np.log(counts.max()))[:, None]
    b = 0.3 * np.log(counts / counts.sum())
    tde = dict(tde_weight=means, tde_direction=np.full(d, 0.5) + 0.05 * rng.normal(size=d),
               tde_alpha=np.float64(1.0), tde_tau=np.float64(16.0), tde_gamma=np.float64(1 / 32),
               tde_heads=np.int64(2))
    run = Path(root) / f"synthetic_{n}x{c}"
    (run / "predictions").mkdir(parents=True, exist_ok=True)
    for split, size in (("test", n), ("val", 20 * c)):   # val: 20 a class, as ltlab's balanced val split
        y = np.arange(size) % c
        feats = (means[y] + 1.2 * rng.normal(size=(size, d)) + 0.5).astype(np.float32)
        arrays = dict(logits=(feats @ W.T + b).astype(np.float32), labels=y.astype(np.int64), features=feats,
                      train_counts=counts, classifier_weight=W.astype(np.float32),
                      classifier_bias=b.astype(np.float32), **tde)
        assert np.isfinite(posthoc_tde.from_predictions(arrays)).all()
        np.savez(run / "predictions" / f"{split}.npz", **arrays)

    cfg = {**RunConfig().to_dict(), "method": "ce", "dataset": "synthetic", "seed": seed, "run_dir": str(run)}
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    summary = compute_summary(run / "predictions", epochs=0)
    (run / "summary.json").write_text(pd.Series(summary).to_json())
    return run


def _views(run, board) -> dict:
    """name -> redraw(value) for every widget this run supports: the widget is built, and a
    redraw is what moving its control computes (the other controls at their values)."""
    def knob(box, name):
        def redraw(v):
            knobs = {k: c.value for k, c in box.ltlab_controls.items()}
            return box.ltlab_redraw(**{**knobs, name: v})
        return redraw

    out = {"energy": knob(widgets.energy_widget(run), "T"),
           "calibration": knob(widgets.calibration_widget(run), "temperature"),
           "logit_adjust": knob(widgets.logit_adjust_widget(run), "tau")}
    if widgets.has_classifier(run):
        out["tau_norm"] = knob(widgets.tau_widget(run), "tau")
    if widgets.is_tde(run):
        out["tde"] = knob(widgets.tde_widget(run), "alpha")
    prior = widgets.prior_widget(run)
    for name in ("prior (test prior)", "prior (logit prior)", "prior (EM calibration)"):
        out[name] = knob(prior, SWEEPS[name][0])
    if board is not None:
        out["leaderboard"] = knob(widgets.leaderboard_widget(board), "metric")
    return out


def time_view(redraw, values) -> list[float]:
    """Milliseconds of each redraw (view + PNG + HTML table) after one untimed warm-up."""
    widgets.render_outputs(redraw(values[0]))
    times = []
    for v in values:
        t0 = time.perf_counter()
        widgets.render_outputs(redraw(v))
        times.append(1000 * (time.perf_counter() - t0))
    return times


def bench_widgets(run_dirs=(), synthetic=(10_000, 100)) -> pd.DataFrame:
    """One row per (run, view): test images, classes, median and max redraw ms."""

    rows = []
    with tempfile.TemporaryDirectory(prefix="ltlab_widget_bench_") as tmp:
        dirs = [Path(d) for d in run_dirs]
        if synthetic:
            dirs.append(synthetic_run(tmp, *synthetic))
        board = leaderboard(dirs) if dirs else None
        for d in dirs:
            run = load_run(d)
            p = widgets.predictions(run)
            for name, redraw in _views(run, board).items():
                ms = time_view(redraw, SWEEPS[name][1])
                rows.append({"run": run.name, "images": len(p["labels"]), "classes": p["logits"].shape[1],
                             "view": name, "knob": SWEEPS[name][0], "median ms": statistics.median(ms),
                             "max ms": max(ms), "redraws": len(ms)})
    return pd.DataFrame(rows)


def synthetic_size(text: str):
    """--synthetic 'N,C' -> (N, C), '' -> None; anything else is refused in one line."""
    if not text:
        return None
    try:
        n, c = (int(v) for v in text.split(","))
    except ValueError:
        raise ConfigError(f"bench --synthetic {text!r}: expected N,C (images, classes), e.g. 10000,100, "
                          "or '' for no synthetic run") from None
    if n < 1 or c < 2:
        raise ConfigError(f"bench --synthetic {text!r}: expected N >= 1 images and C >= 2 classes")
    return n, c


def main(args) -> None:
    import os

    from matplotlib import get_backend

    table = bench_widgets(args.runs, synthetic_size(args.synthetic))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"widget redraw times: view + PNG (one draw, {_dpi()} dpi) + HTML table; matplotlib backend "
          f"{get_backend()}; {os.cpu_count()} CPUs, load average {load:.1f} at the end")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.0f}"))
    if args.out:
        table.to_csv(args.out, index=False)


def _dpi() -> float:
    import matplotlib

    return matplotlib.rcParams["figure.dpi"]
