"""Mutation testing of the numeric core with mutmut 3 (`make mutants`; experiments/mutants/README.md).

mutmut copies the package into ``mutants/`` (it never edits the sources in place) and needs its
config in a setup.cfg or pyproject.toml of the directory it runs in. This script keeps both out of
the repository: it copies ltlab/, tests/ and pyproject.toml into a scratch directory (default
$TMPDIR/ltlab-mutants), writes the [mutmut] section there, runs ``mutmut run`` in it, and writes
the per-module table to experiments/mutants/report.json (and report.csv).

Which tests run: mutmut first runs the unit test files below once (the "stats" pass) and records
which test calls which function of the package (directly or through other functions); each
mutant then runs only the tests that reached its function, stopping at the first failure
(pytest -x). The slow end-to-end tests of those files (demo training runs, repeated-sampling
coverage checks) are deselected, so no mutant waits for a training run.

A surviving mutant is either killed by a new test or listed in experiments/mutants/equivalent.json
with a one-line reason and its mutated line; the report marks survivors without a current entry as
"unjustified" (an entry whose line no longer matches, after an edit renumbered the mutants, does
not count).

    .venv/bin/python scripts/mutants.py                     # all modules, 2 workers
    .venv/bin/python scripts/mutants.py --only losses.py    # the modules whose path contains it (report in --scratch)
    .venv/bin/python scripts/mutants.py --report-only       # re-read the last run's results
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "experiments" / "mutants"

# the numeric core: module -> the unit test files that exercise it
MODULES = {
    "ltlab/evaluation/metrics.py": ["tests/test_metrics.py", "tests/test_mutants_metrics.py"],
    "ltlab/evaluation/failure.py": ["tests/test_metrics.py", "tests/test_mutants_metrics.py"],
    "ltlab/evaluation/scores.py": ["tests/test_scores.py", "tests/test_mutants_metrics.py"],
    "ltlab/evaluation/posthoc.py": ["tests/test_posthoc.py", "tests/test_mutants_posthoc.py"],
    "ltlab/evaluation/calibration_fit.py": ["tests/test_calibrated_em.py", "tests/test_calibration_cv.py",
                                            "tests/test_mutants_calibrated_em.py"],
    "ltlab/evaluation/calibrated_em.py": ["tests/test_calibrated_em.py", "tests/test_calibration_cv.py",
                                          "tests/test_mutants_calibrated_em.py"],
    "ltlab/methods/losses.py": ["tests/test_losses.py", "tests/test_mutants_losses.py"],
    "ltlab/methods/losses_multi.py": ["tests/test_balpoe.py", "tests/test_enmos.py", "tests/test_mislas.py",
                                      "tests/test_mutants_losses.py"],
    "ltlab/methods/samplers.py": ["tests/test_samplers.py", "tests/test_mutants_samplers.py"],
    "ltlab/training/schedule.py": ["tests/test_schedule.py", "tests/test_mutants_schedule.py"],
    "ltlab/config/epochs.py": ["tests/test_schedule.py", "tests/test_mutants_schedule.py"],
    "ltlab/evaluation/intervals.py": ["tests/test_intervals.py", "tests/test_mutants_intervals.py"],
    "ltlab/evaluation/paired.py": ["tests/test_paired.py", "tests/test_mutants_intervals.py"],
}

# end-to-end tests inside those files: a training run or hundreds of resampled test sets each
SLOW = [
    "tests/test_schedule.py::test_run_saves_its_schedule_and_follows_it",
    "tests/test_intervals.py::test_intervals_cover_the_truth_in_repeated_test_sets",
    "tests/test_paired.py::test_paired_intervals_cover_the_true_difference",
    "tests/test_losses.py::test_posthoc_logit_adjustment_on_a_demo_run",
    "tests/test_losses.py::test_baseline_demo_run",
    "tests/test_mislas.py::test_end_to_end_both_stages_and_shifted_bn",
    "tests/test_balpoe.py::test_end_to_end",     # node-id prefixes: every test_end_to_end_*
    "tests/test_enmos.py::test_end_to_end",
    "tests/test_enmos.py::test_enmos_clips_backbone_and_head_separately_like_the_original",
]

COUNTED = ("killed", "survived", "timeout", "no tests", "suspicious", "segfault", "not checked")


def _mutmut_version() -> str:
    from importlib.metadata import version
    return version("mutmut")


def _modules(only: list[str] | None) -> dict:
    if not only:
        return dict(MODULES)
    picked = {m: t for m, t in MODULES.items() if any(o in m for o in only)}
    if not picked:
        sys.exit(f"--only {' '.join(only)}: no module of {', '.join(MODULES)} matches")
    return picked


def _setup_cfg(modules: dict, scratch: Path) -> str:
    tests = sorted({t for ts in modules.values() for t in ts if (scratch / t).exists()})
    slow = [s for s in SLOW if (scratch / s.split("::")[0]).exists()]
    selection = tests + ["-m", "not slow", "-p", "no:cacheprovider"]
    for s in slow:
        selection += ["--deselect", s]
    lines = ["[mutmut]", "source_paths = ltlab", "also_copy =", "    experiments", "only_mutate ="]
    lines += [f"    {m}" for m in modules]
    lines += ["pytest_add_cli_args_test_selection ="]
    lines += [f"    {a}" for a in selection]
    lines += ["pytest_add_cli_args =", "    -p", "    no:cacheprovider",
              "use_git_change_detection = false", ""]
    return "\n".join(lines)


def prepare(scratch: Path, modules: dict) -> None:
    if scratch.exists():
        shutil.rmtree(scratch)
    scratch.mkdir(parents=True)
    skip = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache")
    shutil.copytree(REPO / "ltlab", scratch / "ltlab", ignore=skip)
    shutil.copytree(REPO / "tests", scratch / "tests", ignore=skip)
    shutil.copy2(REPO / "pyproject.toml", scratch / "pyproject.toml")
    # tests that read an archived run's files (test_schedule: the LDAM-DRW provenance) find them here
    shutil.copytree(REPO / "experiments", scratch / "experiments", ignore=skip)
    (scratch / "setup.cfg").write_text(_setup_cfg(modules, scratch))


def _mutmut(scratch: Path, *args, **kw) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("mutmut")
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TQDM_DISABLE="1", PYTHONHASHSEED="0")
    return subprocess.run([str(exe), *args], cwd=scratch, env=env, **kw)


def _meta(scratch: Path, module: str) -> dict:
    path = scratch / "mutants" / (module + ".meta")
    if not path.exists():
        return {}
    return json.loads(path.read_text())["exit_code_by_key"]


def _status(code) -> str:
    from mutmut.stats import status_by_exit_code
    return status_by_exit_code[code]


def _mutated_line(scratch: Path, name: str, module: str) -> str:
    """The mutant's changed line(s) ('-' old / '+' new, joined by ' | '), as `mutmut show` prints them."""
    from mutmut.mutation.diff_apply import get_diff_for_mutant
    cwd = os.getcwd()
    os.chdir(scratch)                     # mutmut reads mutants/ and setup.cfg relative to the cwd
    try:
        diff = get_diff_for_mutant(name, path=module)
    finally:
        os.chdir(cwd)
    changed = [ln for ln in diff.splitlines() if re.match(r"^[-+](?![-+]{2})", ln)]
    return " | ".join(" ".join(ln.split()) for ln in changed)


