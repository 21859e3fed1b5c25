"""The leaderboard of a results folder, beside the published numbers: never typed.

``ltlab table DIR`` reads every run under DIR (any folder with summary.json; a method is the
first folder level, e.g. DIR/crt/seed0/), and prints per method: n (runs), mean ± sample std
over seeds of top-1, many / medium / few, ECE, ECE after temperature scaling (fitted on the
val split), AUROC of MSP (correct vs wrong), the best evaluated epoch's test top-1 (picked on the
test set, as many papers report it: for comparison with them only, never used to choose), epochs (a stage two's as 'stage one + own'),
device (provenance.json), whether the numbers are recomputable (archived with predictions:
archive.json), with --ci top-1's 95% interval (t over seeds where n >= 2, else a bootstrap over
the test images, and the column says which), and the published top-1 with its source (ltlab/reports/published.py).

The README holds such tables between markers; ``ltlab table --update-readme README.md``
regenerates every one of them from its own command line, and tests/test_leaderboard.py fails
when a README block and its command disagree:

    <!-- begin: ltlab table experiments/results/cifar10_lt_if100 --markdown -->
    ...
    <!-- end: ltlab table -->
"""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import numpy as np
import pandas as pd

from ltlab.config import ConfigError
from ltlab.evaluation.intervals import bootstrap_cis, seed_summary
from ltlab.evaluation.run_dir import read_json, read_metrics, read_predictions, read_yaml
from ltlab.reports.published import PUBLISHED, published

ORDER = ("ce", "focal", "cb", "ldam_drw", "balanced_softmax", "logit_adjust", "crt", "lws", "tau_norm", "ncm", "la_posthoc",
         "tde", "mislas_stage1", "mislas", "balpoe", "enmos")
PERCENT = ("top1", "many", "medium", "few", "ece", "ece_ts", "auroc_msp")   # all in %, one decimal
COLUMNS = {"top1": "top-1", "many": "many", "medium": "medium", "few": "few", "ece": "ECE",
           "ece_ts": "ECE (TS)", "auroc_msp": "AUROC (MSP)"}
CI_COLUMN = "top-1 95% CI"
BEST_ON_TEST = "best-epoch top-1 (test-picked)"   # docs/results.md: the papers' protocol, not ours
BLOCK = re.compile(r"(<!-- begin: (ltlab table [^>]*?) -->\n)(.*?)(<!-- end: ltlab table -->)", re.S)


def _device(run_dir: Path) -> str:
    f = run_dir / "provenance.json"
    if not f.is_file():
        return "not recorded"
    d = str(read_json(f).get("device", "not recorded"))
    return "CPU" if d.startswith("cpu") else d.replace("NVIDIA ", "")


def _epochs(run_dir: Path, summary: dict) -> str:
    """Training epochs; a stage two's as 'stage one + its own' (a post-hoc one adds 0), read
    through archive.json's link to the archived stage one."""
    own = summary.get("epochs")
    f = run_dir / "archive.json"
    link = read_json(f).get("stage1") if f.is_file() else None
    s1 = run_dir / link / "summary.json" if link else None
    if s1 is None or not s1.is_file():
        return str(own)
    return f"{read_json(s1).get('epochs')} + {own}"


def _best_on_test(run_dir: Path) -> float | None:
    """The highest test top-1 over the epochs metrics.csv evaluated (fraction), or None.

    Many papers report this number: the best epoch, picked on the test set. It is shown beside
    the last-epoch number for comparison with them only, labelled as test-picked, and never feeds
    a knob or a selection."""
    f = run_dir / "metrics.csv"
    if not f.is_file():
        return None
    col = read_metrics(f).get("test_top1")
    col = None if col is None else col.dropna()
    return None if col is None or col.empty else float(col.max())


def collect(bench_dir) -> dict[str, list[dict]]:
    """{method folder: [{summary, config, device, archived}, ...]} of every finished run."""
    root = Path(bench_dir)
    if not root.is_dir():
        raise ConfigError(f"results folder '{bench_dir}' does not exist; allowed: a folder of "
                          "<method>/<seed>/summary.json (ltlab archive --out)")
    out: dict[str, list[dict]] = {}
    for f in sorted(root.rglob("summary.json")):
        rel = f.parent.relative_to(root)
        if any(p.startswith(".") for p in rel.parts):   # an archive copy in progress
            continue
        cfg = read_yaml(f.parent / "config.yaml") if (f.parent / "config.yaml").is_file() else {}
        summary = read_json(f)
        out.setdefault(rel.parts[0] if rel.parts else root.name, []).append({
            "summary": summary, "config": cfg, "device": _device(f.parent), "epochs": _epochs(f.parent, summary),
            "best_on_test": _best_on_test(f.parent), "path": f.parent,
            "archived": (f.parent / "archive.json").is_file()})
    if not out:
        raise ConfigError(f"results folder '{bench_dir}' holds no finished run (no <method>/<seed>/summary.json "
                          "under it); allowed: an archive folder, e.g. experiments/results/cifar10_lt_if100")
    return out


