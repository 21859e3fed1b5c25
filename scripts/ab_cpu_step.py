"""Side-by-side ResNet-32 training-step throughput on a CPU, model only (no data pipeline).

Variants, interleaved round by round in one process so machine-load drifts hit them all:
eager NCHW fp32 (the reference pipeline's step), eager channels_last fp32 and bf16 autocast,
torch.compile'd channels_last fp32 and bf16. Synthetic batch of 128, SGD with momentum.
--inductor adds the compiled fp32 step under three inductor options (cpp_wrapper,
aggressive_fusion, max_autotune). The CPU statements of docs/performance.md (bf16 autocast does not help on
this CPU; compile is what gains; those options do not) come from this script:

    .venv/bin/python scripts/ab_cpu_step.py --steps 8 --rounds 5
    .venv/bin/python scripts/ab_cpu_step.py --steps 8 --rounds 4 --inductor
"""
import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from ltlab.models import build_model

VARIANTS = {  # name: (channels_last, bf16 autocast, torch.compile, inductor options)
    "eager_nchw_fp32": (False, False, False, None),
    "eager_cl_fp32": (True, False, False, None),
    "eager_cl_bf16": (True, True, False, None),
    "compiled_cl_fp32": (True, False, True, None),
    "compiled_cl_bf16": (True, True, True, None),
}
INDUCTOR = {
    "compiled_cppwrapper": (True, False, True, {"cpp_wrapper": True}),
    "compiled_aggressive": (True, False, True, {"aggressive_fusion": True}),
    "compiled_autotune": (True, False, True, {"max_autotune": True}),
}


def make_step(cl: bool, bf16: bool, compiled: bool, options, x, y):
    model = build_model("resnet32", 10)
    if cl:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=2e-4, foreach=True)
    fwd = torch.compile(model, dynamic=False, options=options) if compiled else model

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = fwd(x)["logits"]
        F.cross_entropy(logits.float(), y).backward()
        opt.step()
    return step


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=8, help="steps per timed round")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds")
    ap.add_argument("--inductor", action="store_true", help="also the compiled step under inductor options")
    args = ap.parse_args()
    variants = {**VARIANTS, **(INDUCTOR if args.inductor else {})}
    torch.manual_seed(0)
    x, y = torch.randn(128, 3, 32, 32), torch.randint(0, 10, (128,))
    steps = {}
    for name, flags in variants.items():
        steps[name] = make_step(*flags, x, y)
        t = time.perf_counter()
        for _ in range(3):   # warm-up, compilation included
            steps[name]()
        print(f"{name:18s} warm-up {time.perf_counter() - t:6.1f} s", flush=True)
    rates = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, step in steps.items():
            t = time.perf_counter()
            for _ in range(args.steps):
                step()
            rates[name].append(args.steps * 128 / (time.perf_counter() - t))
    base = statistics.median(rates["eager_nchw_fp32"])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; median img/s over {args.rounds} rounds")
    for name, r in rates.items():
        med = statistics.median(r)
        print(f"{name:18s} {med:7.1f} img/s  {med / base:5.2f}x  rounds {[round(v) for v in r]}")


if __name__ == "__main__":
    main()
