"""provenance.json: what produced a run, so a number can be traced to code, machine and command.

Written when training starts and completed just before summary.json: ltlab version, git commit
of the package's checkout (with a dirty flag for uncommitted changes to tracked files), torch,
device, dates, wall time, the command line, and the resolved schedule. ``reproduce`` is always
``ltlab train -c config.yaml``: config.yaml is the fully resolved config.
"""
from __future__ import annotations

import datetime as dt
import platform
import shlex
import subprocess
import sys
from pathlib import Path

import torch

from ltlab.evaluation.run_dir import PROVENANCE_FILE, read_json
from ltlab.io import atomic_write_json
from ltlab.version import __version__

FILE = PROVENANCE_FILE


def _git(*args) -> str | None:
    root = Path(__file__).resolve().parents[1]
    try:
        out = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def code_version() -> dict:
    """{'ltlab': version, 'git_commit': sha or None, 'git_dirty': bool or None}."""
    commit = _git("rev-parse", "HEAD")
    dirty = None
    if commit is not None:
        status = _git("status", "--porcelain", "--untracked-files=no", "--", "ltlab")
        dirty = bool(status) if status is not None else None
    return {"ltlab": __version__, "git_commit": commit, "git_dirty": dirty}


def device_name(device) -> str:
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _argv() -> str:
    if Path(sys.argv[0]).name == "ltlab":
        return shlex.join(["ltlab", *sys.argv[1:]])
    if "ipykernel" in Path(sys.argv[0]).name:
        return "a notebook (01_train through papermill or JupyterLab): rerun with the reproduce line"
    return f"{Path(sys.argv[0]).name} (the Python API): rerun with the reproduce line"


def start(run_dir, cfg, device, schedule: dict, world: int = 1) -> dict:
    """The record at the start of training (resumed runs keep their first start date)."""
    path = Path(run_dir) / FILE
    old = read_json(path) if path.is_file() else {}   # a resumed run's; unreadable: RunFileError, one line
    rec = {**code_version(), "torch": torch.__version__, "python": platform.python_version(),
           "device": device_name(device), "world_size": world,
           "started": old.get("started", now()), "resumed": old.get("resumed", []),
           "argv": old.get("argv") or _argv(),
           "reproduce": f"ltlab train -c {Path(run_dir) / 'config.yaml'}",
           "method": cfg.method, "dataset": cfg.dataset, "seed": cfg.seed, "schedule": schedule}
    if old:
        rec["resumed"] = old.get("resumed", []) + [now()]
    atomic_write_json(path, rec)
    return rec


def finish(run_dir, train_seconds: float, process_seconds: float) -> None:
    path = Path(run_dir) / FILE
    rec = read_json(path) if path.is_file() else {}
    rec.update({"finished": now(), "train_seconds": round(float(train_seconds), 1),
                "last_process_seconds": round(float(process_seconds), 1)})
    atomic_write_json(path, rec)
