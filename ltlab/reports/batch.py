"""Batch runs: papermill over a grid of notebook parameters, rendered to HTML reports.

An experiments YAML names a notebook, base parameters and a grid:

    name: demo                         # -> reports/demo/ and runs/demo/
    notebook: notebooks/01_train.ipynb
    parameters: {dataset: demo, epochs: 15}
    grid: {method: [ce, balanced_softmax], seed: [0, 1]}
    runs:                              # optional: named runs, each crossed with the grid
      - {name: stage1, parameters: {method: ce}}
      - {name: crt, parameters: {method: crt, stage1_run: "@stage1"}}
    analysis: [notebooks/02_energy.ipynb]    # optional, executed per finished run
    compare: notebooks/05_compare.ipynb      # optional, once per batch over all runs
    run_dirs: [experiments/results/cifar10_lt_if100/*/seed*]   # instead of notebook/grid: analyse
                                       # these finished runs (globs), e.g. an archive (batch_runs.py)
    analysis_runs: [.../ce/seed*]      # optional with run_dirs: the analysis on these only

Every grid point runs in its own papermill execution; a failure is recorded and the
batch goes on. A run counts as done only when its run directory has summary.json and it
was made with the same parameters; a second invocation executes only the others.
A string parameter "@NAME" is the run directory of the run NAME of the same grid point,
which must come earlier in `runs` (so a stage-two run names its stage one).
"""
from __future__ import annotations

import hashlib
import itertools
import json
import os
import time
from pathlib import Path

from ltlab.config import ConfigError, load_yaml
from ltlab.evaluation.run_dir import is_finished
from ltlab.reports import executors
from ltlab.reports.batch_runs import analyse_runs
from ltlab.reports.experiments_check import check_kernel, check_run_entry, check_spec, check_training_point
from ltlab.reports.html import write_batch_report
from ltlab.reports.notebook_run import execute, read_status, render_html, run_point  # noqa: F401 (render_html, run_point: the batch API)

KEYS = {"name", "notebook", "parameters", "grid", "runs", "analysis", "compare", "kernel", "runs_root", "timeout",
        "executor", "run_dirs", "analysis_runs"}


def load_experiments(path) -> dict:
    spec = load_yaml(path)
    for key in spec:
        if key not in KEYS:
            raise ConfigError(f"experiments file '{path}': unknown key '{key}'; allowed: {', '.join(sorted(KEYS))}")
    # run_dirs: finished (e.g. archived) runs to analyse instead of training (ltlab/reports/batch_runs.py)
    for key in ("name",) + (() if spec.get("run_dirs") else ("notebook",)):
        if not isinstance(spec.get(key), str) or not spec[key]:
            raise ConfigError(f"experiments file '{path}': '{key}' must be a non-empty string")
    spec.setdefault("parameters", {})
    spec.setdefault("grid", {})
    spec.setdefault("analysis", [])
    if not isinstance(spec["parameters"], dict) or not isinstance(spec["grid"], dict):
        raise ConfigError(f"experiments file '{path}': 'parameters' and 'grid' must be mappings")
    for key, values in spec["grid"].items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"experiments file '{path}': grid key '{key}' must be a non-empty list, got {values!r}")
    runs = spec.setdefault("runs", [])
    check_spec(spec, path)
    names = []
    for r in runs:
        if not isinstance(r, dict) or set(r) - {"name", "parameters"} or not isinstance(r.get("name"), str):
            raise ConfigError(f"experiments file '{path}': each entry of 'runs' must be {{name: str, parameters: {{...}}}}, "
                              f"got {r!r}")
        check_run_entry(r, names, path)
        for key, value in (r.get("parameters") or {}).items():
            if isinstance(value, str) and value.startswith("@") and value[1:] not in names:
                raise ConfigError(f"experiments file '{path}': run '{r['name']}' parameter '{key}' = '{value}' names "
                                  f"no earlier run; allowed: {', '.join('@' + n for n in names) or 'none'}")
        names.append(r["name"])
    return spec


def notebook_parameters(notebook) -> dict:
    """Names and defaults of a notebook's `parameters` cell."""
    import papermill
    from nbformat import ValidationError  # JSON, but not a notebook

    try:
        found = papermill.inspect_notebook(str(notebook))
    except (OSError, ValueError, TypeError, AttributeError, KeyError, ValidationError) as e:
        first = (str(e).splitlines() or [""])[0][:100]
        raise ConfigError(f"notebook '{notebook}' is not a readable Jupyter notebook ({type(e).__name__}: {first}): "
                          "expected an .ipynb file (built from notebooks/src with jupytext)") from None
    return {name: p["default"] for name, p in found.items()}


def check_parameters(notebook, params: dict, where: str) -> None:
    """papermill only warns about unknown parameters; a typo here must stop the batch."""
    import difflib

    known = notebook_parameters(notebook)
    for key in params:
        if key not in known:
            near = difflib.get_close_matches(key, known, n=1)
            hint = f" (did you mean '{near[0]}'?)" if near else ""
            raise ConfigError(f"{where}: parameter '{key}' is not a parameter of {notebook}{hint}; "
                              f"allowed: {', '.join(known)}")


def _run_name(run: str, gname: str) -> str:
    return ("_".join(n for n in (run, gname) if n) or "run").replace("/", "-").replace(" ", "")


def grid_points(spec: dict) -> list[tuple[str, dict]]:
    """(run name, parameters) in execution order: each named run (if any) crossed with the grid.
    A parameter '@NAME' becomes '@' + the full name of run NAME at the same grid point."""
    keys = list(spec["grid"])
    points = []
    for values in itertools.product(*(spec["grid"][k] for k in keys)) if keys else [()]:
        point = dict(zip(keys, values))
        gname = "_".join(f"{k}-{v}" for k, v in point.items())
        for r in spec.get("runs") or [{"name": "", "parameters": {}}]:
            params = {**spec["parameters"], **(r.get("parameters") or {}), **point}
            params = {k: "@" + _run_name(v[1:], gname) if isinstance(v, str) and v.startswith("@") else v
                      for k, v in params.items()}
            points.append((_run_name(r["name"], gname), params))
    return points


