"""The batch report (reports/<batch>/index.html) and the landing page (reports/index.html).

A batch's records (one per run, as ltlab.reports.batch writes them to <run>.status.json) become:
one row per configuration (the method and every parameter except the seed) with mean ±
sample std over seeds and n, in percent with one decimal, and an interval (t over seeds, or
one run's bootstrap over test images); a figure of many / medium / few
accuracy with error bars across configurations; the failed runs with their errors; the
per-run table one click away; links to every run and analysis report. Each batch also writes
batch.json (name, date, status counts), from which reports/index.html lists every batch.
"""
from __future__ import annotations

import base64
import html
import io
import json
import re
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from ltlab.evaluation.intervals import seed_summary
from ltlab.evaluation.run_dir import read_json
from ltlab.io import atomic_write_json, atomic_write_text
from ltlab.viz.base import GROUP_COLORS, _figure

# summary.json key -> column header; every one is a fraction shown in percent
METRICS = {"top1": "top-1", "balanced_acc": "balanced", "many": "many", "medium": "medium", "few": "few",
           "ece": "ECE", "ece_ts": "ECE after TS", "auroc_msp": "AUROC (MSP)"}
CI_KEY = {"auroc_msp": "auroc"}   # summary.json names the MSP failure AUROC's interval auroc_ci
NOT_CONFIG = {"seed", "run_dir", "restart"}   # what differs between the seeds of one configuration
BATCH_FILE = "batch.json"

STYLE = """body{font-family:system-ui,sans-serif;margin:2em;max-width:80em;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.5em} td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}
th{background:#f3f3f3} td.l,th.l{text-align:left} .failed,.interrupted{color:#b00;font-weight:bold} .ok{color:#070}
.err{color:#b00;text-align:left;max-width:50em;font-family:monospace;font-size:smaller} .n{color:#666}
img{max-width:100%} details{margin:0.5em 0 1em} summary{cursor:pointer;font-weight:bold}"""


def _pct(mean, std=None, n=1) -> str:
    if mean is None or not np.isfinite(mean):
        return "n/a"
    if n > 1 and std is not None and np.isfinite(std):
        return f"{100 * mean:.1f} ± {100 * std:.1f}"
    return f"{100 * mean:.1f}"


def _bracket(ci) -> str:
    return "" if ci is None else f" <small class='ci'>[{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]</small>"


def _group_ci(group: pd.DataFrame, key: str):
    """n >= 2: the t-interval over seeds; n = 1: the run's own bootstrap interval over test images
    (summary.json's <metric>_ci; runs from before 2026-12-03 have none)."""
    values = group[key].dropna().to_numpy(float)
    if len(values) >= 2:
        return seed_summary(values)["ci"]
    if len(group) == 1:
        ci = group[f"{key}_ci"].iloc[0]
        return ci if isinstance(ci, (list, tuple)) and len(ci) == 2 else None
    return None


def _reference(value, run_dir: str):
    """A stage-two run's 'stage1_run' is a path to a sibling run of the same seed: as a
    configuration it is '@<run name without its seed>', the same for every seed."""
    if isinstance(value, str) and run_dir and Path(value).parent == Path(run_dir).parent:
        return "@" + re.sub(r"_?seed-[^_]+", "", Path(value).name)
    return value


def config_of(record: dict) -> dict:
    params = record.get("params", {})
    return {k: _reference(v, params.get("run_dir", "")) for k, v in params.items() if k not in NOT_CONFIG}


def runs_frame(records: list) -> pd.DataFrame:
    """One row per run: name, status, error, seed, config (JSON), its metrics (fractions)."""
    rows = []
    for r in records:
        summary = {}
        f = Path(r.get("run_dir", "")) / "summary.json"
        if r.get("status") == "ok" and f.is_file():
            summary = read_json(f)
        row = {"name": r["name"], "status": r.get("status", "?"), "error": r.get("error"),
               "cached": bool(r.get("cached")), "seed": r.get("params", {}).get("seed"),
               "config": json.dumps(config_of(r), sort_keys=True, default=str)}
        row.update({k: summary.get(k) for k in METRICS})
        row.update({f"{k}_ci": summary.get(CI_KEY.get(k, k) + "_ci") for k in METRICS})
        rows.append(row)
    df = pd.DataFrame(rows, columns=["name", "status", "error", "cached", "seed", "config", *METRICS,
                                     *(f"{k}_ci" for k in METRICS)])
    df[list(METRICS)] = df[list(METRICS)].astype(float)
    return df


