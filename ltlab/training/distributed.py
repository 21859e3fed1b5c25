"""torchrun support: one process per GPU, detected from the environment.

``torchrun --nproc_per_node=N $(which ltlab) train -c CONFIG`` sets RANK, LOCAL_RANK and
WORLD_SIZE; ``setup`` reads them (nanoGPT / torchvision convention) and starts NCCL on CUDA or
gloo on CPU. Without them everything here is a no-op and ltlab runs as one process.

What a run means does not change with the number of processes: ``batch_size`` is the
global batch, split into ``world x accum_steps`` equal micro-batches, and every loss is
weighted so that the gradient is the mean over the global batch even when the last batch
does not divide evenly. BatchNorm statistics are taken over the global batch (SyncBatchNorm)
unless ``sync_bn: false``, so N processes compute what one process would, up to float
summation order; gradient accumulation cannot do that for BatchNorm (a micro-batch is all a
forward pass sees), which is why it is only the fallback for fewer GPUs.

Evaluation gives each process a contiguous, disjoint shard of the split, with no padding,
and gathers the predictions back in the split's order: every image is counted exactly once,
so per-class and many/medium/few accuracies are exact (torch's DistributedSampler pads with
duplicates instead).
"""
from __future__ import annotations

import os
import sys
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn

from ltlab.data.gpu_loader import GpuLoader, eval_batch_size
from ltlab.data.sharding import ShardedSampler, shard_bounds  # noqa: F401 (part of this module's API)
from ltlab.models.inference import (
    predict,
    unwrap,  # noqa: F401 (part of this module's API)
)
from ltlab.training import logs


# ---------------------------------------------------------------------------- process group
@dataclass(frozen=True)
class Context:
    rank: int = 0
    local_rank: int = 0
    world: int = 1
    device: torch.device | None = None
    created: bool = False          # this call started the process group, so it ends it

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def env_ranks() -> tuple[int, int, int]:
    """(RANK, LOCAL_RANK, WORLD_SIZE) as torchrun sets them; (0, 0, 1) outside torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", str(rank)))
    return rank, local, world


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def setup(device: torch.device) -> Context:
    """Join the torchrun process group if the environment names one (idempotent: a run that
    starts another run, e.g. MiSLAS's stage one, reuses the group)."""
    rank, local, world = env_ranks()
    if world <= 1:
        return Context(device=device)
    if device.type == "cuda":
        n = torch.cuda.device_count()
        if local >= n:
            raise RuntimeError(f"LOCAL_RANK {local} but only {n} CUDA device(s) are visible: "
                               f"use torchrun --nproc_per_node={n} or fewer")
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    created = False
    if not dist.is_initialized():
        if device.type == "cuda":
            # device_id binds the NCCL communicator to this GPU up front (no guessing in barrier)
            dist.init_process_group("nccl", device_id=device)
        else:
            dist.init_process_group("gloo")
            global _GLOO_CREATED
            _GLOO_CREATED = True
        created = True
    return Context(rank=rank, local_rank=local, world=world, device=device, created=created)


def destroy(ctx: Context) -> None:
    if ctx.created and dist.is_initialized():
        dist.barrier()   # every rank leaves together
        dist.destroy_process_group()


# torch 2.14's DDP keeps its gloo group alive past destroy_process_group: after a DDP backward,
# `del` and gc.collect(), the group's three threads (gloo_tcp_loop, pt_gloo_runloop x2) still run
# (seen with a 10-line script: DDP(nn.Linear), one backward). The interpreter's teardown then races
# them, and about 1 exit in 20 under load aborted ("terminate called without an active exception",
# SIGABRT) after the run had finished, so that torchrun reported the job failed.
_GLOO_CREATED = False


def exit_worker(code: int = 0) -> None:
    """End a torchrun worker that created a gloo group with os._exit(code), after flushing
    stdout, stderr and logging: the teardown that can abort is skipped (the note above). A no-op in
    any other process (one-process runs, CUDA/NCCL, tests that call the CLI in-process). Call it
    last: atexit handlers do not run, so whatever must reach disk is written and closed before
    (ltlab writes its files atomically and closes them in fit)."""
    if not _GLOO_CREATED:
        return
    import logging

    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def log(msg: str) -> None:
    """One informational line from rank 0 only, through ltlab.training.logs (stderr in the CLI, where
    stdout stays the run directory; stdout in notebooks)."""
    if int(os.environ.get("RANK", "0")) == 0:
        logs.info(msg)


def _comm_device() -> torch.device:
    # NCCL moves only CUDA tensors; gloo is used here for CPU tensors
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


# ---------------------------------------------------------------------------- model
class _AllReduceSum(torch.autograd.Function):
    """Sum over processes whose backward is again a sum: the gradient of sum_q L_q with
    respect to this process's input, since every L_q depends on it through the statistics."""

    @staticmethod
    def forward(ctx, x):
        y = x.clone()
        dist.all_reduce(y)
        return y

    @staticmethod
    def backward(ctx, grad):
        g = grad.contiguous().clone()
        dist.all_reduce(g)
        return g


class CpuSyncBatchNorm(nn.BatchNorm2d):
    """Global-batch BatchNorm for gloo on CPU, where torch's SyncBatchNorm refuses CPU input.

    Two passes, like BatchNorm itself: the per-channel sums and counts are summed over
    processes to give the global mean, then the squared deviations from it (E[x^2] - E[x]^2
    in one pass loses digits to cancellation in float32, enough to make a two-process run
    drift from a one-process one). Running statistics are updated as BatchNorm does
    (unbiased variance, same momentum). Used for CPU runs and tests; CUDA uses nn.SyncBatchNorm.
    """

    def forward(self, x):
        if not (self.training and is_distributed()):
            return super().forward(x)
        dims = [0] + list(range(2, x.dim()))
        shape = [1, -1] + [1] * (x.dim() - 2)
        xf = x.float()
        c = xf.shape[1]
        stats = _AllReduceSum.apply(torch.cat([xf.sum(dims), xf.new_full((1,), xf.numel() / c)]))
        count = stats[-1]
        mean = stats[:c] / count
        var = _AllReduceSum.apply(((xf - mean.view(shape)) ** 2).sum(dims)) / count
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                unbiased = var.detach() * count / (count - 1).clamp_min(1)
                self.running_var.mul_(1 - m).add_(unbiased, alpha=m)
        y = (xf - mean.view(shape)) * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(x.dtype)


def _to_cpu_sync(module: nn.Module) -> nn.Module:
    if isinstance(module, nn.BatchNorm2d) and not isinstance(module, CpuSyncBatchNorm):
        new = CpuSyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                               module.track_running_stats)
        if module.affine:   # the very Parameter objects: requires_grad and optimizer links survive
            new.weight, new.bias = module.weight, module.bias
        if module.track_running_stats:
            new.running_mean, new.running_var = module.running_mean, module.running_var
            new.num_batches_tracked = module.num_batches_tracked
        new.train(module.training)
        return new
    for name, child in module.named_children():
        setattr(module, name, _to_cpu_sync(child))
    return module


