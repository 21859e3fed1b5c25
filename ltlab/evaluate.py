"""Prediction, run artifacts and reading runs back.

A run is finished when, and only when, its summary.json exists: it is written last, after
the predictions, and every number in it is recomputed here from predictions/*.npz.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

from ltlab.io import atomic_savez, atomic_write_json
from ltlab.summary import summarize


class RunNotFinished(FileNotFoundError):
    """A run directory without summary.json: never counted as a result."""


@torch.inference_mode()
def predict(model, loader, recipe, amp_dtype=None, features=True) -> dict:
    """Logits (float32), labels (int64) and, if asked, features of a whole split."""
    model.eval()
    logits, labels, feats = [], [], []
    device = next(model.parameters()).device
    for x, y in loader:
        with torch.autocast(device.type, dtype=amp_dtype or torch.bfloat16, enabled=amp_dtype is not None):
            out = model(x)
        logits.append(recipe.inference(out).float())
        labels.append(y)
        if features:
            feats.append(out["features"].float())
    res = {"logits": torch.cat(logits).cpu().numpy().astype(np.float32),
           "labels": torch.cat(labels).cpu().numpy().astype(np.int64)}
    if features:
        res["features"] = torch.cat(feats).cpu().numpy().astype(np.float32)
    return res


def read_predictions(path) -> dict:
    """The arrays of a predictions/<split>.npz. An archived run stores logits (and features) as
    float16 (ltlab.archive); they come back as float32, exactly, so no reader computes in half
    precision (np.exp overflows float16 above 11)."""
    with np.load(path) as z:
        return {k: z[k].astype(np.float32) if z[k].dtype == np.float16 else z[k] for k in z.files}


def compute_summary(pred_dir: Path, epochs: int | None = None) -> dict:
    """The summary's numbers from predictions/test.npz (and val.npz when present)."""
    pred_dir = Path(pred_dir)
    test = read_predictions(pred_dir / "test.npz")
    val = read_predictions(pred_dir / "val.npz") if (pred_dir / "val.npz").exists() else None
    counts = test["train_counts"]
    s = summarize(test["logits"], test["labels"], counts,
                  val_logits=None if val is None else val["logits"],
                  val_labels=None if val is None else val["labels"])
    s["train_size"] = int(counts.sum())
    if epochs is not None:
        s["epochs"] = int(epochs)
    return s


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


# ---------------------------------------------------------------------------- reading runs
@dataclass
class Run:
    path: Path
    config: dict
    summary: dict
    metrics: pd.DataFrame = field(repr=False)

    def predictions(self, split: str = "test") -> dict:
        f = self.path / "predictions" / f"{split}.npz"
        if not f.exists():
            raise FileNotFoundError(f"run '{self.path}' has no predictions for split '{split}'")
        return read_predictions(f)

    @property
    def name(self) -> str:
        return self.path.name


def is_finished(run_dir) -> bool:
    return (Path(run_dir) / "summary.json").is_file()


def load_run(run_dir) -> Run:
    """A finished run; raises RunNotFinished for a run without summary.json."""
    path = Path(run_dir)
    if not path.is_dir():
        raise RunNotFinished(f"run directory '{path}' does not exist")
    if not is_finished(path):
        raise RunNotFinished(f"run directory '{path}' has no summary.json: the run did not finish")
    cfg = yaml.safe_load((path / "config.yaml").read_text())
    summary = json.loads((path / "summary.json").read_text())
    metrics = pd.read_csv(path / "metrics.csv") if (path / "metrics.csv").exists() else pd.DataFrame()
    return Run(path, cfg, summary, metrics)