def varying_keys(configs) -> list:
    """Parameters that tell the configurations apart (the method always shown first)."""
    dicts = [json.loads(c) for c in configs]
    keys = sorted({k for d in dicts for k in d})
    varying = [k for k in keys if len({json.dumps(d.get(k), default=str) for d in dicts}) > 1]
    return (["method"] if any("method" in d for d in dicts) else []) + [k for k in varying if k != "method"]


def aggregate(runs: pd.DataFrame) -> pd.DataFrame:
    """Finished runs grouped by configuration: n and the mean and sample std (ddof 1) of
    every metric, in the order the configurations first appear."""
    ok = runs[runs["status"] == "ok"]
    if ok.empty:
        return pd.DataFrame(columns=["config", "n"])
    g = ok.groupby("config", sort=False)[list(METRICS)]
    table = g.mean().add_suffix("_mean").join(g.std(ddof=1).add_suffix("_std"))
    table.insert(0, "n", g.size())
    return table.reset_index()


def config_label(config: str, keys: list) -> str:
    """'method, key=value, ...' over the keys that vary; a key this configuration leaves unset
    (None: the method's own default) is left out, which still tells it from one that sets it."""
    d = json.loads(config)
    return ", ".join(str(d.get(k)) if k == "method" else f"{k}={d.get(k)}" for k in keys
                     if k == "method" or d.get(k) is not None) or "all runs"


def group_figure_png(table: pd.DataFrame, labels: list) -> bytes:
    """Many / medium / few accuracy per configuration, bars at the mean over seeds with the
    sample std as error bars (none where n = 1)."""
    groups = ("many", "medium", "few")
    fig = _figure((max(5.5, 1.3 * len(table) + 2.5), 4.3))
    ax = fig.subplots()
    x = np.arange(len(table))
    width = 0.8 / len(groups)
    for j, g in enumerate(groups):
        mean = 100 * table[f"{g}_mean"].to_numpy(float)
        std = 100 * table[f"{g}_std"].to_numpy(float)
        pos = x + (j - 1) * width
        # NaN std (a single seed) draws no error bar rather than a misleading zero-width one
        ax.bar(pos, np.nan_to_num(mean), width * 0.95, yerr=std, capsize=3, color=GROUP_COLORS[j],
               label=g, error_kw={"elinewidth": 1, "ecolor": "0.2"})
        for p, m, s in zip(pos, mean, np.where(np.isfinite(std), std, 0.0)):
            ax.text(p, (0 if not np.isfinite(m) else m) + s + 2.5, "n/a" if not np.isfinite(m) else f"{m:.1f}",
                    ha="center", va="bottom", fontsize=7, rotation=90)
    rotate = len(table) > 3 or max((len(s) for s in labels), default=0) > 18
    ax.set_xticks(x, labels, rotation=25 if rotate else 0, ha="right" if rotate else "center", fontsize=8)
    ax.set(ylim=(0, 118), ylabel="test accuracy (%)",
           title="Accuracy by shot group: mean ± std over seeds")
    ax.grid(axis="y", alpha=0.3)
    fig.legend(loc="outside upper right", ncol=3, fontsize=9, frameon=False)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return buf.getvalue()


def _links(r: dict) -> str:
    # a batch over finished (archived) runs has analysis pages only, no training page
    links = [f"<a href='{html.escape(r['html'])}'>run report</a>", f"<a href='{html.escape(r['ipynb'])}'>ipynb</a>"] \
        if r.get("html") else []
    links += [f"<a href='{html.escape(a['html'])}'>{html.escape(a['notebook'])}</a>"
              + ("" if a["status"] == "ok" else " <span class='failed'>(failed)</span>") for a in r.get("analysis", [])]
    return " · ".join(links)


