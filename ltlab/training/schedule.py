"""The learning-rate schedule of a run: the lr of each epoch (and step), and the schedule as plain data.

The papers warm up per epoch (LDAM-DRW: lr * e / 5 for the first 5 epochs), which at full length is
hundreds of optimizer steps. A short run compressed from such a recipe (ltlab.config.epochs) keeps a
warm-up of one epoch, which on a small set is a handful of steps: a 1-epoch run on the 1,236-image
demo jumped to lr 0.1 at step 1 and ended with logits of 1e5. So a warm-up shorter than
``warmup_min_steps`` optimizer steps ramps per step instead, lr * t / W over the first W steps (t from
1), W = max(the warm-up's steps, min(warmup_min_steps, half the run's steps)); a warm-up at least
that long is the papers' per-epoch staircase, unchanged.
"""
from __future__ import annotations

import math


def lr_at(cfg, epoch: int) -> float:
    """Learning rate of epoch `epoch` (counted from 1), set once at the start of the epoch.

    Linear warm-up lr*e/W for e <= W (LDAM-DRW, MiSLAS, BalPoE), then multistep
    (x lr_gamma after each milestone m, for e > m) or cosine to 0 over the remaining epochs.
    """
    if epoch <= cfg.warmup_epochs:
        return cfg.lr * epoch / cfg.warmup_epochs
    if cfg.schedule == "multistep":
        return cfg.lr * cfg.lr_gamma ** sum(epoch > m for m in cfg.milestones)
    if cfg.schedule == "cosine":
        t = (epoch - 1 - cfg.warmup_epochs) / max(1, cfg.epochs - cfg.warmup_epochs)
        return 0.5 * cfg.lr * (1 + math.cos(math.pi * t))
    return cfg.lr


def warmup_steps(cfg, steps_per_epoch: int) -> int:
    """Optimizer steps of the per-step ramp, or 0 when the warm-up is the per-epoch staircase (or off)."""
    if cfg.warmup_epochs == 0 or cfg.warmup_min_steps == 0:
        return 0
    paper = cfg.warmup_epochs * steps_per_epoch
    if paper >= cfg.warmup_min_steps:
        return 0
    return max(paper, min(cfg.warmup_min_steps, cfg.epochs * steps_per_epoch // 2))


def lr_at_step(cfg, epoch: int, step: int, steps_per_epoch: int) -> float:
    """Learning rate of optimizer step `step` (from 0) of epoch `epoch` (from 1).

    The per-epoch lr_at, except during a per-step ramp (warmup_steps > 0), where it is the
    post-warm-up schedule's lr of the epoch times t / W."""
    ramp = warmup_steps(cfg, steps_per_epoch)
    if ramp == 0:
        return lr_at(cfg, epoch)
    t = (epoch - 1) * steps_per_epoch + step + 1
    after = lr_at(cfg, max(epoch, cfg.warmup_epochs + 1))   # the schedule as if warm-up were over
    return after * min(1.0, t / ramp)


def lr_points(cfg, steps_per_epoch: int | None = None) -> list:
    """[(first epoch, lr)] at each change of a multistep schedule after warm-up (for logs)."""
    ramp = warmup_steps(cfg, steps_per_epoch) if steps_per_epoch else 0
    warm = max(cfg.warmup_epochs, math.ceil(ramp / steps_per_epoch) if ramp else 0)
    points, last = [], None
    for e in range(1, cfg.epochs + 1):
        lr = lr_at(cfg, max(e, cfg.warmup_epochs + 1)) if ramp else lr_at(cfg, e)
        if cfg.schedule == "multistep" and e > warm and (lr != last or e == warm + 1):
            points.append((e, lr))
        last = lr
    return points


def resolved(cfg, recipe=None, steps_per_epoch: int | None = None) -> dict:
    """The run's schedule as plain data (saved in provenance.json)."""
    out = {"epochs": cfg.epochs, "schedule": cfg.schedule, "lr": cfg.lr, "warmup_epochs": cfg.warmup_epochs}
    if steps_per_epoch is not None:
        out["steps_per_epoch"] = steps_per_epoch
        out["warmup_steps"] = warmup_steps(cfg, steps_per_epoch)   # 0: the per-epoch staircase
    if cfg.schedule == "multistep":
        out["milestones"] = list(cfg.milestones)
        out["lr_from_epoch"] = [{"epoch": e, "lr": lr} for e, lr in lr_points(cfg, steps_per_epoch)]
    if recipe is not None:
        for key in getattr(recipe, "epoch_extra_keys", ()):
            out[key] = recipe.opt(cfg, key)
    return out


def describe(cfg, recipe=None, steps_per_epoch: int | None = None) -> str:
    """One line: 'schedule: 30 epochs, warm-up 1, lr 0.1 from 2, 0.001 from 25, 1e-05 from 28; drw_epoch 24'."""
    s = resolved(cfg, recipe, steps_per_epoch)
    ramp = s.get("warmup_steps", 0)
    parts = [f"{s['epochs']} epochs", f"warm-up {ramp} steps" if ramp else f"warm-up {s['warmup_epochs']}"]
    if cfg.schedule == "multistep":
        parts.append("lr " + ", ".join(f"{p['lr']:g} from epoch {p['epoch']}" for p in s["lr_from_epoch"]))
    else:
        parts.append(f"{cfg.schedule} from lr {cfg.lr:g}")
    tail = [f"{k} {s[k]}" for k in getattr(recipe, "epoch_extra_keys", ())]
    return "schedule: " + ", ".join(parts) + ("; " + ", ".join(tail) if tail else "")