def _stat(values, scale: float, digits: int) -> str:
    v = np.array([np.nan if x is None else float(x) for x in values], dtype=float) * scale
    v = v[np.isfinite(v)]
    if v.size == 0:
        return "n/a"
    if v.size == 1:
        return f"{v[0]:.{digits}f}"
    return f"{v.mean():.{digits}f} ± {v.std(ddof=1):.{digits}f}"


def _top1_ci(group: list[dict]) -> str:
    """95% interval of top-1 (%): a t-interval over seeds where n >= 2, else the run's stratified
    bootstrap over test images (summary.json's top1_ci, or computed from its predictions)."""
    if len(group) >= 2:
        st = seed_summary([r["summary"]["top1"] for r in group])
        return f"[{100 * st['ci'][0]:.1f}, {100 * st['ci'][1]:.1f}] (t over {st['n']} seeds)"
    ci = group[0]["summary"].get("top1_ci")
    pred = group[0]["path"] / "predictions" / "test.npz"
    if ci is None and pred.is_file():
        test = read_predictions(pred)
        ci = bootstrap_cis(test["logits"], test["labels"], test["train_counts"])["top1"]
    return "n/a (n = 1, no predictions)" if ci is None else f"[{100 * ci[0]:.1f}, {100 * ci[1]:.1f}] (bootstrap, n = 1)"


def _join(values) -> str:
    return ", ".join(dict.fromkeys(str(v) for v in values))


def rows(bench_dir, benchmark: str | None = None, runs_only: bool = False, ci: bool = False) -> list[dict]:
    """One dict per method, in ORDER then alphabetical; all recipes unless runs_only; ci: the
    column of top-1's 95% interval (CI_COLUMN)."""
    runs = collect(bench_dir)
    benchmark = benchmark or Path(bench_dir).name
    methods = list(runs) if runs_only else [*ORDER, *runs]
    methods = sorted(dict.fromkeys(methods), key=lambda m: (ORDER.index(m) if m in ORDER else len(ORDER), m))
    out = []
    for m in methods:
        if m not in runs and m not in PUBLISHED:
            continue
        group = runs.get(m, [])
        pub, source = published(m, benchmark)
        row = {"method": m, "n": len(group)}
        for key, name in COLUMNS.items():
            row[name] = _stat([r["summary"].get(key) for r in group], 100.0 if key in PERCENT else 1.0,
                              1 if key in PERCENT else 3) if group else "–"
        if ci:
            row[CI_COLUMN] = _top1_ci(group) if group else "–"
        # the papers' protocol, beside ours: max over evaluated epochs, picked on the test set
        row[BEST_ON_TEST] = _stat([r["best_on_test"] for r in group], 100.0, 1) if group else "–"
        row["epochs"] = _join(r["epochs"] for r in group) or "–"
        row["device"] = _join(r["device"] for r in group) or "–"
        row["recomputable"] = ("yes" if all(r["archived"] for r in group) else "no (no predictions)") if group else "–"
        row["published top-1"] = "n/a" if pub is None else f"{pub}"
        row["source"] = source
        out.append(row)
    return out


def markdown(table: list[dict]) -> str:
    cols = list(table[0]) if table else ["method"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in table:
        lines.append("| " + " | ".join(f"`{v}`" if c == "method" else str(v) for c, v in r.items()) + " |")
    return "\n".join(lines) + "\n"


def text(table: list[dict]) -> str:
    return pd.DataFrame(table).set_index("method").to_string() + "\n"


def render(argv: list[str]) -> str:
    """The output of `ltlab table ARGV` (ARGV without 'ltlab table')."""
    import argparse

    p = argparse.ArgumentParser(prog="ltlab table", add_help=False)
    p.add_argument("benchmark_dir")
    p.add_argument("--markdown", action="store_true")
    p.add_argument("--benchmark")
    p.add_argument("--runs-only", action="store_true")
    p.add_argument("--ci", action="store_true")
    a = p.parse_args(argv)
    t = rows(a.benchmark_dir, benchmark=a.benchmark, runs_only=a.runs_only, ci=a.ci)
    return markdown(t) if a.markdown else text(t)


def readme_blocks(readme) -> list[tuple[str, str, str]]:
    """(command, block in the README, what the command prints now) for every marked block."""
    txt = Path(readme).read_text()
    return [(m.group(2), m.group(3), render(shlex.split(m.group(2))[2:])) for m in BLOCK.finditer(txt)]


def update_readme(readme) -> int:
    """Regenerate every marked block of README; returns the number of blocks."""
    path = Path(readme)
    if not path.is_file():
        raise ConfigError(f"--update-readme '{readme}': no such file; allowed: a Markdown file with "
                          "'<!-- begin: ltlab table ... -->' blocks (e.g. README.md)")
    try:
        txt = path.read_text()
    except UnicodeDecodeError:
        raise ConfigError(f"--update-readme '{readme}' is not a text file: expected Markdown") from None
    blocks = BLOCK.findall(txt)
    if not blocks:
        raise ConfigError(f"'{readme}' has no '<!-- begin: ltlab table ... -->' block to update")
    new = BLOCK.sub(lambda m: m.group(1) + render(shlex.split(m.group(2))[2:]) + m.group(4), txt)
    path.write_text(new)
    return len(blocks)
