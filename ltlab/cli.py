"""Command line: ltlab train | eval | batch | archive | table | bench | notebooks.

Exit codes: 0 success, 2 bad input (config, data, checkpoint, unfinished run), 1 the run
itself failed. Errors print one line: 'ltlab: error: <what is wrong and what is allowed>'.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

EXAMPLES = """examples:
  ltlab train -c experiments/cifar10_lt_ce.yaml epochs=30 seed=1
  ltlab train -c CONFIG.yaml --resume          # continue from run_dir/checkpoint.pt
  ltlab eval runs/demo_ce_if100_s0              # recompute the summary from predictions/
  ltlab batch experiments/demo.yaml             # papermill grid -> reports/<batch>/index.html
  ltlab batch experiments/demo.yaml --jobs 2    # two runs at once on this machine
  ltlab batch GRID.yaml --executor slurm --jobs 16 --partition gpu --gpus 1 --time 240
  ltlab batch GRID.yaml --status                # queued / running / done / failed, submits nothing
  ltlab archive runs/ce runs/crt                # -> experiments/results/<benchmark>/<method>/seed<k>/
  ltlab table experiments/results/cifar10_lt_if100 --markdown
"""


class _Parser(argparse.ArgumentParser):
    """argparse's errors as the one line every other bad input gets (not usage + error)."""

    def error(self, message):
        command = self.prog.removeprefix("ltlab").strip()
        self.exit(2, f"ltlab: error: {command + ': ' if command else ''}{message} (see {self.prog} --help)\n")


