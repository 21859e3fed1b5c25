"""The label-shift columns of every archived run: none, known prior and EM on forward50 / uniform /
backward50, each run with its val-fitted source prior and its 'auto' calibration (the defaults of
04_test_shift). The table in docs/notebooks.md, "Which prior the logits encode", is its output.
With --tv: EM's total variation to each subset's true prior under 'auto' calibration, with the
source prior by the method's rule against the one fitted on val (the EM bullet of that section).

    python scripts/shift_columns.py [--root experiments/results/cifar10_lt_if100] [--tv]
"""
import argparse
from pathlib import Path

from ltlab.evaluation import shift
from ltlab.evaluation.run_dir import load_run
from ltlab.reports.analysis import run_shift_table

SHIFTS = ["forward50", "uniform", "backward50"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=Path("experiments/results/cifar10_lt_if100"))
    ap.add_argument("--seed", default="seed0", help="the seed folder of each run")
    ap.add_argument("--tv", action="store_true", help="EM's TV, source prior by rule vs fitted on val")
    args = ap.parse_args()
    runs = sorted(x for x in args.root.iterdir() if (x / args.seed).is_dir())
    if args.tv:
        tv_table([(d.name, load_run(d / args.seed)) for d in runs])
        return
    print("| run | auto calibration | none | known prior | EM |\n|---|---|---|---|---|")
    for d in runs:
        t, cal = run_shift_table(load_run(d / args.seed), "auto", shifts=SHIFTS)
        cells = [" / ".join(f"{100 * x:.1f}" for x in t[c]) for c in ("none", "known", "em")]
        print(f"| {d.name} | {cal.method} | " + " | ".join(cells) + " |")


def tv_table(runs) -> None:
    print("| run | source by rule: calibration, EM TV | fitted on val: calibration, EM TV |\n|---|---|---|")
    for name, run in runs:
        p, val = run.predictions("test"), run.predictions("val")
        cells = []
        for src in ("method", "val"):
            counts = None if src == "val" else shift.source_prior(run.config, p, val, src)[0]
            cal = shift.run_calibration(run.config, p, val, "auto", source_counts=counts)
            t = shift.em_tv_table(p["logits"], p["labels"], {"auto": cal}, shifts=SHIFTS)
            cells.append(f"{cal.method}, " + " / ".join(f"{x:.3f}" for x in t["tv auto"]))
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
