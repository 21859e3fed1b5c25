"""The results queue: train an experiments grid's runs one after another, archive each as it finishes,
resume the rest later (within a time budget if given).

``scripts/results_queue.py`` (experiments/cifar10_lt_queue.yaml by default; --minutes 60 for a budget):

- jobs are the batch's grid points (ltlab.reports.batch.grid_points) in the file's order, seed-major
  (every method of seed 0, then seed 1...): the order is the priority. A stage two ("@name")
  waits for its stage one and is dropped if that failed;
- each job is ``ltlab train key=value ... --resume`` in its own process, ``parallel`` at once;
  a finished run (summary.json) is skipped, an interrupted one continues from its checkpoint;
- a job starts only if its estimate fits in the time left: remaining epochs x seconds per
  epoch + ``overhead``. Seconds per epoch are measured: the median of the ``seconds`` column of
  every metrics.csv under runs_root for that method (else for any method), else ``epoch_seconds``
  (a first guess, times ``parallel`` because parallel runs share the device);
- at the deadline the running jobs are interrupted (their checkpoints are at most one epoch old);
- every run that finishes is archived at once (ltlab.reports.archive; mislas's own stage one first, as
  ``mislas_stage1``), and finished runs not yet archived are archived at the start.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from ltlab.config import ConfigError, parse_override
from ltlab.evaluation.run_dir import is_finished
from ltlab.methods import METHODS
from ltlab.methods import resolve as config_mod
from ltlab.reports import archive
from ltlab.reports.batch import grid_points, load_experiments

NOTEBOOK_ONLY = ("overrides", "resume", "restart")


@dataclass
class Job:
    name: str
    config: dict
    run_dir: Path
    needs: str | None = None
    epochs: int = 0
    state: str = "pending"        # pending | running | finished | failed | skipped
    note: str = ""
    proc: subprocess.Popen | None = field(default=None, repr=False)


def planned_epochs(cfg: dict) -> int:
    """Epochs the run trains in all (0 for post-hoc methods; mislas: its stage one too)."""

    recipe = METHODS[cfg.get("method", "ce")]
    if not recipe.trains:
        return 0
    user = {k: v for k, v in cfg.items() if k != "stage1_run"}
    epochs = cfg.get("epochs") or recipe.defaults(user).get("epochs", 200)
    if cfg.get("method") == "mislas" and not cfg.get("stage1_run"):
        resolved = config_mod.from_dict(cfg)
        return int(resolved.epochs) + int((resolved.extra.get("mislas_stage1") or {}).get("epochs", 200))
    return int(epochs)


def jobs_from_spec(experiments, runs_root, sets=()) -> list[Job]:
    """The grid's jobs with notebook parameters turned into config keys (`overrides` merged,
    None = the method's default dropped) and `key=value` sets applied to every job."""

    spec = load_experiments(experiments)
    extra = dict(parse_override(s) for s in sets)
    jobs = []
    for name, params in grid_points(spec):
        cfg = {k: v for k, v in params.items() if k not in NOTEBOOK_ONLY and v is not None}
        cfg.update(params.get("overrides") or {})
        cfg.update(extra)
        needs = None
        if isinstance(cfg.get("stage1_run"), str) and cfg["stage1_run"].startswith("@"):
            needs = cfg["stage1_run"][1:]
            cfg["stage1_run"] = str((Path(runs_root) / needs).resolve())
        run_dir = (Path(runs_root) / name).resolve()
        cfg["run_dir"] = str(run_dir)
        jobs.append(Job(name, cfg, run_dir, needs, planned_epochs(cfg)))
    return jobs


def epochs_done(run_dir: Path) -> int:
    f = Path(run_dir) / "metrics.csv"
    return len(pd.read_csv(f)) if f.is_file() else 0


def epoch_seconds(runs_root, method: str, parallel: int, default: float) -> float:
    """Measured median seconds per epoch of `method` under runs_root (else of any method)."""
    per_method, every = [], []
    for f in Path(runs_root).glob("*/metrics.csv"):
        df = pd.read_csv(f)
        if df.empty or "seconds" not in df:
            continue
        cfg = yaml.safe_load((f.parent / "config.yaml").read_text()) if (f.parent / "config.yaml").is_file() else {}
        secs = df["seconds"].astype(float).tolist()
        every += secs
        if (cfg or {}).get("method") == method:
            per_method += secs
    if per_method or every:
        return float(np.median(per_method or every))
    return default * parallel