def _count(low: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} is below {low}; allowed: integers >= {low}")
        return value
    return parse


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="ltlab", description="Long-tailed recognition workbench.",
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
                                   "reports/<batch>/index.html. Finished runs with the same parameters are skipped. "
                                   "Exits 1 when any run failed (the index still lists every run).")
    b.add_argument("experiments")
    b.add_argument("--reports", default="reports", help="folder for rendered reports (default: reports)")
    b.add_argument("--rerun", action="store_true", help="execute every run again, finished or not")
    b.add_argument("--status", action="store_true",
                   help="print each run's state (queued/running/done/failed), rewrite the index, execute nothing")
    x = b.add_argument_group("executor (default: the YAML's executor: section, else local with 1 job)")
    x.add_argument("--executor", choices=("local", "slurm"), help="local processes, or a SLURM job array via submitit")
    x.add_argument("--jobs", type=int, help="runs at once (local processes, or the SLURM array's limit)")
    x.add_argument("--partition", help="SLURM partition")
    x.add_argument("--time", type=int, help="SLURM time limit per run, minutes")
    x.add_argument("--gpus", type=int, help="SLURM GPUs per run")
    x.add_argument("--cpus", type=int, help="SLURM CPUs per run")
    x.add_argument("--mem", help="SLURM memory per run, e.g. 32G")

    a = sub.add_parser("archive", help="copy finished runs into a results archive and check their numbers",
                       description="Write ROOT/<benchmark>/<method>/seed<k>/ for each RUN_DIR (config, metrics, summary, "
                                   "provenance, float16 predictions; no checkpoint) and check that every summary number "
                                   "recomputes from the archived predictions (ltlab/reports/archive.py). Stage ones first.")
    a.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    a.add_argument("--out", default="experiments/results", help="archive root (default: experiments/results)")
    a.add_argument("--benchmark", help="benchmark folder (default from the config, e.g. cifar10_lt_if100)")
    a.add_argument("--method", help="method folder (default: the config's method)")
    a.add_argument("--features-kib", type=_count(0), default=256,
                   help="keep features (float16) up to this size (default 256)")
    a.add_argument("--force", action="store_true", help="replace an existing archived copy")
    a.add_argument("--verify", action="store_true", help="RUN_DIRs are archived copies: only check them again")

    lb = sub.add_parser("table", help="leaderboard of an archived benchmark beside the published numbers")
    lb.add_argument("benchmark_dir", nargs="?", help="e.g. experiments/results/cifar10_lt_if100")
    lb.add_argument("--markdown", action="store_true", help="a Markdown table (what the README shows)")
    lb.add_argument("--benchmark", help="benchmark of the published numbers (default: the folder's name)")
    lb.add_argument("--runs-only", action="store_true", help="only methods with runs (default: every recipe)")
    lb.add_argument("--ci", action="store_true",
                    help="add a 95%% interval of top-1: over seeds (t) where n >= 2, else a bootstrap over test images")
    lb.add_argument("--update-readme", metavar="README",
                    help="regenerate every '<!-- begin: ltlab table ... -->' block of README from its command")

    c = sub.add_parser("compare", help="A - B with a paired interval and McNemar's test, said in words",
                       description="Two run directories: the difference in balanced accuracy, top-1, few and ECE "
                                   "with a paired bootstrap interval over the same test images and McNemar's exact "
                                   "test; two folders of seed runs: a paired t-interval over seeds "
                                   "(ltlab/reports/compare.py).")
    c.add_argument("run_a", metavar="A", help="a run directory, or a folder of seed runs (e.g. .../crt)")
    c.add_argument("run_b", metavar="B", help="the same kind as A")
    c.add_argument("--resamples", type=_count(100), default=2000, help="bootstrap resamples (default 2000)")
    c.add_argument("--seed", type=_count(0), default=0, help="seed of the resampling (default 0)")
    c.add_argument("--json", action="store_true", help="print the numbers as JSON")

    s = sub.add_parser("bench", help="images/s of ltlab's loop vs a classic DataLoader pipeline")
    s.add_argument("--steps", type=_count(1), default=50, help="training steps per measurement")
    s.add_argument("--repeats", type=_count(1), default=3, help="interleaved A/B repeats")
    s.add_argument("--batch-size", type=_count(1), default=128)
    s.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    s.add_argument("--workers", type=_count(0), default=2, help="DataLoader workers of the reference pipeline")
    s.add_argument("--out", help="write the results as JSON to this file (an existing one: with --force)")
    s.add_argument("--force", action="store_true", help="overwrite the --out file of an earlier measurement")
    s.add_argument("--compile", default="auto", choices=("auto", "on", "graphs", "off"),
                   help="torch.compile mode of ltlab's loop (auto: what a 200-epoch CIFAR-10-LT run gets: "
                        "CUDA graphs on cuda; on a CPU, compiled when a C++ compiler is there)")
    s.add_argument("--eval-batch", type=_count(0), default=0,
                   help="images per evaluation batch (default: what runs use, 1,024 on cuda, 128 on a CPU)")
    s.add_argument("--profile", action="store_true", help="also print a torch.profiler table of ltlab steps")
    s.add_argument("--widgets", action="store_true",
                   help="instead: time every notebook widget's redraw (ltlab.interactive.widget_bench) on RUN_DIRs and a synthetic run")
    s.add_argument("runs", nargs="*", metavar="RUN_DIR", help="--widgets: finished runs to time the views on")
    s.add_argument("--synthetic", default="10000,100", help="--widgets: N,C of the synthetic run ('' for none)")

    n = sub.add_parser("notebooks", help="copy the notebooks (01_train ... 05_compare) into a folder")
    n.add_argument("dest", metavar="DIR")
    n.add_argument("--force", action="store_true", help="overwrite notebooks already in DIR")
    return p


def _bad_input_types():
    from ltlab.config import ConfigError
    from ltlab.data import DataError
    from ltlab.evaluation.run_dir import RunFileError, RunNotFinished
    from ltlab.models.checkpoints import CheckpointError

    return (ConfigError, DataError, CheckpointError, RunNotFinished, RunFileError)


def _check_flags(parser, args) -> None:
    """Flag combinations that would silently do something else than asked."""
    if args.command == "train" and args.resume and args.restart:
        parser.error("train --resume and --restart together: --restart discards the checkpoint --resume would continue")
    if args.command == "train" and args.force and not args.resume:
        parser.error("train --force without --resume: it only lets --resume continue a checkpoint whose config differs")
    out = getattr(args, "out", None)
    if args.command == "bench" and out and not Path(out).resolve().parent.is_dir():
        parser.error(f"bench --out {out!r}: its folder does not exist (the results are written after minutes of measuring)")
    if args.command == "bench" and out and Path(out).exists() and not args.force:
        parser.error(f"bench --out {out!r} exists (an earlier measurement): pass --force to overwrite it, or another file")
    if args.command == "batch" and Path(args.reports).exists() and not Path(args.reports).is_dir():
        parser.error(f"batch --reports {args.reports!r} is a file; expected a folder (created if absent)")