def resolve_refs(params: dict, runs_root: Path) -> dict:
    """'@NAME' -> the run directory of run NAME of this batch."""
    return {k: str((runs_root / v[1:]).resolve()) if isinstance(v, str) and v.startswith("@") else v
            for k, v in params.items()}


def _digest(params: dict) -> str:
    return hashlib.sha1(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()[:12]


def run_batch(experiments, reports="reports", rerun=False, executor: dict | None = None, status=False) -> Path:
    """Execute the grid's unfinished points with the executor (see ltlab.reports.executors), then
    write reports/<name>/index.html from the status files and run directories; returns its
    path. status=True executes nothing: it prints each point's state and rewrites the index."""
    import uuid


    spec = load_experiments(experiments)
    opts = executors.options(spec.get("executor"), executor or {}, f"experiments file '{experiments}'")
    if spec.get("run_dirs"):

        return analyse_runs(spec, experiments, reports, jobs=opts["jobs"])
    root = Path.cwd()
    notebook = (root / spec["notebook"]).resolve()
    if not notebook.is_file():
        raise ConfigError(f"experiments file '{experiments}': notebook '{spec['notebook']}' not found")
    points = grid_points(spec)
    for name, params in points:
        check_parameters(notebook, params, f"experiments file '{experiments}', run '{name}'")
    known = notebook_parameters(notebook)
    for name, params in points:
        check_training_point(known, params, f"experiments file '{experiments}', run '{name}'")
    check_kernel(spec.get("kernel", "ltlab"), experiments)
    for nb in spec["analysis"] + ([spec["compare"]] if spec.get("compare") else []):
        if not (root / nb).is_file():
            raise ConfigError(f"experiments file '{experiments}': notebook '{nb}' not found")
    out_dir = (Path(reports) / spec["name"]).resolve()
    runs_root = Path(spec.get("runs_root", "runs")) / spec["name"]
    out_dir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TQDM_DISABLE", "1")  # progress bars would flood the saved notebooks

    tasks, token = [], uuid.uuid4().hex
    for name, params in points:
        run_dir = (runs_root / name).resolve()
        deps = [v[1:] for v in params.values() if isinstance(v, str) and v.startswith("@")]
        params = {**resolve_refs(params, runs_root), "run_dir": str(run_dir)}
        prev = read_status(out_dir / f"{name}.status.json")
        digest = _digest(params)
        done = prev.get("digest") == digest and prev.get("status") == "ok" and is_finished(run_dir)
        if status or (done and not rerun):
            continue
        # a different parameter set under the same name starts the run over
        tasks.append({"name": name, "batch": spec["name"], "params": params, "digest": digest,
                      "run_dir": str(run_dir), "deps": deps, "token": token, "notebook": str(notebook),
                      "out_dir": str(out_dir), "kernel": spec.get("kernel", "ltlab"), "root": str(root),
                      "timeout": spec.get("timeout"), "analysis": spec["analysis"],
                      "restart": prev.get("digest") not in (None, digest) or rerun})
    try:
        if tasks and opts["name"] == "slurm":
            executors.run_slurm(tasks, opts, out_dir, spec["name"])
        elif tasks:
            executors.run_local(tasks, opts["jobs"])
    except KeyboardInterrupt:
        write_index(out_dir, spec, collect(points, out_dir, {t["name"] for t in tasks}))
        raise
    records = collect(points, out_dir, {t["name"] for t in tasks})
    if status:
        print_status(records)
    elif spec.get("compare"):
        dirs = [r["run_dir"] for r in records if r["status"] == "ok"]
        rec = execute(root / spec["compare"], out_dir / "compare.ipynb", {"run_dirs": dirs}, spec.get("kernel", "ltlab"),
                      root)
        spec["_compare"] = {"html": "compare.html", **rec}
    return write_index(out_dir, spec, records)


def collect(points, out_dir: Path, executed: set) -> list[dict]:
    """Each point's record from its status file, checked against its run directory."""

    jobs = executors.read_jobs(out_dir)
    records = []
    for name, params in points:
        rec = read_status(out_dir / f"{name}.status.json") or {
            "name": name, "params": params, "status": "missing", "error": None, "run_dir": "",
            "ipynb": f"{name}.ipynb", "html": f"{name}.html"}
        rec = executors.settle(rec, jobs.get(name) if rec.get("token") == jobs.get(name, {}).get("token") else None)
        if rec["status"] == "ok" and not is_finished(rec["run_dir"]):
            rec = {**rec, "status": "failed", "error": "the run directory has no summary.json"}
        records.append({**rec, "cached": rec["status"] == "ok" and name not in executed})
    return records


def print_status(records: list[dict]) -> None:
    counts = {}
    for r in records:
        state = "done" if r["status"] == "ok" else r["status"]
        counts[state] = counts.get(state, 0) + 1
        when = time.strftime("%H:%M:%S", time.localtime(r["started"])) if r.get("started") else ""
        job = r.get("slurm_job", "")
        print(f"{r['name']:40s} {state:9s} {job:12s} {when:8s} {r.get('error') or ''}".rstrip())
    print(", ".join(f"{n} {s}" for s, n in sorted(counts.items())))


def write_index(out_dir: Path, spec: dict, records: list) -> Path:
    """reports/<name>/index.html (see ltlab.reports.html) and the reports/index.html landing page."""
    return write_batch_report(out_dir, spec, records)
