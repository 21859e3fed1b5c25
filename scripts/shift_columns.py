"""The label-shift columns of every archived run: none, known prior and EM on forward50 / uniform /
backward50, each run with its val-fitted source prior and its 'auto' calibration (the defaults of
04_test_shift). The table in docs/notebooks.md, "Which prior the logits encode", is its output.

    python scripts/shift_columns.py [--root experiments/results/cifar10_lt_if100]
"""
import argparse
from pathlib import Path

from ltlab.evaluation.run_dir import load_run
from ltlab.reports.analysis import run_shift_table

SHIFTS = ["forward50", "uniform", "backward50"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=Path("experiments/results/cifar10_lt_if100"))
    ap.add_argument("--seed", default="seed0", help="the seed folder of each run")
    args = ap.parse_args()
    print("| run | auto calibration | none | known prior | EM |\n|---|---|---|---|---|")
    for d in sorted(x for x in args.root.iterdir() if (x / args.seed).is_dir()):
        t, cal = run_shift_table(load_run(d / args.seed), "auto", shifts=SHIFTS)
        cells = [" / ".join(f"{100 * x:.1f}" for x in t[c]) for c in ("none", "known", "em")]
        print(f"| {d.name} | {cal.method} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
