"""One trainer per run directory.

Two processes training into one run directory interleave its checkpoint.pt and metrics.csv
rows (it happened: a results queue was stopped, its trainer lived on in its own process group,
and the restarted queue resumed the same run beside it). A trainer holds an exclusive flock on
the run directory for as long as it runs; a second one is refused. The kernel drops the lock
when the process ends, kill -9 included, so a killed run never leaves a stale lock behind.
"""
from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from pathlib import Path

from ltlab.config import ConfigError


@contextmanager
def run_dir_lock(run_dir, enabled: bool = True):
    """Hold the run directory's lock inside the block (creating the directory; an empty one
    this block created is removed at its end, so a run refused before writing leaves nothing).
    ``enabled=False`` (the other processes of a torchrun job) holds nothing."""
    if not enabled:
        yield
        return
    path = Path(run_dir)
    created = not path.exists()
    path.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(f"run directory '{path}' is being trained by another process (it holds the "
                              "directory's lock): wait for it to end or stop it; two trainers in one run "
                              "directory would interleave its checkpoint and metrics") from None
        yield
    finally:
        os.close(fd)   # releases the lock
        if created:
            try:
                path.rmdir()   # only if still empty
            except OSError:
                pass