def _table(head: list, rows: list, left: int = 1, cls: str = "") -> str:
    th = "".join(f"<th class='{'l' if i < left else ''}'>{html.escape(h)}</th>" for i, h in enumerate(head))
    body = "".join("<tr>" + "".join(f"<td class='{'l' if i < left else ''}'>{c}</td>" for i, c in enumerate(row))
                   + "</tr>" for row in rows)
    return f"<table class='{cls}'><tr>{th}</tr>{body}</table>"


def _run_link(r: dict) -> str:
    """The run's seed linking to its run page (or its first analysis page, for finished runs)."""
    label = html.escape(str(r.get("params", {}).get("seed", r["name"])))
    target = r.get("html") or next((a["html"] for a in r.get("analysis", []) if a.get("html")), None)
    return f"<a href='{html.escape(target)}'>{label}</a>" if target else label


def leaderboard_html(runs: pd.DataFrame, records: list) -> tuple[str, str]:
    """(the per-configuration table, the embedded group figure) as HTML."""
    table = aggregate(runs)
    if table.empty:
        return "<p>No finished run yet.</p>", ""
    keys = varying_keys(runs["config"])
    labels = [config_label(c, keys) for c in table["config"]]
    by_config = {c: [r for r, rc in zip(records, runs["config"]) if rc == c and r.get("status") == "ok"]
                 for c in table["config"]}
    rows = []
    for label, (_, t) in zip(labels, table.iterrows()):
        n = int(t["n"])
        cells = [html.escape(label), str(n)]
        group = runs[(runs["config"] == t["config"]) & (runs["status"] == "ok")]
        cells += [_pct(t[f"{k}_mean"], t[f"{k}_std"], n) + _bracket(_group_ci(group, k)) for k in METRICS]
        cells.append(", ".join(_run_link(r) for r in by_config[t["config"]]))
        rows.append(cells)
    head = ["configuration", "n", *METRICS.values(), "runs (seed)"]
    png = base64.b64encode(group_figure_png(table, labels)).decode()
    figure = (f"<img class='groups' alt='accuracy by shot group per configuration' "
              f"src='data:image/png;base64,{png}'>")
    return _table(head, rows, cls="leaderboard"), figure


def status_counts(records: list) -> dict:
    counts: dict = {}
    for r in records:
        counts[r.get("status", "?")] = counts.get(r.get("status", "?"), 0) + 1
    return counts


