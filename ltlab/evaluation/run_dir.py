"""Reading a run directory back: its predictions, its summary recomputed from them, its config.

A run is finished when, and only when, its summary.json exists: it is written last, after
the predictions, and every number in it is recomputed here from predictions/*.npz.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from ltlab.evaluation.intervals import summary_fields
from ltlab.evaluation.summary import summarize

# the run directory's files that the training code writes and readers look for (docs: the run
# directory contract); summary.json comes last and marks a finished run
PROVENANCE_FILE = "provenance.json"


class RunNotFinished(FileNotFoundError):
    """A run directory without summary.json: never counted as a result."""


def read_predictions(path) -> dict:
    """The arrays of a predictions/<split>.npz. An archived run stores logits (and features) as
    float16 (ltlab.reports.archive); they come back as float32, exactly, so no reader computes in half
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


def interval_fields(pred_dir: Path, temperature: float | None = None, n_resamples: int = 1000) -> dict:
    """``<metric>_ci: [lo, hi]`` of top-1, balanced accuracy, many / medium / few, ECE, ECE after
    temperature scaling, AUROC and AURC (stratified bootstrap over the test images, seeded), and how
    they were made. Kept apart from compute_summary: an interval is not a number that an archived
    float16 copy must reproduce to its tolerance, and older runs have none (ltlab table --ci computes it)."""
    test = read_predictions(Path(pred_dir) / "test.npz")
    return summary_fields(test["logits"], test["labels"], test["train_counts"], n_resamples=n_resamples,
                          temperature=temperature)


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
