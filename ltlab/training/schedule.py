"""The learning-rate schedule of a run: the lr of each epoch, and the schedule as plain data.

How a recipe's paper schedule is compressed for a shorter run is ltlab.config.epochs.
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


def lr_points(cfg) -> list:
    """[(first epoch, lr)] at each change of a multistep schedule after warm-up (for logs)."""
    points, last = [], None
    for e in range(1, cfg.epochs + 1):
        lr = lr_at(cfg, e)
        if cfg.schedule == "multistep" and e > cfg.warmup_epochs and (lr != last or e == cfg.warmup_epochs + 1):
            points.append((e, lr))
        last = lr
    return points


def resolved(cfg, recipe=None) -> dict:
    """The run's schedule as plain data (saved in provenance.json)."""
    out = {"epochs": cfg.epochs, "schedule": cfg.schedule, "lr": cfg.lr, "warmup_epochs": cfg.warmup_epochs}
    if cfg.schedule == "multistep":
        out["milestones"] = list(cfg.milestones)
        out["lr_from_epoch"] = [{"epoch": e, "lr": lr} for e, lr in lr_points(cfg)]
    if recipe is not None:
        for key in getattr(recipe, "epoch_extra_keys", ()):
            out[key] = recipe.opt(cfg, key)
    return out


def describe(cfg, recipe=None) -> str:
    """One line: 'schedule: 30 epochs, warm-up 1, lr 0.1 from 2, 0.001 from 25, 1e-05 from 28; drw_epoch 24'."""
    s = resolved(cfg, recipe)
    parts = [f"{s['epochs']} epochs", f"warm-up {s['warmup_epochs']}"]
    if cfg.schedule == "multistep":
        parts.append("lr " + ", ".join(f"{p['lr']:g} from epoch {p['epoch']}" for p in s["lr_from_epoch"]))
    else:
        parts.append(f"{cfg.schedule} from lr {cfg.lr:g}")
    tail = [f"{k} {s[k]}" for k in getattr(recipe, "epoch_extra_keys", ())]
    return "schedule: " + ", ".join(parts) + ("; " + ", ".join(tail) if tail else "")
