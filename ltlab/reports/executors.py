"""Where a batch's grid points execute: `local` (N papermill processes on this machine) or
`slurm` (one job array per dependency stage, submitted through submitit).

Either way each grid point is one call of ltlab.reports.notebook_run.run_point, which executes the notebook
and writes the point's status file; the batch rebuilds its index from those files and the
run directories, so an executor only has to get run_point called, in dependency order.

An experiments YAML may carry the options (flags of `ltlab batch` override them):

    executor: {name: slurm, jobs: 8, partition: gpu, time: 120, gpus: 1, cpus: 8, mem: 32G}
"""
from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import subprocess
import time
from pathlib import Path

from ltlab.config import ConfigError
from ltlab.io import atomic_write_json, core_share
from ltlab.reports.notebook_run import run_point

DEFAULTS = {"name": "local", "jobs": 1, "partition": None, "time": 60, "gpus": 0, "cpus": 2, "mem": None}
STAGGER_S = 2.0   # between the first local starts (papermill#511: kernels racing for ports)
POLL_S = 5.0
ALIVE = ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED", "RESIZING", "SUSPENDED", "REQUEUE_HOLD",
         "REQUEUE_FED", "SIGNALING", "STAGE_OUT", "STOPPED")


def options(section, flags: dict, where: str) -> dict:
    """DEFAULTS < the YAML's `executor:` section < flags that were given (not None)."""
    section = section or {}
    if not isinstance(section, dict):
        raise ConfigError(f"{where}: 'executor' must be a mapping of {', '.join(DEFAULTS)}, got {section!r}")
    for key in section:
        if key not in DEFAULTS:
            raise ConfigError(f"{where}: executor key '{key}' is unknown; allowed: {', '.join(DEFAULTS)}")
    opts = {**DEFAULTS, **section, **{k: v for k, v in flags.items() if v is not None}}
    if opts["name"] not in ("local", "slurm"):
        raise ConfigError(f"{where}: executor '{opts['name']}' is unknown; allowed: local, slurm")
    for key in ("jobs", "time", "gpus", "cpus"):
        if not isinstance(opts[key], int) or isinstance(opts[key], bool) or opts[key] < (0 if key == "gpus" else 1):
            raise ConfigError(f"{where}: executor key '{key}' = {opts[key]!r} must be an integer >= "
                              f"{0 if key == 'gpus' else 1}" + (" (minutes)" if key == "time" else ""))
    return opts


def stages(tasks: list[dict]) -> list[list[dict]]:
    """Tasks grouped so that every task's '@' dependencies among the tasks lie in earlier groups
    (grid_points orders a run after the runs it names)."""
    stage_of = {}
    for t in tasks:
        stage_of[t["name"]] = 1 + max((stage_of[d] for d in t["deps"] if d in stage_of), default=-1)
    return [[t for t in tasks if stage_of[t["name"]] == s] for s in range(1 + max(stage_of.values(), default=-1))]


