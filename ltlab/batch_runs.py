"""A batch over finished runs: the analysis notebooks and the comparison, no training.

``run_dirs`` in an experiments YAML (globs, relative to the working directory) replaces
``notebook`` / ``grid``: every finished run they match (summary.json present) gets each
``analysis`` notebook, and the batch one ``compare`` over all of them, linked from
``reports/<name>/index.html`` like a training batch. ``analysis_runs`` (globs, optional)
narrows the per-run notebooks to some of them, the comparison still covering all (what
``make demo`` affords). Meant for the results archive (experiments/demo_archive.yaml):
archived runs open like any other run.
"""
from __future__ import annotations

import glob
import os
from pathlib import Path

from ltlab.config import ConfigError
from ltlab.io import atomic_write_json


def finished_run_dirs(patterns, where: str) -> list[Path]:
    from ltlab.evaluate import is_finished

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


def analyse_runs(spec: dict, experiments, reports="reports") -> Path:
    from ltlab.batch import execute, write_index

    root = Path.cwd()
    where = f"experiments file '{experiments}'"
    run_dirs = finished_run_dirs(spec["run_dirs"], where)
    analysed = {d.resolve() for d in finished_run_dirs(spec.get("analysis_runs", spec["run_dirs"]), where)}
    if not analysed <= {d.resolve() for d in run_dirs}:
        raise ConfigError(f"{where}: analysis_runs {spec['analysis_runs']} match runs outside run_dirs")
    for nb in spec["analysis"] + ([spec["compare"]] if spec.get("compare") else []):
        if not (root / nb).is_file():
            raise ConfigError(f"{where}: notebook '{nb}' not found")
    kernel = spec.get("kernel", "ltlab")
    out_dir = Path(reports) / spec["name"]
    out_dir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TQDM_DISABLE", "1")
    records = []
    for d in run_dirs:
        name = _name(d)
        rec = {"name": name, "params": {}, "run_dir": str(d.resolve()), "status": "ok", "error": None,
               "analysis": []}
        for nb in spec["analysis"] if d.resolve() in analysed else []:
            stem = f"{name}__{Path(nb).stem}"
            a = execute(root / nb, out_dir / f"{stem}.ipynb", {"run_dir": str(d.resolve())}, kernel, root,
                        spec.get("timeout"))
            rec["analysis"].append({"notebook": Path(nb).stem, "html": f"{stem}.html", **a})
            if a["status"] != "ok":
                rec.update(status="failed", error=f"{Path(nb).stem}: {a['error']}")
        print(f"[{spec['name']}] {name}: {rec['status']}" + (f" ({rec['error']})" if rec["error"] else ""), flush=True)
        atomic_write_json(out_dir / f"{name}.status.json", rec)
        records.append(rec)
    if spec.get("compare"):
        rec = execute(root / spec["compare"], out_dir / "compare.ipynb",
                      {"run_dirs": [r["run_dir"] for r in records]}, kernel, root, spec.get("timeout"))
        spec["_compare"] = {"html": "compare.html", **rec}
    return write_index(out_dir, spec, records)
