"""checkpoint.pt: a training state (model, optimizer, epoch...) written atomically, read back safely."""
from __future__ import annotations

import io
from pathlib import Path

import torch

from ltlab.io import atomic_write_bytes, is_main


def atomic_torch_save(path, obj) -> None:
    if is_main():
        buf = io.BytesIO()
        torch.save(obj, buf)
        atomic_write_bytes(Path(path), buf.getvalue())


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read (truncated, corrupt, wrong content)."""


def load_checkpoint(path, map_location="cpu") -> dict:
    """torch.load with weights_only=True: a checkpoint holds tensors and plain data only."""
    path = Path(path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as e:  # torch raises several types for truncated / corrupt zips
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"checkpoint '{path}' is unreadable ({first[:160]}); delete it or pass --restart to start over"
        ) from None
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError(f"checkpoint '{path}' does not hold an ltlab training state; pass --restart to start over")
    return state
