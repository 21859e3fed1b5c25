"""Time the bootstrap intervals of ltlab.evaluation.intervals / paired on a run-sized input.

    python scripts/bench_intervals.py                    # 10,000 x 100 logits, 1,000 resamples
    python scripts/bench_intervals.py --n 50000 --classes 1000

Prints the median wall time over --repeats calls (after one untimed warm-up call) of
bootstrap_cis (all metrics, with a temperature and shot groups) and of paired_bootstrap (its
default 2,000 resamples), and the thread settings that decide it. The target is under 2 s for
bootstrap_cis at the default size.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np

from ltlab.evaluation.intervals import bootstrap_cis
from ltlab.evaluation.paired import paired_bootstrap


def thread_info() -> str:
    lines = [f"python {platform.python_version()}, numpy {np.__version__}, cpus {os.cpu_count()}"]
    env = {k: os.environ[k] for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS") if k in os.environ}
    lines.append(f"thread env: {env or 'none set'}")
    try:
        from threadpoolctl import threadpool_info

        for p in threadpool_info():
            lines.append(f"  {p.get('internal_api')}: {p.get('num_threads')} threads ({p.get('filepath', '')})")
    except ImportError:
        lines.append("  threadpoolctl not installed: numpy BLAS threads unknown")
    try:
        import torch

        lines.append(f"torch {torch.__version__}: {torch.get_num_threads()} intra-op threads (not used by these functions)")
    except ImportError:
        lines.append("torch not installed")
    return "\n".join(lines)


def timed(fn, repeats: int) -> tuple[float, float]:
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return first, statistics.median(times)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--classes", type=int, default=100)
    ap.add_argument("--resamples", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)

    rng = np.random.default_rng(0)
    n, c = args.n, args.classes
    labels = np.repeat(np.arange(c), -(-n // c))[:n]
    logits = rng.normal(size=(n, c)).astype(np.float32)
    logits[np.arange(n), labels] += 2.5                                  # ~ 50-60% top-1
    logits_b = logits + rng.normal(scale=0.5, size=logits.shape).astype(np.float32)
    train_counts = np.round(500 * 0.01 ** (np.arange(c) / max(c - 1, 1))).astype(int)   # many/medium/few

    print(thread_info())
    print(f"input: {n} x {c} logits, {args.resamples} resamples; median of {args.repeats} after one warm-up")
    first, med = timed(lambda: bootstrap_cis(logits, labels, train_counts, n_resamples=args.resamples,
                                             temperature=1.5), args.repeats)
    print(f"bootstrap_cis    (9 metrics, {args.resamples} resamples): median {med:.3f} s (first call {first:.3f} s)")
    first, med = timed(lambda: paired_bootstrap(logits, logits_b, labels, train_counts), args.repeats)
    print(f"paired_bootstrap (4 metrics x 2 runs, 2000 resamples): median {med:.3f} s (first call {first:.3f} s)")


if __name__ == "__main__":
    main()
