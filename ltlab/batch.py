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

Every grid point runs in its own papermill execution; a failure is recorded and the
batch goes on. A run counts as done only when its run directory has summary.json and it
was made with the same parameters; a second invocation executes only the others.
A string parameter "@NAME" is the run directory of the run NAME of the same grid point,
which must come earlier in `runs` (so a stage-two run names its stage one).
"""
from __future__ import annotations

import hashlib
import html
import itertools
import json
import os
import time
from pathlib import Path

import yaml

from ltlab.config import ConfigError, load_yaml
from ltlab.experiments_check import check_kernel, check_run_entry, check_spec, check_training_point
from ltlab.io import atomic_write_json, atomic_write_text

KEYS = {"name", "notebook", "parameters", "grid", "runs", "analysis", "compare", "kernel", "runs_root", "timeout"}
SUMMARY_COLUMNS = ("top1", "balanced_acc", "many", "medium", "few", "ece", "nll", "seconds")


def load_experiments(path) -> dict:
    spec = load_yaml(path)
    for key in spec:
        if key not in KEYS:
            raise ConfigError(f"experiments file '{path}': unknown key '{key}'; allowed: {', '.join(sorted(KEYS))}")
    for key in ("name", "notebook"):
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

    return {name: p["default"] for name, p in papermill.inspect_notebook(str(notebook)).items()}


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


def render_html(ipynb: Path) -> Path:
    """Notebook -> HTML without input cells (a report for readers, not the code)."""
    import nbformat
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True)
    body, _ = exporter.from_notebook_node(nbformat.read(str(ipynb), as_version=4))
    out = ipynb.with_suffix(".html")
    atomic_write_text(out, body)
    return out


def execute(notebook, out_ipynb: Path, params: dict, kernel: str, cwd, timeout=None) -> dict:
    """Run one notebook with papermill; returns a status record, never raises on failure."""
    import papermill

    t0 = time.time()
    status = {"status": "ok", "error": None}
    try:
        papermill.execute_notebook(str(notebook), str(out_ipynb), parameters=params, kernel_name=kernel,
                                   cwd=str(cwd), progress_bar=False, execution_timeout=timeout)
    except papermill.PapermillExecutionError as e:
        status = {"status": "failed", "error": f"{e.ename}: {e.evalue}".strip()[:500]}
    except KeyboardInterrupt:
        raise
    except Exception as e:  # kernel died, missing kernel...
        status = {"status": "failed", "error": f"{type(e).__name__}: {e}".splitlines()[0][:500]}
    if out_ipynb.exists():
        try:
            render_html(out_ipynb)
        except Exception as e:
            status.setdefault("render_error", str(e)[:200])
    status["seconds"] = round(time.time() - t0, 1)
    return status


def run_batch(experiments, reports="reports", rerun=False) -> Path:
    """Execute the grid, then write reports/<name>/index.html; returns the index path."""
    from ltlab.evaluate import is_finished

    spec = load_experiments(experiments)
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
    kernel = spec.get("kernel", "ltlab")
    out_dir = Path(reports) / spec["name"]
    runs_root = Path(spec.get("runs_root", "runs")) / spec["name"]
    out_dir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TQDM_DISABLE", "1")  # progress bars would flood the saved notebooks

    records = []
    for name, params in points:
        run_dir = (runs_root / name).resolve()
        params = {**resolve_refs(params, runs_root), "run_dir": str(run_dir)}
        status_file = out_dir / f"{name}.status.json"
        prev = json.loads(status_file.read_text()) if status_file.exists() else {}
        digest = _digest(params)
        done = prev.get("digest") == digest and prev.get("status") == "ok" and is_finished(run_dir)
        if done and not rerun:
            records.append({**prev, "cached": True})
            continue
        # a different parameter set under the same name starts the run over
        params_run = {**params, "restart": prev.get("digest") not in (None, digest) or rerun}
        print(f"[{spec['name']}] {name}: running", flush=True)
        rec = {"name": name, "params": params, "digest": digest, "run_dir": str(run_dir),
               "ipynb": f"{name}.ipynb", "html": f"{name}.html"}
        try:
            rec.update(execute(notebook, out_dir / f"{name}.ipynb", params_run, kernel, root, spec.get("timeout")))
        except KeyboardInterrupt:
            rec.update(status="interrupted", error="interrupted by the user (Ctrl-C)")
            atomic_write_json(status_file, rec)
            write_index(out_dir, spec, records + [rec])
            raise
        if rec["status"] == "ok" and not is_finished(run_dir):
            rec.update(status="failed", error="the notebook finished but the run has no summary.json")
        rec["analysis"] = []
        if rec["status"] == "ok":
            for nb in spec["analysis"]:
                stem = f"{name}__{Path(nb).stem}"
                a = execute(root / nb, out_dir / f"{stem}.ipynb", {"run_dir": str(run_dir)}, kernel, root)
                rec["analysis"].append({"notebook": Path(nb).stem, "html": f"{stem}.html", **a})
        atomic_write_json(status_file, rec)
        print(f"[{spec['name']}] {name}: {rec['status']}" + (f" ({rec['error']})" if rec["error"] else ""), flush=True)
        records.append(rec)

    if spec.get("compare"):
        dirs = [r["run_dir"] for r in records if r["status"] == "ok"]
        rec = execute(root / spec["compare"], out_dir / "compare.ipynb", {"run_dirs": dirs}, kernel, root)
        spec["_compare"] = {"html": "compare.html", **rec}
    return write_index(out_dir, spec, records)


def _fmt(v) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 10 else f"{v:.1f}"
    return html.escape(str(v))


def write_index(out_dir: Path, spec: dict, records: list) -> Path:
    from ltlab.evaluate import is_finished

    grid_keys = list(spec["grid"])
    head = "".join(f"<th>{html.escape(k)}</th>" for k in ["run", *grid_keys, "status", *SUMMARY_COLUMNS, "report"])
    rows = []
    for r in records:
        summary = {}
        if r.get("status") == "ok" and is_finished(r["run_dir"]):
            summary = json.loads((Path(r["run_dir"]) / "summary.json").read_text())
        cells = [html.escape(r["name"])] + [_fmt(r["params"].get(k)) for k in grid_keys]
        st = r.get("status", "?") + (" (cached)" if r.get("cached") else "")
        err = f"<div class='err'>{html.escape(r['error'])}</div>" if r.get("error") else ""
        cells.append(f"<span class='{html.escape(r.get('status', ''))}'>{html.escape(st)}</span>{err}")
        cells += [_fmt(summary.get(c)) for c in SUMMARY_COLUMNS]
        links = [f"<a href='{html.escape(r['html'])}'>report</a>", f"<a href='{html.escape(r['ipynb'])}'>ipynb</a>"]
        links += [f"<a href='{html.escape(a['html'])}'>{html.escape(a['notebook'])}</a>"
                  + ("" if a["status"] == "ok" else " (failed)") for a in r.get("analysis", [])]
        cells.append(" · ".join(links))
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    compare = ""
    if spec.get("_compare"):
        c = spec["_compare"]
        compare = f"<p><a href='{c['html']}'>comparison across runs</a> ({html.escape(c['status'])})</p>"
    params = html.escape(yaml.safe_dump(spec["parameters"], sort_keys=False))
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>ltlab batch {html.escape(spec['name'])}</title>
<style>body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse}} td,th{{border:1px solid #ccc;
padding:4px 8px;text-align:right}} td:first-child{{text-align:left}} .failed,.interrupted{{color:#b00;font-weight:bold}}
.ok{{color:#070}} .err{{color:#b00;font-size:smaller;text-align:left;max-width:40em}}</style></head><body>
<h1>ltlab batch: {html.escape(spec['name'])}</h1>
<p>notebook <code>{html.escape(spec['notebook'])}</code>; written {time.strftime('%Y-%m-%d %H:%M:%S')};
accuracies in [0, 1], ECE with 15 bins, on the test split, last epoch.</p>
<details><summary>base parameters</summary><pre>{params}</pre></details>
{compare}
<table><tr>{head}</tr>{''.join(rows)}</table></body></html>"""
    index = out_dir / "index.html"
    atomic_write_text(index, page)
    return index.resolve()