def convert_sync_bn(model: nn.Module, device: torch.device) -> nn.Module:
    """BatchNorm -> global-batch BatchNorm (state_dict keys unchanged, so checkpoints load into
    a one-process model and back). Call before building the optimizer."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return _to_cpu_sync(model)


def wrap(model: nn.Module, ctx: Context) -> nn.Module:
    """DDP around the model when there is something to synchronise (a post-hoc or fully frozen
    model trains nothing, and DDP refuses such a model)."""
    if not ctx.distributed or not any(p.requires_grad for p in model.parameters()):
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return DDP(model, device_ids=ids, gradient_as_bucket_view=True)


def no_sync(model: nn.Module, sync: bool):
    """DDP's no_sync() for accumulation passes that do not end an optimizer step."""
    if sync or not hasattr(model, "no_sync"):
        return nullcontext()
    return model.no_sync()


def broadcast_buffers(model: nn.Module) -> None:
    """Rank 0's BatchNorm running statistics (and other buffers) on every process, so that the
    shards of an evaluation are all scored by the same model (they drift apart per process
    when sync_bn is off)."""
    if is_distributed():
        for b in unwrap(model).buffers():
            dist.broadcast(b, 0)


# ---------------------------------------------------------------------------- training order
class StepBatches:
    """The optimizer steps of an epoch for this process: lists of (x, y, weight) micro-batches.

    ``global_batches``: the loader yields whole global batches (the GPU-resident loader, where
    every process holds all images and drawing them costs nothing); this process keeps its
    contiguous share, so crops and flips are exactly those of a one-process run. Otherwise
    the loader already yields this process's share (the list loader, through ShardedSampler),
    equal in size on every process. The share is cut into up to ``accum`` micro-batches,
    the same number on every process (SyncBatchNorm needs matching forward passes).
    weight = micro-batch size * world / global batch size: with DDP averaging gradients over
    processes, the sum of the weighted micro-batch means is the global-batch mean.
    A global batch with fewer images than processes is skipped (at most world - 1 images an
    epoch, and never with one process).
    """

    def __init__(self, loader, *, rank: int = 0, world: int = 1, accum: int = 1, global_batches: bool = True):
        self.loader, self.rank, self.world, self.accum = loader, rank, world, max(1, int(accum))
        self.global_batches = global_batches

    def set_epoch(self, epoch: int) -> None:
        self.loader.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for x, y in self.loader:
            n = y.shape[0]
            if self.global_batches:
                total, least = n, n // self.world
                if least == 0:
                    continue
                if self.world > 1:
                    s, e = shard_bounds(n, self.rank, self.world)
                    x, y = x[s:e], y[s:e]
            else:
                total, least = n * self.world, n
            m = min(self.accum, least)
            if m == 1:
                yield [(x, y, y.shape[0] * self.world / total)]
            else:
                yield [(xm, ym, ym.shape[0] * self.world / total)
                       for xm, ym in zip(torch.tensor_split(x, m), torch.tensor_split(y, m))]


