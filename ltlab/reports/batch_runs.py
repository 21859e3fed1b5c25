"""A batch over finished runs: the analysis notebooks and the comparison, no training.

``run_dirs`` in an experiments YAML (globs, relative to the working directory) replaces
``notebook`` / ``grid``: every finished run they match (summary.json present) gets each
``analysis`` notebook, and the batch one ``compare`` over all of them, linked from
``reports/<name>/index.html`` like a training batch. ``analysis_runs`` (globs, optional)
narrows the per-run notebooks to some of them, the comparison still covering all (what
``make demo`` affords). ``--jobs N`` executes N notebooks at once, on this machine whatever
the executor. Meant for the results archive (experiments/demo_archive.yaml): archived runs
open like any other run.
"""
from __future__ import annotations

import glob
import os
from pathlib import Path

from ltlab.config import ConfigError
from ltlab.evaluation.run_dir import is_finished, load_run
from ltlab.io import atomic_write_json
from ltlab.reports.analysis import group_runs
from ltlab.reports.executors import pool_map
from ltlab.reports.html import write_batch_report
from ltlab.reports.notebook_run import execute


def finished_run_dirs(patterns, where: str) -> list[Path]:

    if isinstance(patterns, str):
        patterns = [patterns]
    found = [Path(p) for pat in patterns for p in sorted(glob.glob(str(pat)))]
    runs = [p for p in dict.fromkeys(found) if is_finished(p)]
    if not runs:
        raise ConfigError(f"{where}: run_dirs {patterns} match no finished run (a folder with summary.json); "
                          "archive runs first (ltlab archive) or fix the globs")
    return runs


def _name(run_dir: Path) -> str:
    parts = run_dir.resolve().parts
    return "_".join(parts[-2:]).replace(" ", "")     # <method>_seed<k> in an archive


def group_params(run_dirs) -> list[dict]:
    """Each run's index parameters: its seed, and as 'method' the label of its configuration
    (analysis.group_runs, as the comparison page groups them). Grouping by the method alone would
    average different configurations as if they were seeds: the archive's ce and mislas_stage1
    (CE with mixup) are both method ce, seed 0."""
    runs = [load_run(d) for d in run_dirs]
    label_of = {id(r): label for label, group in group_runs(runs).items() for r in group}
    return [{"method": label_of[id(r)], **({"seed": r.config["seed"]} if "seed" in r.config else {})} for r in runs]


def _execute(job: dict) -> dict:
    return execute(**job)


def execute_pages(jobs: list[dict], workers: int) -> list[dict]:
    """Status records of execute(**job) for each job, in order; up to `workers` notebooks at
    once (executors.pool_map: a page is mostly one core's work, kernel start, figures, HTML)."""
    if workers == 1 or len(jobs) < 2:
        return [_execute(j) for j in jobs]
    return pool_map(_execute, jobs, workers)


def analyse_runs(spec: dict, experiments, reports="reports", jobs: int = 1) -> Path:
    """Every analysis page and the comparison, up to `jobs` notebooks at once."""
    root = Path.cwd()
    where = f"experiments file '{experiments}'"
    run_dirs = finished_run_dirs(spec["run_dirs"], where)
    analysed = {d.resolve() for d in finished_run_dirs(spec.get("analysis_runs", spec["run_dirs"]), where)}
    if not analysed <= {d.resolve() for d in run_dirs}:
        raise ConfigError(f"{where}: analysis_runs {spec['analysis_runs']} match runs outside run_dirs")
    index_params = group_params(run_dirs)   # reads every run first: a broken one stops the batch before any page
    for nb in spec["analysis"] + ([spec["compare"]] if spec.get("compare") else []):
        if not (root / nb).is_file():
            raise ConfigError(f"{where}: notebook '{nb}' not found")
    kernel = spec.get("kernel", "ltlab")
    out_dir = Path(reports) / spec["name"]
    out_dir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TQDM_DISABLE", "1")
    common = {"kernel": kernel, "cwd": root, "timeout": spec.get("timeout")}
    pages = [(d, nb) for d in run_dirs if d.resolve() in analysed for nb in spec["analysis"]]
    page_jobs = [{"notebook": root / nb, "out_ipynb": out_dir / f"{_name(d)}__{Path(nb).stem}.ipynb",
                  "params": {"run_dir": str(d.resolve())}, **common} for d, nb in pages]
    if spec.get("compare"):   # it reads the runs, not the pages: it runs beside them
        page_jobs.append({"notebook": root / spec["compare"], "out_ipynb": out_dir / "compare.ipynb",
                          "params": {"run_dirs": [str(d.resolve()) for d in run_dirs]}, **common})
    done = execute_pages(page_jobs, jobs)
    if spec.get("compare"):
        spec["_compare"] = {"html": "compare.html", **done.pop()}
    records = []
    for d, params in zip(run_dirs, index_params):
        name = _name(d)
        rec = {"name": name, "params": params, "run_dir": str(d.resolve()), "status": "ok", "error": None,
               "analysis": []}
        for nb, a in [(nb, a) for (run, nb), a in zip(pages, done) if run == d]:
            rec["analysis"].append({"notebook": Path(nb).stem, "html": f"{name}__{Path(nb).stem}.html", **a})
            if a["status"] != "ok":
                rec.update(status="failed", error=f"{Path(nb).stem}: {a['error']}")
        print(f"[{spec['name']}] {name}: {rec['status']}" + (f" ({rec['error']})" if rec["error"] else ""), flush=True)
        atomic_write_json(out_dir / f"{name}.status.json", rec)
        records.append(rec)
    return write_batch_report(out_dir, spec, records)
