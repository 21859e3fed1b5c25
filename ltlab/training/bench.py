"""`ltlab bench`: ltlab's training loop against the seed repositories' classic pipeline.

(a) ltlab: uint8 images resident on the device, batched crop/flip/normalize there, bf16
    autocast on CUDA, torch.compile as a full-length run gets it (CUDA graphs on CUDA, plain
    on a CPU), channels_last, fused/foreach SGD, the loss kept on the device
    (ltlab.training.loop.train_one_epoch itself).
(b) reference, written here the way the LDAM-DRW lineage does it: torchvision transforms
    on PIL images in DataLoader workers, fp32, the plain model, default SGD, loss.item()
    every step for the progress meter.

Same ResNet-32, same batch size, same images (the demo set's training split), A and B
interleaved over several repeats; the medians are reported. Nothing here is asserted:
the benchmark is a command that reports what it measured.
"""
from __future__ import annotations

import itertools
import json
import platform
import statistics
import time

import torch
import torch.nn.functional as F

from ltlab.data import build_data
from ltlab.data.gpu_loader import eval_batch_size
from ltlab.evaluation.posthoc import benchmark_posthoc
from ltlab.io import atomic_write_json
from ltlab.methods import METHODS
from ltlab.methods.resolve import from_dict
from ltlab.models import build_model
from ltlab.models.inference import autocast_dtype, predict
from ltlab.training.loop import compile_model, resolve_compile, resolve_device, train_one_epoch


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _Steps:
    """A GpuLoader cut to a fixed number of steps (cycling epochs when needed)."""

    def __init__(self, loader, steps):
        self.loader, self.steps, self.epoch = loader, steps, 1

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __iter__(self):
        def batches():
            e = self.epoch * 1000
            while True:
                self.loader.set_epoch(e)
                yield from self.loader
                e += 1
        return itertools.islice(batches(), self.steps)

    def __len__(self):
        return self.steps


# 'auto' resolves as for a full-length run: 200 epochs of CIFAR-10-LT IF 100 (12,406 images)
# at batch 128 are 19,400 steps.
FULL_RUN_STEPS = 200 * -(-12406 // 128)   # ceil: the short last batch is a step too


def bench_ltlab(data, device, steps, batch_size, compile_mode, amp):
    plain = build_model("resnet32", data.num_classes).to(device, memory_format=torch.channels_last)
    model = compile_model(plain, compile_mode)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=2e-4,
                          fused=device.type == "cuda" or None, foreach=device.type != "cuda")
    loss_fn = METHODS["ce"].build_loss(None, data)
    loader = _Steps(data.train_loader(batch_size, seed=0), steps)
    recipe = METHODS["ce"]

    def run(epoch):
        _sync(device)
        t = time.perf_counter()
        train_one_epoch(model, loader, loss_fn, opt, recipe, epoch=epoch, seed=0, amp_dtype=amp)
        _sync(device)
        return steps * batch_size / (time.perf_counter() - t)

    t = time.perf_counter()
    run(0)  # warm-up: compilation, autotuning, allocator
    return plain, run, time.perf_counter() - t