def train_batches(data, batch_size: int, seed: int, sampler, ctx: Context, accum: int = 1,
                  rotate: float = 0.0) -> StepBatches:
    """StepBatches over the run's training data, whichever loader the data layer has. ``rotate``
    (degrees, the small-image GpuLoader's RandomRotation) is passed on only when set."""
    if getattr(data, "shards_by_sampler", False):
        loader = data.train_loader(batch_size // ctx.world, seed=seed, sampler=sampler, rank=ctx.rank, world=ctx.world)
        return StepBatches(loader, rank=ctx.rank, world=ctx.world, accum=accum, global_batches=False)
    loader = data.train_loader(batch_size, seed=seed, sampler=sampler, **({"rotate": rotate} if rotate else {}))
    return StepBatches(loader, rank=ctx.rank, world=ctx.world, accum=accum, global_batches=True)


# ---------------------------------------------------------------------------- evaluation
def eval_loader(data, split: str, ctx: Context):
    """Fixed-order loader of this process's shard of a split (the whole split in one process)."""
    if not ctx.distributed:
        return data.eval_loader(split)
    if getattr(data, "shards_by_sampler", False):
        return data.eval_loader(split, shard=(ctx.rank, ctx.world))
    x, y = getattr(data, f"{split}_x", None), getattr(data, f"{split}_y", None)
    if x is None:
        return data.eval_loader(split)   # raises the data layer's own error

    s, e = shard_bounds(len(y), ctx.rank, ctx.world)
    return GpuLoader(x[s:e], y[s:e], eval_batch_size(x.device), train=False, mean=data.mean, std=data.std,
                     channels_last=data.channels_last)


def gather_arrays(local: dict | None) -> dict:
    """Concatenate every process's arrays in rank order (all processes get the result).

    ``local`` maps names to arrays with a leading item axis, or is None for an empty shard.
    Lengths may differ: each array is padded to the longest shard for all_gather and cut back.
    """
    if not is_distributed():
        return local or {}
    world = dist.get_world_size()
    meta = None if not local else {k: (v.shape, v.dtype.str) for k, v in local.items()}
    metas = [None] * world
    dist.all_gather_object(metas, meta)
    ref = next((m for m in metas if m), None)
    if ref is None:
        return {}
    dev = _comm_device()
    out = {}
    for key in sorted(ref):
        shape, dtype = ref[key]
        lengths = [m[key][0][0] if m else 0 for m in metas]
        longest = max(lengths)
        buf = torch.zeros((longest,) + tuple(shape[1:]), dtype=torch.from_numpy(np.empty(0, dtype)).dtype, device=dev)
        if local:
            buf[:lengths[dist.get_rank()]] = torch.from_numpy(np.ascontiguousarray(local[key])).to(dev)
        parts = [torch.empty_like(buf) for _ in range(world)]
        dist.all_gather(parts, buf)
        out[key] = np.concatenate([p[:n].cpu().numpy() for p, n in zip(parts, lengths)])
    return out


def predict_sharded(model, loader, recipe, amp_dtype=None, features=True) -> dict:
    """evaluate.predict on this process's shard, gathered: the whole split, in order, once."""

    local = predict(unwrap(model), loader, recipe, amp_dtype=amp_dtype, features=features) if len(loader) else None
    return gather_arrays(local) if is_distributed() else local
