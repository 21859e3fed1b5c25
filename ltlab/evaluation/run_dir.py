"""Reading a run directory back: its predictions, its summary recomputed from them, its config.

A run is finished when, and only when, its summary.json exists: it is written last, after
the predictions, and every number in it is recomputed here from predictions/*.npz.
"""
from __future__ import annotations

import json
import zipfile
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


class RunFileError(ValueError):
    """A file of a run directory that is there but cannot be used (not JSON / YAML / npz, the wrong
    shape, arrays missing): one line naming the file, what is wrong and what was expected."""


def read_json(path, expect=dict):
    """A run directory's JSON file (summary.json, archive.json, provenance.json) as a mapping."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RunFileError(f"'{path}' is not valid JSON ({str(e).splitlines()[0][:120]}): expected the JSON object "
                           "ltlab writes; rerun the run or restore the file") from None
    if not isinstance(data, expect):
        raise RunFileError(f"'{path}' holds a {type(data).__name__}: expected a JSON object of key: value")
    return data


def read_yaml(path) -> dict:
    """A run directory's config.yaml as a mapping."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except (UnicodeDecodeError, yaml.YAMLError) as e:
        raise RunFileError(f"'{path}' is not valid YAML ({str(e).splitlines()[0][:120]}): expected the config "
                           "ltlab writes (key: value per line)") from None
    if not isinstance(data, dict):
        raise RunFileError(f"'{path}' holds a {type(data).__name__}: expected a mapping of config key: value")
    return data


def read_metrics(path) -> pd.DataFrame:
    """A run's metrics.csv (one row per epoch, an 'epoch' column)."""
    path = Path(path)
    try:
        df = pd.read_csv(path)
    except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise RunFileError(f"'{path}' is not a readable CSV ({str(e).splitlines()[0][:120]}): expected one row "
                           "per epoch with an 'epoch' column") from None
    if "epoch" not in df.columns:
        raise RunFileError(f"'{path}' has no 'epoch' column (columns: {', '.join(map(str, df.columns))[:120]}): "
                           "expected one row per epoch")
    return df


def read_predictions(path) -> dict:
    """The arrays of a predictions/<split>.npz. An archived run stores logits (and features) as
    float16 (ltlab.reports.archive); they come back as float32, exactly, so no reader computes in half
    precision (np.exp overflows float16 above 11). A file that is not an npz, or whose logits,
    labels and train_counts do not fit together, raises RunFileError."""
    path = Path(path)
    try:
        with np.load(path) as z:
            out = {k: z[k].astype(np.float32) if z[k].dtype == np.float16 else z[k] for k in z.files}
    except FileNotFoundError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise RunFileError(f"'{path}' is not a readable .npz ({type(e).__name__}: {str(e).splitlines()[0][:100]}): "
                           "expected the arrays logits, labels and train_counts ltlab saves") from None
    missing = [k for k in ("logits", "labels", "train_counts") if k not in out]
    if missing:
        raise RunFileError(f"'{path}' lacks the array(s) {', '.join(missing)}: expected logits (N, C), labels (N,) "
                           f"and train_counts (C,); it holds {', '.join(out) or 'nothing'}")
    f, y, c = out["logits"], out["labels"], out["train_counts"]
    if f.ndim != 2 or y.shape != (f.shape[0],) or c.shape != (f.shape[1],):
        raise RunFileError(f"'{path}': logits {f.shape}, labels {y.shape} and train_counts {c.shape} do not fit "
                           "together: expected (N, C), (N,) and (C,)")
    return out


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
    """A finished run; raises RunNotFinished for a run without summary.json, RunFileError for one
    whose files are unreadable or incomplete (config.yaml, summary.json, metrics.csv, predictions)."""
    path = Path(run_dir)
    if not path.is_dir():
        what = "is a file, not a run directory" if path.exists() else "does not exist"
        raise RunNotFinished(f"run directory '{path}' {what}")
    if not is_finished(path):
        raise RunNotFinished(f"run directory '{path}' has no summary.json: the run did not finish")
    check_complete(path)
    cfg = read_yaml(path / "config.yaml")
    summary = read_json(path / "summary.json")
    if summary.get("temperature") is not None and not (path / "predictions" / "val.npz").is_file():
        raise RunFileError(f"run directory '{path}' lacks predictions/val.npz, whose split its summary.json's "
                           "temperature was fitted on: the run directory is incomplete")
    metrics = read_metrics(path / "metrics.csv") if (path / "metrics.csv").exists() else pd.DataFrame()
    return Run(path, cfg, summary, metrics)


def check_complete(run_dir) -> None:
    """A finished run directory holds config.yaml and predictions/test.npz (the run directory contract)."""
    path = Path(run_dir)
    missing = [f for f in ("config.yaml", "predictions/test.npz") if not (path / f).is_file()]
    if missing:
        raise RunFileError(f"run directory '{path}' has summary.json but no {' or '.join(missing)}: the run "
                           "directory is incomplete (a finished run keeps config.yaml and predictions/test.npz)")
