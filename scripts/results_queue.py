"""The results queue: train a grid's runs one after another, archive each as it finishes, resume the rest.

    nice -n 19 .venv/bin/python scripts/results_queue.py data_root=DIR --runs-root ~/ltlab-queue/runs
    .venv/bin/python scripts/results_queue.py --minutes 60 data_root=DIR     # as much as fits in an hour
    .venv/bin/python scripts/results_queue.py --dry-run                       # the plan only
    .venv/bin/python scripts/results_queue.py --status --runs-root ~/ltlab-queue/runs
    .venv/bin/python scripts/results_queue.py --save-carry --runs-root ~/ltlab-queue/runs   # before a session ends

Run directories live outside the repository (~/ltlab-queue/runs). A run still training when the machine
goes is carried to the next one by --save-carry (its checkpoint, about 4 MB, into experiments/queue_carry/,
committed) and restored by the next start; give it the same data_root and runs root as before. A run
that finished travels only as an archived run: --save-carry names (exit 1) every finished run that the
checkout's experiments/results does not hold yet, and the next start on a new machine skips every run
that it holds (--earlier), whatever --out is.

Same command again continues: finished runs are skipped, interrupted ones resume from their
checkpoints (~/ltlab-queue/runs by default), every finished run is archived into experiments/results/.
The logic and its rules are in ltlab/reports/queue.py.
"""
import argparse
import json
import os
import signal
import sys
from pathlib import Path

from ltlab.config import ConfigError
from ltlab.reports import archive
from ltlab.reports import queue as grid_runner


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sets", nargs="*", metavar="key=value", help="config keys set on every run (e.g. data_root=DIR)")
    p.add_argument("--experiments", default="experiments/cifar10_lt_queue.yaml")
    p.add_argument("--minutes", type=float, default=float("inf"),
                   help="time budget; running jobs stop at its end (default: none, the whole queue)")
    p.add_argument("--parallel", type=int, default=1,
                   help="training processes at once on the device (default 1: not measured on a GPU yet)")
    p.add_argument("--runs-root", default=str(Path.home() / "ltlab-queue" / "runs"),
                   help="run directories, outside the repository (default ~/ltlab-queue/runs)")
    p.add_argument("--out", default="experiments/results", help="archive root")
    p.add_argument("--earlier", action="append", default=None, metavar="DIR",
                   help="another archive whose runs count as done, never retrained (repeatable; default: "
                        "this checkout's committed experiments/results, so that a new machine with an empty "
                        "--out resumes the queue where the archive stands)")
    p.add_argument("--benchmark", help="archive benchmark folder (default from the config)")
    p.add_argument("--epoch-seconds", type=float, default=1.0,
                   help="first guess of seconds per epoch before any is measured (H100 CE: 0.63)")
    p.add_argument("--overhead", type=float, default=60.0, help="seconds per run for start-up, compile, predictions")
    p.add_argument("--dry-run", action="store_true", help="print the jobs, their state and estimates; run nothing")
    p.add_argument("--carry", default="experiments/queue_carry",
                   help="committed resume state of unfinished runs: restored at start when a run directory has none")
    p.add_argument("--save-carry", action="store_true",
                   help="copy every unfinished run's resume state into --carry (commit it before a session ends)")
    p.add_argument("--status", action="store_true",
                   help="print every run: done / training (epoch x of N, s/epoch, estimated finish) / queued")
    a = p.parse_args(argv)
    try:
        root = Path(a.runs_root)
        earlier = a.earlier if a.earlier is not None else [Path(__file__).resolve().parents[1] / "experiments" / "results"]
        jobs = grid_runner.jobs_from_spec(a.experiments, root, a.sets)
        if a.save_carry:
            print("carried:", ", ".join(grid_runner.save_carry(jobs, a.carry)) or "nothing")
            unlanded = grid_runner.unlanded(jobs, earlier)
            for j in unlanded:   # the carry holds unfinished runs only: a finished one lives in an archive
                print(f"results_queue: {j.name} finished but is not in {', '.join(map(str, earlier))}: "
                      f"archive it there and commit it, or it is lost with this machine", file=sys.stderr)
            return 1 if unlanded else 0
        if a.status:
            running, known = grid_runner.running_run_dirs(), archive.archived_sources(a.out)
            for j in jobs:
                print(grid_runner.format_status(grid_runner.job_status(j, running, known, out_root=a.out,
                                                                       earlier=earlier)))
            return 0
        if a.dry_run:   # the plan: a run archived in --out or --earlier is skipped, so it costs nothing
            for j in jobs:
                st = grid_runner.job_status(j, set(), set(), out_root=a.out, earlier=earlier)
                done = st["state"] == "done"
                est = 0.0 if done else grid_runner.estimate(j, root, a.parallel, a.epoch_seconds, a.overhead)
                print(f"{j.name:32s} {j.config.get('method'):18s} epochs {j.epochs:4d} done "
                      f"{st['epochs_done']:4d}  ~{est / 60:6.1f} min" + (f"  after {j.needs}" if j.needs else "")
                      + (f"  skipped: {st['note']}" if done else ""))
            return 0
        for name in grid_runner.restore_carry(jobs, a.carry):
            print(f"restored {name} from {a.carry}: resumes from its checkpoint")
        runner = grid_runner.Runner(jobs, root, a.out, minutes=a.minutes, parallel=a.parallel,
                                    default_epoch_seconds=a.epoch_seconds, overhead=a.overhead,
                                    benchmark=a.benchmark, earlier=earlier)
        report = runner.run()
    except ConfigError as e:
        print(f"results_queue: error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=1))
    if runner.stopped is not None:
        print(f"results_queue: stopped by {signal.Signals(runner.stopped).name}: its runs were interrupted and "
              "resume from their checkpoints next time", file=sys.stderr)
        return 128 + runner.stopped
    for e in runner.errors:
        print(f"results_queue: error: {e}", file=sys.stderr)
    return 1 if runner.errors or any(r["state"] == "failed" for r in report.values()) else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:   # `--status | head` closed the pipe: stop quietly, as a shell tool does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())   # so the exit's flush cannot raise again
        sys.exit(141)                                                   # 128 + SIGPIPE, the shell's own code