def main(argv=None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    _check_flags(parser, args)
    try:
        bad_input = _bad_input_types()
    except Exception:  # import problems are a failure, not bad input
        raise
    try:
        if args.command == "train":
            from ltlab.methods import resolve as config_mod
            from ltlab.training.loop import fit

            cfg = config_mod.load(args.config, args.overrides)
            run_dir = fit(cfg, resume=args.resume, restart=args.restart, force=args.force)
            from ltlab.io import is_main
            if is_main():   # under torchrun, one line, not one per process
                from ltlab.evaluation.health import check_run
                for line in check_run(run_dir):
                    print(f"ltlab: warning: {line}", file=sys.stderr)
                print(run_dir)
            from ltlab.training.distributed import exit_worker
            exit_worker(0)   # a torchrun worker on gloo ends here (its docstring); otherwise a no-op
        elif args.command == "eval":
            from ltlab.evaluation.run_dir import compute_summary, interval_fields, load_run
            from ltlab.io import atomic_write_json

            run = load_run(args.run_dir)
            s = compute_summary(run.path / "predictions", epochs=run.config.get("epochs"))
            merged = {**run.summary, **s, **interval_fields(run.path / "predictions", s.get("temperature"))}
            if args.write:
                atomic_write_json(run.path / "summary.json", merged)
            print(json.dumps(merged, indent=2))
        elif args.command == "batch":
            from ltlab.reports.batch import run_batch

            flags = {"name": args.executor, **{k: getattr(args, k) for k in ("jobs", "partition", "time", "gpus",
                                                                           "cpus", "mem")}}
            index = run_batch(args.experiments, reports=args.reports, rerun=args.rerun, executor=flags,
                              status=args.status)
            print(index)
            state = json.loads((index.parent / "batch.json").read_text())
            failed = state["counts"].get("failed", 0)
            what = [f"{failed} run(s)"] * bool(failed) + ["the compare notebook"] * (state.get("compare") == "failed")
            if what and not args.status:   # a grid with failures must not read as done in make or a script
                print(f"ltlab: error: {' and '.join(what)} of the batch failed; see {index}", file=sys.stderr)
                return 1
        elif args.command == "archive":
            from ltlab.reports import archive

            if args.verify:
                for d in args.run_dirs:
                    archive.verify(d)
                    print(f"{d}: every summary number recomputes")
            else:
                for d in archive.archive_runs(args.run_dirs, args.out, benchmark=args.benchmark, method=args.method,
                                              features_kib=args.features_kib, force=args.force):
                    print(d)
        elif args.command == "table":
            from ltlab.reports import leaderboard

            if args.update_readme:
                print(f"{args.update_readme}: {leaderboard.update_readme(args.update_readme)} table(s) regenerated")
            elif not args.benchmark_dir:
                from ltlab.config import ConfigError
                raise ConfigError("ltlab table: give a results folder (e.g. experiments/results/cifar10_lt_if100) "
                                  "or --update-readme README.md")
            else:
                flags = [f"--{k.replace('_', '-')}" for k in ("markdown", "runs_only", "ci") if getattr(args, k)]
                bench = ["--benchmark", args.benchmark] if args.benchmark else []
                print(leaderboard.render([args.benchmark_dir, *flags, *bench]), end="")
        elif args.command == "compare":
            from ltlab.reports.compare import compare_runs

            res = compare_runs(args.run_a, args.run_b, n_resamples=args.resamples, seed=args.seed)
            print(json.dumps(res, indent=2) if args.json else "\n".join(res["lines"]))
        elif args.command == "bench":
            if args.widgets:
                from ltlab.interactive.widget_bench import main as bench_main
            else:
                from ltlab.training.bench import main as bench_main
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
