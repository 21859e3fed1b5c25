"""Executing one notebook with papermill, and one grid point of a batch (its notebook, then its
analysis notebooks), each leaving a status record and an HTML page beside the executed notebook.

An executor (ltlab.reports.executors) only has to get ``run_point`` called, in dependency order.
"""
from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

from ltlab.evaluation.run_dir import is_finished
from ltlab.io import atomic_write_json, atomic_write_text
from ltlab.reports.html import notebook_html


def render_html(ipynb: Path) -> Path:
    """Notebook -> HTML without input cells (a report for readers, not the code)."""
    out = ipynb.with_suffix(".html")
    atomic_write_text(out, notebook_html(ipynb))
    return out


# papermill#511: a kernel started next to others can lose its ZMQ ports to them and die
# before running a cell; such a start is retried (nothing of the run has executed yet).
KERNEL_START_ERRORS = ("Address already in use", "Kernel died before replying to kernel_info",
                       "Kernel didn't respond")


def _kernel_config():
    """Ask jupyter_client to give the kernel CurveZMQ keys where it can (jupyter_client >= 8.10,
    libzmq with curve, a kernelspec that declares it, as ipykernel's do). Without them ipykernel 7
    logs 'Kernel is running over TCP without encryption' once per notebook into the batch's
    output; the other cure it names, IPC sockets, are named in the working directory and would
    race between concurrent kernels (papermill#511). Where curve is missing the warning stays."""
    import zmq
    from jupyter_client.manager import KernelManager
    from traitlets.config import Config

    if not zmq.has("curve") or not KernelManager.class_traits().get("transport_encryption"):
        return {}
    return {"config": Config({"KernelManager": {"transport_encryption": "auto"}})}


def execute(notebook, out_ipynb: Path, params: dict, kernel: str, cwd, timeout=None, attempts=3) -> dict:
    """Run one notebook with papermill; returns a status record, never raises on failure."""
    import papermill  # jupyter's stack is heavy: loaded by the commands that execute notebooks

    engine = _kernel_config()
    t0 = time.time()
    for attempt in range(attempts):
        status = {"status": "ok", "error": None}
        try:
            papermill.execute_notebook(str(notebook), str(out_ipynb), parameters=params, kernel_name=kernel,
                                       cwd=str(cwd), progress_bar=False, execution_timeout=timeout, **engine)
        except papermill.PapermillExecutionError as e:
            status = {"status": "failed", "error": f"{e.ename}: {e.evalue}".strip()[:500]}
        except KeyboardInterrupt:
            raise
        except Exception as e:  # kernel died, missing kernel...
            status = {"status": "failed", "error": f"{type(e).__name__}: {e}".splitlines()[0][:500]}
            if attempt + 1 < attempts and any(m in str(e) for m in KERNEL_START_ERRORS):
                time.sleep(1.0 + 2.0 * attempt)
                continue
        break
    if out_ipynb.exists():
        try:
            render_html(out_ipynb)
        except Exception as e:
            status.setdefault("render_error", str(e)[:200])
    status["seconds"] = round(time.time() - t0, 1)
    return status


def read_status(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def run_point(task: dict) -> dict:
    """Execute one grid point (here, in a pool worker or in a SLURM task) and write its status
    file: 'running' with its start, then the result with its end."""
    out_dir, name, run_dir = Path(task["out_dir"]), task["name"], Path(task["run_dir"])
    status_file = out_dir / f"{name}.status.json"
    # a requeued SLURM task finds its own record: it resumes, it never restarts a second time
    restart = task["restart"] and read_status(status_file).get("token") != task["token"]
    rec = {"name": name, "params": task["params"], "digest": task["digest"], "run_dir": str(run_dir),
           "ipynb": f"{name}.ipynb", "html": f"{name}.html", "token": task["token"], "status": "running",
           "error": None, "started": time.time(), "host": socket.gethostname(), "pid": os.getpid()}
    if os.environ.get("SLURM_ARRAY_JOB_ID"):
        rec["slurm_job"] = f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    atomic_write_json(status_file, rec)
    print(f"[{task['batch']}] {name}: running", flush=True)
    params = {**task["params"], "restart": restart}
    try:
        rec.update(execute(task["notebook"], out_dir / f"{name}.ipynb", params, task["kernel"], task["root"],
                           task["timeout"]))
    except KeyboardInterrupt:
        rec.update(status="interrupted", error="interrupted by the user (Ctrl-C)", finished=time.time())
        atomic_write_json(status_file, rec)
        raise
    if rec["status"] == "ok" and not is_finished(run_dir):
        rec.update(status="failed", error="the notebook finished but the run has no summary.json")
    rec["analysis"] = []
    if rec["status"] == "ok":
        for nb in task["analysis"]:
            stem = f"{name}__{Path(nb).stem}"
            a = execute(Path(task["root"]) / nb, out_dir / f"{stem}.ipynb", {"run_dir": str(run_dir)},
                        task["kernel"], task["root"])
            rec["analysis"].append({"notebook": Path(nb).stem, "html": f"{stem}.html", **a})
    rec["finished"] = time.time()
    atomic_write_json(status_file, rec)
    print(f"[{task['batch']}] {name}: {rec['status']}" + (f" ({rec['error']})" if rec["error"] else ""), flush=True)
    return rec
