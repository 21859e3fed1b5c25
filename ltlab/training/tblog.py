"""TensorBoard curves of a run: per-epoch metrics as event files in the run directory.

metrics.csv stays the source of truth. The event files are a view of it, rewritten from it
whenever a run (re)starts: a resumed run first truncates metrics.csv to its checkpoint's
epoch, and replaying those rows into fresh event files leaves no duplicate or stale steps in
the files themselves (TensorBoard's purge_step only hides them at read time). Only the main
process writes, so `tensorboard --logdir runs/` shows every run of a batch once.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

# metrics.csv / summary.json column -> TensorBoard tag
EPOCH_TAGS = {"train_loss": "train/loss", "lr": "train/lr", "test_top1": "test/top1",
              "test_balanced_acc": "test/balanced_acc", "test_ece": "test/ece"}
FINAL_TAGS = {"many": "test/many", "medium": "test/medium", "few": "test/few"}
EVENT_GLOB = "events.out.tfevents.*"


class EpochLog:
    """Open with the run directory (metrics.csv already truncated on resume); call epoch(row)
    after each metrics.csv row, final(summary, epoch) once summary.json exists, then close()."""

    def __init__(self, run_dir: Path, enabled: bool = True):
        self.writer = None
        if not enabled:
            return
        from torch.utils.tensorboard import SummaryWriter

        run_dir = Path(run_dir)
        for f in run_dir.glob(EVENT_GLOB):
            f.unlink()
        self.writer = SummaryWriter(log_dir=str(run_dir))
        metrics = run_dir / "metrics.csv"
        if metrics.exists():
            for row in pd.read_csv(metrics).to_dict("records"):
                self.epoch(row)

    def _scalars(self, row: dict, tags: dict, step: int):
        for key, tag in tags.items():
            value = row.get(key)
            if value is not None and not pd.isna(value):
                self.writer.add_scalar(tag, float(value), int(step))

    def epoch(self, row: dict):
        if self.writer is not None:
            self._scalars(row, EPOCH_TAGS, row["epoch"])
            self.writer.flush()   # live curves: TensorBoard reads what is on disk

    def final(self, summary: dict, epoch: int):
        if self.writer is not None:
            self._scalars(summary, FINAL_TAGS, epoch)

    def close(self):
        if self.writer is not None:
            self.writer.close()