def estimate(job: Job, runs_root, parallel: int, default: float, overhead: float) -> float:
    left = max(job.epochs - epochs_done(job.run_dir), 0)
    return left * epoch_seconds(runs_root, job.config.get("method", "ce"), parallel, default) + overhead


def run_dirs(job: Job) -> list[Path]:
    """The job's run directories in training order: mislas without stage1_run trains its own stage one first."""
    own_stage1 = job.config.get("method") == "mislas" and not job.config.get("stage1_run")
    return ([Path(str(job.run_dir) + "_stage1")] if own_stage1 else []) + [job.run_dir]


def running_run_dirs(proc=Path("/proc")) -> set[str]:
    """The run_dir= of every `ltlab train` process alive on this machine (read from /proc)."""
    out = set()
    for f in proc.glob("[0-9]*/cmdline"):
        try:
            args = f.read_bytes().split(b"\0")
        except OSError:        # the process ended while we looked
            continue
        if b"train" in args and any(a == b"ltlab.cli" or a.endswith(b"/ltlab") for a in args):
            out.update(str(Path(a[len(b"run_dir="):].decode()).resolve()) for a in args if a.startswith(b"run_dir="))
    return out


def archived_copy(job: Job, out) -> Path | None:
    """The job's run in the results archive (committed, so it outlives the machine that trained it)."""
    try:
        d = archive.destination(out, job.config)
    except archive.ArchiveError:      # a dataset that names no benchmark: only the local run counts
        return None
    return d if is_finished(d) else None


def job_status(job: Job, running: set[str], known: set[str], now: float | None = None, out_root=None,
               earlier=()) -> dict:
    """done / training (epoch x of N, seconds an epoch, estimated finish) / interrupted / queued."""
    now = time.time() if now is None else now
    done = sum(epochs_done(d) for d in run_dirs(job))
    out = {"name": job.name, "method": job.config.get("method", "ce"), "epochs_done": done, "epochs": job.epochs}
    if is_finished(job.run_dir):
        archived = str(job.run_dir.resolve()) in known
        return {**out, "state": "done", "note": "archived" if archived else "finished, not archived yet"}
    for root in ([out_root] if out_root is not None else []) + list(earlier):
        if (copy := archived_copy(job, root)) is not None:
            return {**out, "epochs_done": job.epochs, "state": "done", "note": f"archived in {copy}"}
    current = next((d for d in run_dirs(job) if not is_finished(d)), job.run_dir)
    secs = None
    if (current / "metrics.csv").is_file():
        col = pd.read_csv(current / "metrics.csv").get("seconds")
        if col is not None and len(col):
            secs = float(np.median(col.astype(float).tail(10)))   # recent epochs: the machine's load now
    state = "training" if str(job.run_dir.resolve()) in running else ("interrupted" if done else "queued")
    out.update(state=state, seconds_per_epoch=secs)
    if state == "training" and secs is not None:
        out["finish"] = now + (job.epochs - done) * secs
    return out


def format_status(st: dict) -> str:
    line = f"{st['name']:26s} {st['state']:11s} epoch {st['epochs_done']:3d} of {st['epochs']:3d}"
    if st.get("seconds_per_epoch"):
        line += f"  {st['seconds_per_epoch']:5.1f} s/epoch"
    if st.get("finish"):
        left = (st["finish"] - time.time()) / 60
        line += f"  finishes ~{time.strftime('%H:%M', time.localtime(st['finish']))} (in {left:.0f} min)"
    if st.get("note"):
        line += f"  {st['note']}"
    return line


CARRY_FILES = ("checkpoint.pt", "metrics.csv", "config.yaml", "provenance.json")


