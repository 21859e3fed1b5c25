"""Training: fit(config) -> run_dir, with train_one_epoch / evaluate as in torchvision's
references/classification.

Every epoch's randomness (order, crops, flips, mixup) is a function of (seed, epoch), so a
run resumed from its checkpoint replays exactly what an uninterrupted run would have done.
The reported model is the last epoch's: nothing here looks at the test set to choose.

Under ``torchrun --nproc_per_node=N $(which ltlab) train ...`` the same code runs once per
GPU (ltlab.training.distributed, detected from the environment): ``batch_size`` stays the global
batch, split over processes and ``accum_steps`` micro-batches; only rank 0 writes files or
shows progress; evaluation counts every test image exactly once.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import resource
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from ltlab.config import ConfigError, RunConfig
from ltlab.data import build_data
from ltlab.evaluation.metrics import balanced_accuracy, ece_from_logits, top1
from ltlab.evaluation.run_dir import is_finished, read_metrics, read_yaml
from ltlab.io import atomic_write_text, is_main
from ltlab.methods import METHODS, resolve
from ltlab.models import load_weights
from ltlab.models.checkpoints import CheckpointError, atomic_torch_save, load_checkpoint
from ltlab.models.inference import autocast_dtype
from ltlab.training import distributed as D
from ltlab.training import provenance, schedule
from ltlab.training.finish import finish_run
from ltlab.training.lock import run_dir_lock
from ltlab.training.schedule import lr_at_step, warmup_steps
from ltlab.training.tblog import EpochLog


class RunError(RuntimeError):
    """The run itself failed (diverged loss, unusable device...)."""


# ---------------------------------------------------------------------------- device / amp
def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("config key 'device' = 'cuda': no CUDA device is visible here; use device=auto or cpu")
    return torch.device(name)


def _quiet(progress: bool) -> dict:
    """tqdm kwargs: off when progress is off or TQDM_DISABLE=1 (CI, `ltlab batch`). The variable
    is read here because tqdm.auto in Jupyter (tqdm.notebook) passes disable=False itself and
    ignores it: every batch report carried progress widgets that load their code from a CDN."""
    off = not progress or os.environ.get("TQDM_DISABLE", "").lower() in ("1", "true", "yes")
    return {"disable": True} if off else {}


def epoch_rng(seed: int, epoch: int) -> np.random.RandomState:
    return np.random.RandomState([seed, epoch, 7])


# ---------------------------------------------------------------------------- one epoch
def set_lr(optimizer, lr: float) -> None:
    for g in optimizer.param_groups:
        g["lr"] = lr * g.get("lr_scale", 1.0)


def train_one_epoch(model, loader, loss_fn, optimizer, recipe, *, epoch, seed, mixup_alpha=0.0,
                    amp_dtype=None, progress=False, lr_of_step=None):
    """One pass over the loader. Returns (mean loss, index of the first non-finite step or -1).

    ``loader`` yields ``(x, y)`` batches, one optimizer step each, or is a
    distributed.StepBatches whose steps are lists of weighted micro-batches (several
    processes and/or gradient accumulation). Loss and the non-finite flag stay on the device
    until the epoch ends: no host synchronisation inside the step. ``lr_of_step(step)``, when
    given, sets each group's lr (times its lr_scale) before each step: a per-step warm-up.
    """
    steps = loader if isinstance(loader, D.StepBatches) else D.StepBatches(loader)
    model.train()
    recipe.train_mode(D.unwrap(model))   # recipes set modes on the plain module (e.g. a frozen backbone)
    steps.set_epoch(epoch)
    if hasattr(loss_fn, "set_epoch"):
        loss_fn.set_epoch(epoch)
    rng = epoch_rng(seed, epoch)
    device = next(model.parameters()).device
    total = torch.zeros((), device=device)
    first_bad = torch.full((), -1, dtype=torch.long, device=device)
    n_steps = 0
    bar = tqdm(steps, desc=f"epoch {epoch}", leave=False, mininterval=2, **_quiet(progress))
    for step, micro in enumerate(bar):
        if lr_of_step is not None:
            set_lr(optimizer, lr_of_step(step))
        optimizer.zero_grad(set_to_none=True)
        for j, (x, y, w) in enumerate(micro):
            # gradients are all-reduced once per optimizer step, in the last micro-batch's backward
            with D.no_sync(model, sync=j == len(micro) - 1):
                lam = None
                if mixup_alpha > 0:
                    lam = float(rng.beta(mixup_alpha, mixup_alpha))
                    perm = torch.from_numpy(rng.permutation(x.shape[0])).to(device, non_blocking=True)
                    x = lam * x + (1 - lam) * x[perm]
                with torch.autocast(device.type, dtype=amp_dtype or torch.bfloat16, enabled=amp_dtype is not None):
                    out = model(x)
                if lam is None:
                    loss = loss_fn(out, y)
                else:
                    loss = lam * loss_fn(out, y) + (1 - lam) * loss_fn(out, y[perm])
                (loss if w == 1.0 else loss * w).backward()
            loss = loss.detach()
            bad = ~torch.isfinite(loss) & (first_bad < 0)
            first_bad = torch.where(bad, torch.full_like(first_bad, step), first_bad)
            # w / world per micro-batch: summed over micro-batches and processes, the global-batch mean
            total += loss if (w == 1.0 and steps.world == 1) else loss * (w / steps.world)
        recipe.clip_gradients(model)
        optimizer.step()
        n_steps += 1
    if steps.world > 1:   # each process summed its share of every step's loss
        torch.distributed.all_reduce(total)
        torch.distributed.all_reduce(first_bad, op=torch.distributed.ReduceOp.MAX)
    return (total / max(n_steps, 1)).item(), int(first_bad.item())


@torch.inference_mode()
def evaluate(model, loader, recipe, amp_dtype=None) -> dict:
    """Test-split accuracy, balanced accuracy and ECE for the learning curves (under torchrun
    ``loader`` is this process's shard, and the gathered predictions are scored)."""
    pred = D.predict_sharded(model, loader, recipe, amp_dtype=amp_dtype, features=False)
    logits, labels = pred["logits"], pred["labels"]
    c = logits.shape[1]
    return {"test_top1": top1(logits.argmax(1), labels),
            "test_balanced_acc": balanced_accuracy(logits.argmax(1), labels, c),
            "test_ece": ece_from_logits(logits, labels)}


# A cold torch.compile of ResNet-32's training step took 45-60 s a graph on the 2-core CPU we
# measured on (a short last batch is a second graph; about 4 s a graph from inductor's on-disk
# cache), then saved about 0.07 s a step (1.15-1.2x over eager channels_last,
# scripts/ab_cpu_step.py). It pays back after about 1,100 steps, so 'auto' compiles CPU runs of
# at least 2,000 (a 200-epoch CIFAR-10-LT run has 19,400; the demo 100).
CPU_COMPILE_MIN_STEPS = 2000


def resolve_compile(mode: str, device: torch.device, train_steps: int, distributed: bool = False) -> str:
    """The compile mode a run gets: 'off', 'on' or 'graphs'. 'auto' is 'graphs' on CUDA ('on'
    under torchrun: CUDA graphs cannot hold DDP's gradient all-reduce), and on a CPU 'on' for
    runs of at least CPU_COMPILE_MIN_STEPS training steps in one process when a C++ compiler is
    there for inductor (without one 'auto' stays eager; compile=on then fails loudly)."""
    if mode == "graphs" and device.type != "cuda":
        raise ConfigError(f"compile=graphs needs a CUDA device, not '{device.type}'; use on, off or auto")
    if mode != "auto":
        return mode
    if device.type == "cuda":
        return "on" if distributed else "graphs"
    if device.type == "cpu" and not distributed and train_steps >= CPU_COMPILE_MIN_STEPS and _cxx_available():
        return "on"   # (compiled DDP on gloo is untested, so several CPU processes stay eager)
    return "off"


def _cxx_available() -> bool:
    return any(shutil.which(c) for c in (os.environ.get("CXX", ""), "g++", "clang++") if c)


def compile_model(model, mode: str):
    """torch.compile for the training step ('off' | 'on' | 'graphs', see resolve_compile).
    'graphs' adds CUDA graphs (mode reduce-overhead): ResNet-32 steps are so small that
    kernel-launch overhead on the host, not the GPU, bounds the step otherwise. dynamic=False:
    the short last batch gets its own static graph instead of making every step's graph dynamic."""
    if mode == "off":
        return model
    return torch.compile(model, dynamic=False, mode="reduce-overhead" if mode == "graphs" else None)


# ---------------------------------------------------------------------------- checkpoints
def _unwrap(model):
    return D.unwrap(model)


def save_checkpoint(path, model, optimizer, epoch, cfg: RunConfig):
    atomic_torch_save(path, {
        "model": _unwrap(model).state_dict(),   # no 'module.' / '_orig_mod.' prefixes
        "optimizer": optimizer.state_dict(),
        "scheduler": {"epoch": epoch},   # the lr is a pure function of (config, epoch)
        "epoch": epoch,
        "rng": {"torch": torch.get_rng_state()},
        "config": cfg.to_dict(),
    })


def config_diff(a: dict, b: dict, ignore=("epochs", "eval_every", "progress", "device", "run_dir", "compile",
                                         "num_workers")) -> list:
    """Keys whose values differ; a key absent from one side (a config saved before the key
    existed) counts as its default."""
    defaults = RunConfig().to_dict()
    keys = sorted(set(a) | set(b))
    return [k for k in keys if k not in ignore and a.get(k, defaults.get(k)) != b.get(k, defaults.get(k))]


def _truncate_metrics(path: Path, last_epoch: int):
    """Keep metrics.csv rows up to the checkpoint's epoch (rows written after it are replayed)."""
    if path.exists():
        df = read_metrics(path)
        df = df[df["epoch"] <= last_epoch]
        atomic_write_text(path, df.to_csv(index=False))


def _append_row(path: Path, row: dict):
    df = pd.read_csv(path) if path.exists() else pd.DataFrame()
    df = pd.concat([df, pd.DataFrame([row])], ignore_index=True)
    atomic_write_text(path, df.to_csv(index=False))


# ---------------------------------------------------------------------------- fit
def fit(config, *, resume: bool = False, restart: bool = False, force: bool = False) -> Path:
    """Train one run to the end and return its run directory.

    resume: continue from run_dir/checkpoint.pt (refused if the config differs, unless force).
    restart: discard what run_dir holds and start over.
    Under torchrun every process calls this; the process group is joined here (before a
    recipe's own stage one, which is a fit of its own) and left at the end.
    """
    cfg = resolve.coerce(config)
    ctx = D.setup(resolve_device(cfg.device))
    with run_dir_lock(cfg.resolved_run_dir(), enabled=ctx.main):
        cfg = train_own_stage1(cfg, resume=resume)
        run_dir = _fit(cfg, ctx, resume=resume, restart=restart, force=force)
    D.destroy(ctx)   # after an exception torchrun stops the other processes; nothing to tidy here
    return run_dir


def train_own_stage1(cfg: RunConfig, *, resume: bool = False) -> RunConfig:
    """A recipe that trains its own stage one (MiSLAS without stage1_run) gets it here: a finished
    one in <run_dir>_stage1 is reused if its config matches (epochs included), an unfinished one
    resumed, else trained; the run then continues as stage two with stage1_run pointing at it."""
    recipe = METHODS[cfg.method]
    s1_dict = recipe.own_stage1(cfg)
    if s1_dict is None:
        return cfg
    s1 = resolve.from_dict(s1_dict)
    s1_dir = s1.resolved_run_dir()
    if cfg.progress:
        D.log(f"{cfg.method} plan: stage one ({s1.method}, mixup {s1.mixup_alpha:g}) -> {s1_dir}: "
              f"{schedule.describe(s1)}")
        D.log(f"{cfg.method} plan: stage two ({cfg.sampler} sampler) -> "
              f"{cfg.resolved_run_dir()}: {schedule.describe(cfg)}")
    if is_finished(s1_dir):
        saved = read_yaml(s1_dir / "config.yaml")
        # unlike a resume, a reused stage one must match in epochs too
        diff = config_diff(saved, s1.to_dict(), ignore=("eval_every", "progress", "device", "run_dir", "compile"))
        if diff:
            raise ConfigError(f"stage-one directory '{s1_dir}' holds a run that differs in {', '.join(diff)}; "
                              "remove it, or point stage1_run at the stage-one run to use")
    else:
        fit(s1, resume=resume or (s1_dir / "checkpoint.pt").exists())
    return resolve.validate(dataclasses.replace(cfg, stage1_run=str(s1_dir)))


def _fit(cfg: RunConfig, ctx: D.Context, *, resume: bool, restart: bool, force: bool) -> Path:
    t_start = time.time()
    device, world = ctx.device, ctx.world
    if cfg.batch_size % (world * cfg.accum_steps):
        raise ConfigError(
            f"config key 'batch_size' = {cfg.batch_size} does not split over {world} processes x accum_steps = "
            f"{cfg.accum_steps}: use a multiple of {world * cfg.accum_steps}")
    run_dir = cfg.resolved_run_dir()
    ckpt_path = run_dir / "checkpoint.pt"
    metrics_path = run_dir / "metrics.csv"
    recipe = METHODS[cfg.method]

    if restart and run_dir.exists() and is_main():
        for name in ("checkpoint.pt", "metrics.csv", "summary.json"):
            (run_dir / name).unlink(missing_ok=True)
        for f in (run_dir / "predictions").glob("*.npz"):
            f.unlink()
    D.barrier()   # no process may look at the run directory before rank 0 has cleared it
    if (run_dir / "summary.json").exists() and not (resume or restart):   # an archived copy has no checkpoint
        raise ConfigError(f"run directory '{run_dir}' already holds a finished run (summary.json): pass --restart "
                          "to train it again, or another run_dir")
    if ckpt_path.exists() and not resume:
        raise ConfigError(
            f"run directory '{run_dir}' already holds a run; pass --resume to continue it or --restart to start over")
    if (run_dir / "summary.json").exists() and resume:
        return run_dir  # finished already: nothing to do

    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    data = build_data(cfg, device)
    model = recipe.build_model(cfg, data)
    if cfg.weights and not cfg.stage1_run:   # a stage-two model starts from its stage one instead
        load_weights(model, cfg.weights)
    model = model.to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    recipe.setup(model, cfg, data)
    if ctx.distributed and cfg.sync_bn and recipe.trains:
        model = D.convert_sync_bn(model, device)   # before the optimizer: it may replace modules
    params = recipe.parameters(model, cfg)
    optimizer = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                                nesterov=cfg.nesterov, foreach=device.type != "cuda",
                                fused=device.type == "cuda" or None)
    loss_fn = recipe.build_loss(cfg, data).to(device)
    sampler = recipe.build_sampler(cfg, data)
    train_steps = D.train_batches(data, cfg.batch_size, cfg.seed, sampler, ctx, cfg.accum_steps,
                                  rotate=recipe.rotation_degrees(cfg))
    test_loader = D.eval_loader(data, "test", ctx)
    amp_dtype = autocast_dtype(cfg, device)
    steps_per_epoch = len(train_steps)
    ramp = warmup_steps(cfg, steps_per_epoch)   # 0: the per-epoch staircase of the papers
    compiled = resolve_compile(cfg.compile, device, len(train_steps) * cfg.epochs,
                               distributed=ctx.distributed) if recipe.trains else "off"

    start_epoch = 1
    if resume and ckpt_path.exists():
        state = load_checkpoint(ckpt_path, map_location=device)
        diff = config_diff(state.get("config", {}), cfg.to_dict())
        if diff and not force:
            raise ConfigError(
                f"config differs from the checkpoint's in: {', '.join(diff)}; pass --force to resume anyway or --restart")
        try:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as e:
            raise CheckpointError(f"checkpoint '{ckpt_path}' does not fit this model ({str(e).splitlines()[0][:160]}); "
                                  "pass --restart to start over") from None
        start_epoch = int(state["epoch"]) + 1
        if "rng" in state:   # the global torch RNG continues where the checkpointed epoch left it
            torch.set_rng_state(state["rng"]["torch"].cpu())
        if is_main():
            _truncate_metrics(metrics_path, start_epoch - 1)
            for f in run_dir.rglob(".*.tmp"):   # a killed process's half-written artifact
                f.unlink(missing_ok=True)
    elif is_main():
        run_dir.mkdir(parents=True, exist_ok=True)
        metrics_path.unlink(missing_ok=True)
    cfg.save(run_dir / "config.yaml")
    if ctx.main:
        provenance.start(run_dir, cfg, device, schedule.resolved(cfg, recipe, steps_per_epoch), world)

    # What one optimizer step is, logged with every epoch: recipes are stated for a global
    # batch, and a run on fewer GPUs must say how it got there (RIDE#34, SADE#8).
    batch_cols = {"effective_batch": cfg.batch_size, "world_size": world, "accum_steps": cfg.accum_steps}
    if cfg.progress:
        D.log(f"ltlab: {world} process(es) x {cfg.accum_steps} accumulation step(s) x "
              f"{cfg.batch_size // (world * cfg.accum_steps)} images = effective batch {cfg.batch_size}, "
              f"lr {cfg.lr:g}, compile {compiled}"
              + (f" ({torch.distributed.get_backend()}, sync_bn {cfg.sync_bn})" if ctx.distributed else ""))
        if recipe.trains:
            D.log(f"ltlab: {schedule.describe(cfg, recipe, steps_per_epoch)}")

    step_model = compile_model(D.wrap(model, ctx), compiled)
    curves = EpochLog(run_dir, enabled=ctx.main)   # TensorBoard, replayed from metrics.csv

    last_epoch = cfg.epochs if recipe.trains else 0   # post-hoc methods run no epochs
    show = cfg.progress and ctx.main
    bar = tqdm(range(start_epoch, last_epoch + 1), desc=cfg.run_name or run_dir.name, **_quiet(show),
               initial=start_epoch - 1, total=last_epoch, mininterval=5)
    for epoch in bar:
        t0 = time.time()
        per_step = ramp and (epoch - 1) * steps_per_epoch < ramp
        lr = lr_at_step(cfg, epoch, steps_per_epoch - 1, steps_per_epoch)   # logged: the epoch's last step's
        set_lr(optimizer, lr)
        loss, bad = train_one_epoch(
            step_model, train_steps, loss_fn, optimizer, recipe, epoch=epoch, seed=cfg.seed,
            mixup_alpha=cfg.mixup_alpha, amp_dtype=amp_dtype, progress=show,
            lr_of_step=(lambda step, e=epoch: lr_at_step(cfg, e, step, steps_per_epoch)) if per_step else None)
        if bad >= 0 or not math.isfinite(loss):
            raise RunError(f"loss became non-finite at epoch {epoch}, step {max(bad, 0)} (lr {lr:g}); "
                           f"the last good checkpoint (epoch {epoch - 1}) is kept in '{ckpt_path}'")
        row = {"epoch": epoch, "lr": lr, "train_loss": loss, "seconds": time.time() - t0, **batch_cols}
        if epoch % cfg.eval_every == 0 or epoch == cfg.epochs:
            D.broadcast_buffers(model)
            row.update(evaluate(model, test_loader, recipe, amp_dtype))
        if is_main():
            _append_row(metrics_path, row)
            curves.epoch(row)
        save_checkpoint(ckpt_path, model, optimizer, epoch, cfg)
        bar.set_postfix(loss=f"{loss:.3f}", **({"top1": f"{row['test_top1']:.3f}"} if "test_top1" in row else {}))

    recipe.finalize(model, cfg, data)
    peak = {"seconds": time.time() - t_start,
            "peak_host_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "peak_device_mb": torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None}
    if ctx.main:
        train_seconds = float(pd.read_csv(metrics_path)["seconds"].sum()) if metrics_path.exists() else 0.0
        provenance.finish(run_dir, train_seconds, time.time() - t_start)
    sharded = None
    if ctx.distributed:   # each process predicts a disjoint shard; every image counted once
        D.broadcast_buffers(model)
        sharded = lambda split: D.predict_sharded(model, D.eval_loader(data, split, ctx), recipe,  # noqa: E731
                                                  amp_dtype=amp_dtype, features=True)
    finish_run(model, recipe, cfg, data, run_dir, amp_dtype=amp_dtype, predict_split=sharded, main=ctx.main,
               compiled=compiled, **peak)
    if ctx.main:
        curves.final(json.loads((run_dir / "summary.json").read_text()), last_epoch)
    curves.close()
    D.barrier()   # every process returns only once rank 0's summary.json exists
    return run_dir