def batch_page(spec: dict, records: list, written: str) -> str:
    runs = runs_frame(records)
    leaderboard, figure = leaderboard_html(runs, records)
    failed = [[html.escape(r["name"]), f"<span class='{html.escape(r.get('status', ''))}'>{html.escape(r.get('status', '?'))}</span>",
               f"<div class='err'>{html.escape(r.get('error') or '')}</div>", _links(r)]
              for r in records if r.get("status") != "ok"]
    failed_html = (f"<h2>Failed runs ({len(failed)})</h2>" + _table(["run", "status", "error", "reports"], failed, left=3)
                   if failed else "")
    per_run = []
    for r, (_, row) in zip(records, runs.iterrows()):
        status = html.escape(row["status"] + (" (cached)" if row["cached"] else ""))
        per_run.append([html.escape(r["name"]), f"<span class='{html.escape(row['status'])}'>{status}</span>"]
                       + [_pct(row[k]) + _bracket(row[f"{k}_ci"] if isinstance(row[f"{k}_ci"], list) else None)
                          for k in METRICS] + [_links(r)])
    counts = status_counts(records)
    compare = ""
    if spec.get("_compare"):
        c = spec["_compare"]
        compare = (f"<p><a href='{html.escape(c['html'])}'>Comparison across runs</a> "
                   f"<span class='{html.escape(c['status'])}'>({html.escape(c['status'])})</span></p>")
    params = html.escape(yaml.safe_dump(spec.get("parameters", {}), sort_keys=False))
    grid = html.escape(yaml.safe_dump(spec.get("grid", {}), sort_keys=False, default_flow_style=None))
    name = html.escape(spec["name"])
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>ltlab batch {name}</title>
<link rel="icon" href="data:,"><style>{STYLE}</style></head><body>
<p><a href="../index.html">all batches</a></p>
<h1>ltlab batch: {name}</h1>
<p>{len(records)} {'run' if len(records) == 1 else 'runs'}: {', '.join(f'{v} {html.escape(k)}' for k, v in counts.items())}. Notebook
<code>{html.escape(spec.get('notebook') or 'none: finished runs analysed')}</code>; written {html.escape(written)}.</p>
<h2>Results by configuration</h2>
<p>Test split, last epoch. Mean ± sample standard deviation over seeds (n runs), in percent.
Brackets: with n &ge; 2 seeds, the 95% t-interval of the mean over seeds; with n = 1, no spread
over seeds exists and the bracket is that run's 95% bootstrap interval over test images
(stratified by class, 1,000 resamples), the spread of one test set only.
Many / medium / few: classes with more than 100, 20 to 100, fewer than 20 training images.
ECE: 15 equal-width bins; after TS: with the temperature fitted on the validation split.
AUROC (MSP): how well the max softmax probability separates correct from wrong predictions.</p>
{leaderboard}
{figure}
{compare}
{failed_html}
<details><summary>Every run ({len(records)})</summary>
{_table(["run", "status", *METRICS.values(), "reports"], per_run, cls="runs")}</details>
<details><summary>Parameters</summary><p>base</p><pre>{params}</pre><p>grid</p><pre>{grid}</pre></details>
</body></html>"""


# nbconvert's lab template without the <script>s it loads from a CDN: require.js (for live
# widgets, which a static report has not), MathJax (no notebook has TeX) and mermaid. Offline, or on an
# intranet, each was a failed request and a console error on every page.
_OFFLINE_TEMPLATE = """{%- extends 'lab/index.html.j2' -%}
{%- block html_head_js_requirejs -%}{%- endblock html_head_js_requirejs -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}"""


def notebook_html(ipynb) -> str:
    """An executed notebook as a report for readers: outputs only, no input cells, nothing
    fetched from the network."""
    import jinja2
    import nbformat
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(template_name="lab", template_file="ltlab_report.html.j2",
                            extra_loaders=[jinja2.DictLoader({"ltlab_report.html.j2": _OFFLINE_TEMPLATE})],
                            exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True)
    body, _ = exporter.from_notebook_node(nbformat.read(str(ipynb), as_version=4))
    return body


def write_batch_report(out_dir, spec: dict, records: list) -> Path:
    """Write <out_dir>/index.html and batch.json, then rebuild the landing page above it."""
    out_dir = Path(out_dir)
    written = time.strftime("%Y-%m-%d %H:%M:%S")
    atomic_write_text(out_dir / "index.html", batch_page(spec, records, written))
    atomic_write_json(out_dir / BATCH_FILE, {"name": spec["name"], "notebook": spec.get("notebook"),
                                            "written": written, "counts": status_counts(records),
                                            "compare": spec.get("_compare", {}).get("status")})
    write_landing(out_dir.parent)
    return (out_dir / "index.html").resolve()


def write_landing(reports_root) -> Path:
    """reports/index.html: every batch folder with a batch.json, newest first."""
    root = Path(reports_root)
    batches = []
    for f in root.glob(f"*/{BATCH_FILE}"):
        try:
            batches.append(json.loads(f.read_text()))
        except (OSError, ValueError):
            continue   # a batch.json being replaced by another process; it rebuilds this page itself
    batches.sort(key=lambda b: b.get("written", ""), reverse=True)
    rows = [[f"<a href='{html.escape(b['name'])}/index.html'>{html.escape(b['name'])}</a>",
             html.escape(b.get("written", "")), html.escape(b.get("notebook") or "finished runs"),
             ", ".join(f"<span class='{html.escape(k)}'>{v} {html.escape(k)}</span>"
                       for k, v in b.get("counts", {}).items())] for b in batches]
    page = f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>ltlab reports</title>
<link rel="icon" href="data:,"><style>{STYLE}</style></head><body><h1>ltlab reports</h1>
<p>{len(batches)} {'batch' if len(batches) == 1 else 'batches'}, newest first.</p>
{_table(["batch", "written", "notebook", "runs"], rows, left=4)}</body></html>"""
    out = root / "index.html"
    atomic_write_text(out, page)
    return out
