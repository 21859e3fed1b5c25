"""The end of a run: predictions of every split, then summary.json, last.

A run is finished when, and only when, its summary.json exists (ltlab.evaluation.run_dir).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ltlab.evaluation.run_dir import compute_summary, interval_fields
from ltlab.io import atomic_savez, atomic_write_json
from ltlab.models.inference import predict


def finish_run(model, recipe, cfg, data, run_dir: Path, *, amp_dtype=None, seconds=0.0,
               peak_host_mb=None, peak_device_mb=None, compiled=None, predict_split=None,
               main=True) -> dict | None:
    """Save predictions for every split there is, then summary.json, last.

    predict_split(split) -> predict()'s dict; the default predicts here, torchrun passes a
    sharded one. Only the main process (main=True) writes the summary."""
    if predict_split is None:
        def predict_split(split):
            return predict(model, data.eval_loader(split), recipe, amp_dtype=amp_dtype, features=True)
    pred_dir = Path(run_dir) / "predictions"
    exported = recipe.export(model)
    for split in ("val", "test"):
        if split == "val" and data.val_x is None:
            continue
        p = predict_split(split)
        if split == "val" and getattr(data, "val_indices", None) is not None:
            p = {**p, "source_index": data.val_indices}   # positions in the full train split: where val came from
        atomic_savez(pred_dir / f"{split}.npz", train_counts=np.asarray(data.train_counts, dtype=np.int64),
                     **exported, **p)
    if not main:
        return None
    summary = compute_summary(pred_dir, epochs=cfg.epochs if recipe.trains else 0)  # post-hoc: no epochs ran
    summary.update(interval_fields(pred_dir, summary.get("temperature")))
    metrics_csv = Path(run_dir) / "metrics.csv"
    train_seconds = float(pd.read_csv(metrics_csv)["seconds"].sum()) if metrics_csv.exists() else float(seconds)
    summary.update({
        "seconds": round(train_seconds, 3),      # sum of per-epoch wall times, resumed runs included
        "method": cfg.method, "dataset": cfg.dataset, "model": cfg.model, "seed": cfg.seed,
        "imb_factor": cfg.imb_factor,
        "peak_host_mb": None if peak_host_mb is None else round(float(peak_host_mb), 1),
        "peak_device_mb": None if peak_device_mb is None else round(float(peak_device_mb), 1),
        "compile": compiled,   # the mode the training step ran under (config 'auto' resolved)
    })
    atomic_write_json(Path(run_dir) / "summary.json", summary)
    return summary