def save_carry(jobs: list[Job], dest) -> list[str]:
    """Copy each unfinished, started run directory's resume state (checkpoint, metrics, config,
    provenance: about 4 MB for ResNet-32) into dest/<job>/, so that a session on a new machine resumes
    it (``restore_carry``) instead of starting over. The committed copy is the only one that survives
    a change of machine; finished runs travel as archived runs instead, except a finished stage one
    whose job has not finished (mislas): it is archived only with its stage two, so it travels whole."""
    saved = []
    for job in jobs:
        for d in run_dirs(job):
            stage_one = d != job.run_dir and is_finished(d) and not is_finished(job.run_dir)
            if not stage_one and (is_finished(d) or not (d / "checkpoint.pt").is_file()):
                continue
            out = Path(dest) / d.name
            if out.is_dir():
                shutil.rmtree(out)
            if stage_one:   # TensorBoard events are the one bulky file nothing downstream reads
                shutil.copytree(d, out, ignore=shutil.ignore_patterns("events.out.tfevents*"))
            else:
                out.mkdir(parents=True)
                for name in CARRY_FILES:
                    if (d / name).is_file():
                        shutil.copy2(d / name, out / name)
            saved.append(d.name)
    for stale in Path(dest).glob("*") if Path(dest).is_dir() else []:
        if stale.is_dir() and stale.name not in saved:   # its run finished or is gone: nothing to resume
            shutil.rmtree(stale)
    return saved


def unlanded(jobs: list[Job], committed) -> list[Job]:
    """Finished jobs that none of the committed archives holds: the carry does not take them (a
    finished run travels as an archived run), so they are lost with the machine unless landed."""
    return [j for j in jobs if is_finished(j.run_dir)
            and all(archived_copy(j, root) is None for root in committed)]


def restore_carry(jobs: list[Job], src) -> list[str]:
    """Put carried resume state (or a carried finished stage one) back where a job's run directory
    has none (never over a newer one)."""
    restored = []
    for job in jobs:
        for d in run_dirs(job):
            carried = Path(src) / d.name
            if not (carried / "checkpoint.pt").is_file() or (d / "checkpoint.pt").exists() or is_finished(d):
                continue
            shutil.copytree(carried, d, dirs_exist_ok=True)
            restored.append(d.name)
    return restored


def train_command(job: Job) -> list[str]:
    kv = [f"{k}={yaml.safe_dump(v, default_flow_style=True).strip().removesuffix('...').strip()}"
          for k, v in job.config.items() if k != "extra"]
    kv += [f"extra.{k}={yaml.safe_dump(v, default_flow_style=True).strip().removesuffix('...').strip()}"
           for k, v in (job.config.get("extra") or {}).items()]
    return [sys.executable, "-m", "ltlab.cli", "train", *kv, "--resume"]


def archive_job(job: Job, out, benchmark=None, known=None) -> list[Path]:
    """Archive a finished job (mislas: its own stage one first); an existing copy is kept."""

    known = archive.archived_sources(out) if known is None else known
    done = []
    own_stage1 = Path(str(job.run_dir) + "_stage1")
    if job.config.get("method") == "mislas" and is_finished(own_stage1) and str(own_stage1.resolve()) not in known:
        done.append(archive.archive_run(own_stage1, out, benchmark=benchmark, method="mislas_stage1", known=known))
    if str(job.run_dir.resolve()) not in known:
        done.append(archive.archive_run(job.run_dir, out, benchmark=benchmark, known=known))
    return done


def _interruptible() -> None:
    # a shell starting us in the background (`nohup ... &`) leaves SIGINT ignored, which the
    # child would inherit and so never see the deadline's interrupt: give it the default back
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(cmd, **kw) -> subprocess.Popen:
    """A job's process, leading its own process group, that SIGINT interrupts."""
    return subprocess.Popen(cmd, start_new_session=True, preexec_fn=_interruptible, **kw)