def report(scratch: Path, modules: dict, wall_s: float | None, command: str) -> dict:
    equivalent = json.loads((OUT / "equivalent.json").read_text()) if (OUT / "equivalent.json").exists() else {}
    rows, survivors = [], []
    for module in modules:
        codes = _meta(scratch, module)
        counts = {k: 0 for k in COUNTED}
        for name, code in sorted(codes.items()):
            status = _status(code)
            counts[status] = counts.get(status, 0) + 1
            if status in ("survived", "no tests", "suspicious", "not checked"):
                line = _mutated_line(scratch, name, module)
                entry = equivalent.get(name) or {}
                ok = bool(entry) and entry.get("line") == line
                survivors.append({"module": module, "mutant": name, "status": status, "line": line,
                                  "justified": ok, "reason": entry.get("reason") if ok else None})
        total = len(codes)
        just = sum(1 for s in survivors if s["module"] == module and s["justified"])
        rows.append({"module": module, "mutants": total, **{k.replace(" ", "_"): counts[k] for k in COUNTED},
                     "killed_pct": round(100.0 * counts["killed"] / total, 1) if total else None,
                     "justified": just,
                     # a timeout is a detected mutant too
                     "killed_or_justified_pct": round(100.0 * (counts["killed"] + counts["timeout"] + just) / total, 1)
                     if total else None})
    data = {
        "tool": f"mutmut {_mutmut_version()}",
        "command": command,
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        "machine": f"{os.cpu_count()} CPUs, {platform.platform()}",
        "wall_s": wall_s,
        "modules": rows,
        "survivors": survivors,
    }
    return data


def write(data: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(data, indent=1) + "\n")
    keys = list(data["modules"][0]) if data["modules"] else []
    with open(out / "report.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(data["modules"])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scratch", type=Path, default=Path(tempfile.gettempdir()) / "ltlab-mutants")
    ap.add_argument("--jobs", type=int, default=2, help="mutmut's --max-children (default 2)")
    ap.add_argument("--only", nargs="+", help="modules whose path contains one of these")
    ap.add_argument("--report-only", action="store_true", help="re-read the results in --scratch, run nothing")
    ap.add_argument("--out", type=Path, help="where report.json/.csv go (default experiments/mutants; with --only, "
                                             "the scratch directory, so a partial run never replaces the full report)")
    a = ap.parse_args(argv)
    if a.out is None:
        a.out = a.scratch / "report" if a.only else OUT
    modules = _modules(a.only)
    command = "make mutants" if not a.only else f"scripts/mutants.py --only {' '.join(a.only)}"
    wall = None
    if not a.report_only:
        prepare(a.scratch, modules)
        t0 = time.monotonic()
        rc = _mutmut(a.scratch, "run", "--max-children", str(a.jobs)).returncode
        wall = round(time.monotonic() - t0, 1)
        if rc != 0:
            print(f"mutmut run exited {rc} (a failing clean test run stops it: run those tests first)")
            return rc
    elif (a.out / "report.json").exists():
        wall = json.loads((a.out / "report.json").read_text()).get("wall_s")
    data = report(a.scratch, modules, wall, command)
    write(data, a.out)
    print(f"\n{'module':40s} {'mutants':>7s} {'killed':>6s} {'surv':>5s} {'t/o':>4s} {'justif':>6s}  killed%")
    for r in data["modules"]:
        print(f"{r['module']:40s} {r['mutants']:7d} {r['killed']:6d} {r['survived']:5d} {r['timeout']:4d} "
              f"{r['justified']:6d}  {r['killed_pct']}")
    bad = [s for s in data["survivors"] if not s["justified"]]
    for s in bad:
        print(f"unjustified {s['status']}: {s['mutant']}: {s['line']}")
    print(f"wall time {wall} s; report in {a.out.relative_to(REPO) if a.out.is_relative_to(REPO) else a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