def bench_reference(data, device, steps, batch_size, workers):
    import torchvision.transforms as T
    from PIL import Image


    x = data.train_x.permute(0, 2, 3, 1).cpu().numpy()
    y = data.train_y.cpu().numpy()

    class PILDataset(torch.utils.data.Dataset):
        tf = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(),
                        T.Normalize(data.mean, data.std)])

        def __len__(self):
            return len(x)

        def __getitem__(self, i):
            return self.tf(Image.fromarray(x[i])), int(y[i])

    loader = torch.utils.data.DataLoader(PILDataset(), batch_size=batch_size, shuffle=True, num_workers=workers,
                                         pin_memory=device.type == "cuda", drop_last=True,
                                         persistent_workers=workers > 0)
    model = build_model("resnet32", data.num_classes).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=2e-4)

    def batches():
        while True:
            yield from loader

    it = batches()

    def run(_epoch):
        model.train()
        _sync(device)
        t = time.perf_counter()
        for xb, yb in itertools.islice(it, steps):
            xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
            loss = F.cross_entropy(model(xb)["logits"], yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            loss.item()  # the seed repos update an AverageMeter every step
        _sync(device)
        return steps * batch_size / (time.perf_counter() - t)

    run(0)
    return run


def bench_eval(model, data, device, batch_size, amp, repeats=3):
    """Evaluation as runs do it (ltlab.evaluation.run_dir.predict on the plain module, inference mode)."""

    loader = data.eval_loader("test", batch_size)
    predict(model, loader, METHODS["ce"], amp_dtype=amp, features=False)
    rates = []
    for _ in range(repeats):
        _sync(device)
        t = time.perf_counter()
        predict(model, loader, METHODS["ce"], amp_dtype=amp, features=False)
        _sync(device)
        rates.append(len(data.test_y) / (time.perf_counter() - t))
    return statistics.median(rates)


def profile_step(model_run, device, path=None) -> str:
    """Top operators of a few ltlab steps (torch.profiler), as a table string."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=acts) as prof:
        model_run(99)
    key = "cuda_time_total" if device.type == "cuda" else "cpu_time_total"
    return prof.key_averages().table(sort_by=key, row_limit=15)


def main(args) -> dict:
    device = resolve_device(args.device)
    cfg = from_dict({"dataset": "demo", "device": device.type})
    data = build_data(cfg, device)
    eval_batch = getattr(args, "eval_batch", 0) or eval_batch_size(device)   # default: what runs use
    compile_mode = resolve_compile(getattr(args, "compile", "auto"), device, FULL_RUN_STEPS)
    torch.manual_seed(0)
    amp = autocast_dtype(cfg, device)   # what a run gets: bf16 on CUDA, fp32 on a CPU
    model, run_a, warmup_s = bench_ltlab(data, device, args.steps, args.batch_size, compile_mode, amp)
    run_b = bench_reference(data, device, args.steps, args.batch_size, args.workers)
    a, b = [], []
    for r in range(args.repeats):  # interleaved, so drifts in machine load hit both
        a.append(run_a(r + 1))
        b.append(run_b(r + 1))
    res = {
        "ltlab_img_s": round(statistics.median(a), 1),
        "reference_img_s": round(statistics.median(b), 1),
        "ratio": round(statistics.median(a) / statistics.median(b), 2),
        "ltlab_img_s_runs": [round(v, 1) for v in a],
        "reference_img_s_runs": [round(v, 1) for v in b],
        "eval_img_s": round(bench_eval(model, data, device, eval_batch, amp), 1),
        "ltlab_warmup_s": round(warmup_s, 1),
        "posthoc_ms": round(benchmark_posthoc(), 2),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
        "torch": torch.__version__,
        "settings": {"steps": args.steps, "repeats": args.repeats, "batch_size": args.batch_size,
                     "reference_workers": args.workers, "ltlab_bf16": amp is not None,
                     "ltlab_compile": compile_mode, "compile_arg": getattr(args, "compile", "auto"),
                     "ltlab_channels_last": True, "eval_batch": eval_batch, "model": "resnet32",
                     "images": "demo train split (1,236 CIFAR-10 images, 32x32)"},
    }
    if getattr(args, "profile", False):
        res["profile"] = profile_step(run_a, device)
    print(f"device: {res['device']}   torch {res['torch']}   settings: {json.dumps(res['settings'])}")
    print(f"ltlab loop      {res['ltlab_img_s']:>10.1f} img/s   runs {res['ltlab_img_s_runs']}")
    print(f"reference       {res['reference_img_s']:>10.1f} img/s   runs {res['reference_img_s_runs']}")
    print(f"ratio           {res['ratio']:>10.2f} x")
    print(f"ltlab warm-up   {res['ltlab_warmup_s']:>10.1f} s (first {args.steps} steps, compilation included)")
    print(f"evaluation      {res['eval_img_s']:>10.1f} img/s (inference mode, batch {eval_batch})")
    print(f"post-hoc        {res['posthoc_ms']:>10.2f} ms  (prior correction + top-1 + ECE + AUROC over 10,000 x 100 logits)")
    if "profile" in res:
        print(res["profile"])
    if args.out:
        atomic_write_json(args.out, {k: v for k, v in res.items()})
    return res