# ---------------------------------------------------------------------------- local
def visible_gpus() -> list[str]:
    """GPUs this process may hand out: CUDA_VISIBLE_DEVICES if set, else every device nvidia-smi lists."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g for g in env.split(",") if g.strip()]
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


def _in_worker(fn, arg, gpu, delay: float, threads: int):
    time.sleep(delay)
    if gpu is not None:   # the papermill kernel inherits it: one GPU per concurrent run
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))   # a user's own setting wins
    return fn(arg)


def pool_map(fn, args: list, jobs: int, gpus: list | None = None, first: int = 0) -> list:
    """[fn(a) for a in args], up to `jobs` at once, each in a fresh spawned process (its own
    papermill and kernel; no CUDA / thread state inherited from the driver) with the cores
    shared out and the first starts staggered (papermill#511); GPU (first + i) mod len(gpus)
    for the i-th call. fn must be importable (a module-level function)."""
    gpus = gpus or [None]
    ctx = multiprocessing.get_context("spawn")
    with cf.ProcessPoolExecutor(max_workers=min(jobs, len(args)), mp_context=ctx, max_tasks_per_child=1) as pool:
        futures = [pool.submit(_in_worker, fn, a, gpus[(first + i) % len(gpus)],
                               STAGGER_S * i if i < jobs else 0.0, core_share(jobs)) for i, a in enumerate(args)]
        try:
            return [f.result() for f in futures]
        except KeyboardInterrupt:
            pool.shutdown(wait=True, cancel_futures=True)
            raise


def run_local(tasks: list[dict], jobs: int) -> None:
    """Stage by stage, up to `jobs` points at once, each in a fresh process (pool_map); GPUs
    round-robin over the points when there are several. jobs=1 runs in this process, one
    after another."""
    if jobs == 1:
        for t in tasks:
            run_point(t)
        return
    gpus = visible_gpus()
    gpus = gpus if len(gpus) > 1 else [None]
    n = 0
    for stage in stages(tasks):
        pool_map(run_point, stage, jobs, gpus, first=n)
        n += len(stage)


# ---------------------------------------------------------------------------- slurm
class _SlurmPoint:
    """submitit calls checkpoint() when SLURM signals a timeout or preemption; returning the
    same call requeues it, and run_point's notebook then resumes from the run's checkpoint.pt."""

    def __call__(self, task: dict) -> dict:
            # torch would start a thread per core of the node, not of the allocation
        if os.environ.get("SLURM_CPUS_PER_TASK"):
            os.environ.setdefault("OMP_NUM_THREADS", os.environ["SLURM_CPUS_PER_TASK"])
        return run_point(task)

    def checkpoint(self, task: dict):
        import submitit

        return submitit.helpers.DelayedSubmission(self, task)


def _need_slurm():
    import shutil

    missing = [c for c in ("sbatch", "squeue", "scontrol") if not shutil.which(c)]
    if missing:
        raise ConfigError(f"executor 'slurm': {', '.join(missing)} not found on PATH; run on a SLURM login node "
                          "or use --executor local")


def slurm_states(job_ids) -> dict:
    """SLURM state of each job id ('123' or '123_4') that squeue or scontrol still knows."""
    ids = sorted({str(j) for j in job_ids if j})
    if not ids:
        return {}
    _need_slurm()
    out = subprocess.run(["squeue", "-h", "-o", "%i %T", "-j", ",".join(ids)], capture_output=True, text=True).stdout
    states = dict(line.split()[:2] for line in out.splitlines() if len(line.split()) >= 2)
    for j in ids:
        if j not in states:   # finished: scontrol remembers it for MinJobAge, without accounting
            info = subprocess.run(["scontrol", "-o", "show", "job", j], capture_output=True, text=True).stdout
            state = next((w.split("=", 1)[1] for w in info.split() if w.startswith("JobState=")), None)
            if state:
                states[j] = state
    return states


def job_file(out_dir: Path) -> Path:
    return out_dir / "slurm" / "jobs.json"


def read_jobs(out_dir: Path) -> dict:
    import json

    f = job_file(out_dir)
    return json.loads(f.read_text()) if f.exists() else {}


def run_slurm(tasks: list[dict], opts: dict, out_dir: Path, batch: str) -> None:
    """One array per dependency stage, each after the previous (afterany: a failed stage one
    is recorded, its stage two then fails with a clear error instead of waiting forever).
    Points whose earlier job is still queued or running are waited for, not submitted again."""
    import submitit

    _need_slurm()
    jobs = read_jobs(out_dir)
    alive = {j for j, s in slurm_states(jobs[t["name"]]["job"] for t in tasks if t["name"] in jobs).items()
             if s in ALIVE}
    ex = submitit.SlurmExecutor(folder=out_dir / "slurm", max_num_timeout=3)
    resources = {"time": opts["time"], "cpus_per_task": opts["cpus"], "array_parallelism": opts["jobs"],
                 "job_name": f"ltlab-{batch}", "nodes": 1, "ntasks_per_node": 1}
    resources.update({k: v for k, v in (("partition", opts["partition"]), ("mem", opts["mem"]),
                                         ("gpus_per_node", opts["gpus"] or None)) if v})
    previous = []
    for stage in stages(tasks):
        adopted = [t for t in stage if t["name"] in jobs and jobs[t["name"]]["job"] in alive]
        fresh = [t for t in stage if t not in adopted]
        ex.update_parameters(**resources, dependency="afterany:" + ":".join(previous) if previous else None)
        for t in fresh:   # before submitting: the task's own 'running' record must come after this one
            atomic_write_json(out_dir / f"{t['name']}.status.json", {
                **{k: t[k] for k in ("name", "params", "digest", "run_dir", "token")}, "status": "queued",
                "error": None, "ipynb": f"{t['name']}.ipynb", "html": f"{t['name']}.html"})
        submitted = ex.map_array(_SlurmPoint(), fresh) if fresh else []
        for t, job in zip(fresh, submitted):
            jobs[t["name"]] = {"job": job.job_id, "token": t["token"], "stdout": str(job.paths.stdout),
                               "stderr": str(job.paths.stderr)}
        atomic_write_json(job_file(out_dir), jobs)
        previous = sorted({jobs[t["name"]]["job"].split("_")[0] for t in fresh}
                          | {jobs[t["name"]]["job"] for t in adopted})
        if fresh:
            print(f"[{batch}] submitted {len(fresh)} run(s) as SLURM job {submitted[0].job_id.split('_')[0]}, "
                  f"at most {opts['jobs']} at once", flush=True)
    wait_slurm([jobs[t["name"]]["job"] for t in tasks], batch)


def wait_slurm(job_ids: list, batch: str) -> None:
    pending = set(job_ids)
    last = None
    while pending:
        states = slurm_states(pending)
        pending = {j for j in pending if states.get(j) in ALIVE}
        counts = f"{sum(states.get(j) == 'RUNNING' for j in pending)} running, {len(pending)} not finished"
        if counts != last:
            print(f"[{batch}] SLURM: {counts}", flush=True)
            last = counts
        if pending:
            time.sleep(POLL_S)


def settle(rec: dict, job: dict | None) -> dict:
    """A record as the index shows it: a point whose SLURM task ended without writing its
    result (cancelled, out of memory, node failure, requeued too often) counts as failed, with
    the task's state and log paths; a queued or running one shows SLURM's current state."""
    if job:
        rec = {**rec, "slurm_job": job["job"], "logs": [job["stdout"], job["stderr"]]}
    if rec.get("status") not in ("queued", "running"):
        if job and rec.get("status") == "failed":
            rec["error"] = f"{rec.get('error') or ''} (logs: {job['stdout']}, {job['stderr']})".strip()
        return rec
    if not job:
        return rec   # a local run that is executing now (or was killed with its driver)
    state = slurm_states([job["job"]]).get(job["job"])
    if state in ALIVE:
        return {**rec, "status": "running" if state == "RUNNING" else "queued"}
    return {**rec, "status": "failed",
            "error": f"SLURM task {job['job']} ended without a result ({state or 'state no longer known'}); "
                     f"logs: {job['stdout']}, {job['stderr']}"}
