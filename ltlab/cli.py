"""Command line: ltlab train | eval | batch | bench | notebooks.

Exit codes: 0 success, 2 bad input (config, data, checkpoint, unfinished run), 1 the run
itself failed. Errors print one line: 'ltlab: error: <what is wrong and what is allowed>'.
"""
from __future__ import annotations

import argparse
import json
import sys

EXAMPLES = """examples:
  ltlab train -c experiments/cifar10_lt_ce.yaml epochs=30 seed=1
  ltlab train -c CONFIG.yaml --resume          # continue from run_dir/checkpoint.pt
  ltlab eval runs/demo_ce_if100_s0              # recompute the summary from predictions/
  ltlab batch experiments/demo.yaml             # papermill grid -> reports/<batch>/index.html
"""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ltlab", description="Long-tailed recognition workbench.",
                                epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train one run and write its run directory",
                       description="Train one run. Config = method defaults < CONFIG.yaml < key=value overrides. "
                                   "Writes run_dir/{config.yaml, metrics.csv, checkpoint.pt, predictions/, summary.json}.")
    t.add_argument("-c", "--config", help="YAML file of config keys (see ltlab.config.RunConfig)")
    t.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, values parsed as YAML")
    t.add_argument("--resume", action="store_true", help="continue from the run directory's checkpoint")
    t.add_argument("--restart", action="store_true", help="discard the run directory's checkpoint and start over")
    t.add_argument("--force", action="store_true", help="resume even if the config differs from the checkpoint's")

    e = sub.add_parser("eval", help="recompute a finished run's summary from its saved predictions",
                       description="Recompute every summary number from RUN_DIR/predictions/*.npz and print it as JSON; "
                                   "exits 2 if the run has no summary.json (did not finish).")
    e.add_argument("run_dir")
    e.add_argument("--write", action="store_true", help="rewrite summary.json with the recomputed numbers")

    b = sub.add_parser("batch", help="run a papermill grid of notebooks into reports/<batch>/",
                       description="Execute each grid point of EXPERIMENTS.yaml with papermill, render HTML reports and "
                                   "reports/<batch>/index.html. Finished runs with the same parameters are skipped.")
    b.add_argument("experiments")
    b.add_argument("--reports", default="reports", help="folder for rendered reports (default: reports)")
    b.add_argument("--rerun", action="store_true", help="execute every run again, finished or not")

    s = sub.add_parser("bench", help="images/s of ltlab's loop vs a classic DataLoader pipeline")
    s.add_argument("--steps", type=int, default=50, help="training steps per measurement")
    s.add_argument("--repeats", type=int, default=3, help="interleaved A/B repeats")
    s.add_argument("--batch-size", type=int, default=128)
    s.add_argument("--device", default="auto")
    s.add_argument("--workers", type=int, default=2, help="DataLoader workers of the reference pipeline")
    s.add_argument("--out", help="write the results as JSON to this file")
    s.add_argument("--compile", default="auto", choices=("auto", "on", "graphs", "off"),
                   help="torch.compile mode of ltlab's loop (auto: what a 200-epoch CIFAR-10-LT run gets: "
                        "CUDA graphs on cuda; on a CPU, compiled when a C++ compiler is there)")
    s.add_argument("--eval-batch", type=int, default=0,
                   help="images per evaluation batch (default: what runs use, 1,024 on cuda, 128 on a CPU)")
    s.add_argument("--profile", action="store_true", help="also print a torch.profiler table of ltlab steps")
    s.add_argument("--widgets", action="store_true",
                   help="instead: time every notebook widget's redraw (ltlab.widget_bench) on RUN_DIRs and a synthetic run")
    s.add_argument("runs", nargs="*", metavar="RUN_DIR", help="--widgets: finished runs to time the views on")
    s.add_argument("--synthetic", default="10000,100", help="--widgets: N,C of the synthetic run ('' for none)")

    n = sub.add_parser("notebooks", help="copy the notebooks (01_train ... 05_compare) into a folder")
    n.add_argument("dest", metavar="DIR")
    n.add_argument("--force", action="store_true", help="overwrite notebooks already in DIR")
    return p


def _bad_input_types():
    from ltlab.config import ConfigError
    from ltlab.data import DataError
    from ltlab.evaluate import RunNotFinished
    from ltlab.io import CheckpointError

    return (ConfigError, DataError, CheckpointError, RunNotFinished)


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    try:
        bad_input = _bad_input_types()
    except Exception:  # import problems are a failure, not bad input
        raise
    try:
        if args.command == "train":
            from ltlab import config as config_mod
            from ltlab.train import fit

            cfg = config_mod.load(args.config, args.overrides)
            run_dir = fit(cfg, resume=args.resume, restart=args.restart, force=args.force)
            from ltlab.io import is_main
            if is_main():   # under torchrun, one line, not one per process
                print(run_dir)
        elif args.command == "eval":
            from ltlab.evaluate import compute_summary, load_run
            from ltlab.io import atomic_write_json

            run = load_run(args.run_dir)
            s = compute_summary(run.path / "predictions", epochs=run.config.get("epochs"))
            merged = {**run.summary, **s}
            if args.write:
                atomic_write_json(run.path / "summary.json", merged)
            print(json.dumps(merged, indent=2))
        elif args.command == "batch":
            from ltlab.batch import run_batch

            index = run_batch(args.experiments, reports=args.reports, rerun=args.rerun)
            print(index)
        elif args.command == "bench":
            if args.widgets:
                from ltlab.widget_bench import main as bench_main
            else:
                from ltlab.bench import main as bench_main
            bench_main(args)
        elif args.command == "notebooks":
            from ltlab.resources import copy_notebooks

            for f in copy_notebooks(args.dest, force=args.force):
                print(f)
    except bad_input as e:
        print(f"ltlab: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ltlab: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # the run failed: one line, and the traceback when asked
        import os
        import traceback

        if os.environ.get("LTLAB_DEBUG"):
            traceback.print_exc()
        print(f"ltlab: error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