class Runner:
    def __init__(self, jobs, runs_root, out, *, minutes, parallel=1, default_epoch_seconds=1.0,
                 overhead=60.0, benchmark=None, launch=None, log=print, poll=2.0, busy=running_run_dirs,
                 earlier=()):
        self.jobs, self.runs_root, self.out = jobs, Path(runs_root), Path(out)
        # other archives whose runs count as done (the checkout's committed one when --out points
        # elsewhere): a new machine with an empty --out must not retrain what has already landed
        self.earlier = [Path(e) for e in earlier]
        self.deadline = time.monotonic() + 60.0 * minutes
        self.parallel, self.default, self.overhead = parallel, default_epoch_seconds, overhead
        self.benchmark, self.log, self.poll = benchmark, log, poll
        self.launch = launch or self._launch
        self.known = archive.archived_sources(self.out)
        self.errors: list[str] = []
        self.busy = busy                 # () -> run directories an `ltlab train` is training now
        self.stopped: int | None = None  # the signal that stopped the queue

    def _launch(self, job: Job) -> subprocess.Popen:
        job.run_dir.parent.mkdir(parents=True, exist_ok=True)
        logf = open(str(job.run_dir) + ".log", "ab")
        env = {**os.environ, "TQDM_DISABLE": "1"}
        return start(train_command(job), stdout=logf, stderr=subprocess.STDOUT, env=env)

    def _archive(self, job: Job) -> None:
        try:
            for d in archive_job(job, self.out, self.benchmark, self.known):
                self.log(f"archived {job.name} -> {d}")
        except (ConfigError, FileNotFoundError) as e:
            self.errors.append(f"{job.name}: archive failed: {e}")
            self.log(self.errors[-1])

    def _ready(self, job: Job) -> bool:
        if job.needs is None:
            return True
        dep = next(j for j in self.jobs if j.name == job.needs)
        if dep.state in ("failed", "skipped"):
            job.state, job.note = "skipped", f"stage one {dep.name} {dep.state}"
        return dep.state == "finished"

    def _next(self) -> Job | None:
        left = self.deadline - time.monotonic()
        for job in self.jobs:
            if job.state == "pending" and self._ready(job):
                need = estimate(job, self.runs_root, self.parallel, self.default, self.overhead)
                if need <= left:
                    return job
                job.note = f"needs ~{need / 60:.1f} min, {left / 60:.1f} left"
        return None

    def run(self) -> dict:
        """Train what fits, archive what finishes. SIGTERM or SIGINT stops the queue and, like the
        deadline, interrupts its trainers (each leads its own process group, so a signal to the queue
        alone would leave them training); their runs resume next time."""
        live = self.busy()
        taken = [j.name for j in self.jobs if not is_finished(j.run_dir) and str(j.run_dir.resolve()) in live]
        if taken:   # a queue stopped before its trainers could stop them: starting beside them would double a run
            raise ConfigError(f"{', '.join(taken)}: an `ltlab train` process is already training in its run "
                              "directory (left by a queue that was stopped without its trainer?): stop that "
                              "process group or let it finish, then start the queue again")
        handlers = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                handlers[sig] = signal.signal(sig, self._stop)
        try:
            return self._run()
        finally:
            for sig, h in handlers.items():
                signal.signal(sig, h)

    def _stop(self, signum, frame) -> None:
        self.stopped = signum

    def _run(self) -> dict:
        for job in self.jobs:
            if is_finished(job.run_dir):
                job.state = "finished"
                self._archive(job)
            elif any(archived_copy(job, root) is not None for root in (self.out, *self.earlier)):
                job.state, job.note = "finished", "archived earlier"   # trained on an earlier machine
        running: list[Job] = []
        while True:
            while self.stopped is None and len(running) < self.parallel and (job := self._next()) is not None:
                job.state, job.note = "running", ""
                job.proc = self.launch(job)
                running.append(job)
                self.log(f"started {job.name} ({job.epochs - epochs_done(job.run_dir)} epochs left)")
            if not running:
                break
            time.sleep(self.poll)
            for job in [j for j in running if j.proc.poll() is not None]:
                running.remove(job)
                ok = job.proc.returncode == 0 and is_finished(job.run_dir)
                job.state = "finished" if ok else "failed"
                job.note = "" if ok else f"exit {job.proc.returncode}, see {job.run_dir}.log"
                self.log(f"{job.state} {job.name} {job.note}".rstrip())
                if ok:
                    self._archive(job)
            if self.stopped is not None:
                self._interrupt(running, f"stopped by {signal.Signals(self.stopped).name}")
                break
            if time.monotonic() > self.deadline:
                self._interrupt(running)
                break
        return self.report()

    def _interrupt(self, running, why: str = "interrupted at the deadline") -> None:
        for job in running:     # each job leads its own process group (start_new_session)
            os.killpg(job.proc.pid, signal.SIGINT)
        for job in running:
            try:
                job.proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                job.proc.kill()
                job.proc.wait()
            job.state, job.note = "pending", f"{why} after {epochs_done(job.run_dir)} epochs"
            self.log(f"interrupted {job.name}: resumes next time")

    def report(self) -> dict:
        return {j.name: {"state": j.state, "note": j.note} for j in self.jobs}
