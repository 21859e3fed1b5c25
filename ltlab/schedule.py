"""Learning-rate schedules that follow the run's length.

A recipe states its schedule for its paper length (LDAM-DRW: 200 epochs, warm-up 5, lr x0.01
after epochs 160 and 180, DRW from epoch 161). A user who shortens the run with ``epochs`` and
gives no milestones gets the same shape compressed: every epoch-indexed knob the user did not set
(``warmup_epochs``, ``milestones`` and a recipe's ``epoch_extra_keys`` such as ``drw_epoch``) is
multiplied by ``epochs / paper_epochs`` and rounded half up; a milestone lands in [1, epochs - 1]
so the decay still happens (several may share an epoch in very short runs). Explicit values are
honoured and checked: a milestone at or after the last epoch, or a warm-up longer than the run,
cannot happen and is refused.
"""
from __future__ import annotations

import math


def scale_epoch(value: int, epochs: int, paper_epochs: int) -> int:
    """round_half_up(value * epochs / paper_epochs)."""
    return int(math.floor(value * epochs / paper_epochs + 0.5))


def scale_milestones(milestones, epochs: int, paper_epochs: int) -> list:
    if epochs < 2:
        return []          # a 1-epoch run has no epoch after which the lr could change
    return [min(epochs - 1, max(1, scale_epoch(m, epochs, paper_epochs))) for m in milestones]


def follow_epochs(merged: dict, user: dict, paper_epochs: int, epoch_extra: dict) -> dict:
    """Scale the schedule keys of ``merged`` the user left unset when the user set ``epochs``.

    ``epoch_extra``: {extra key: its recipe default} of epoch-indexed method knobs.
    """
    epochs = user.get("epochs")
    if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 1 or epochs == paper_epochs:
        return merged
    from ltlab.config import RunConfig
    base = RunConfig()
    out = dict(merged)
    milestones = out.get("milestones", base.milestones)
    warmup = out.get("warmup_epochs", base.warmup_epochs)
    multistep = out.get("schedule", base.schedule) == "multistep"   # milestones mean nothing otherwise
    if "milestones" not in user and isinstance(milestones, list) and multistep:
        out["milestones"] = scale_milestones(milestones, epochs, paper_epochs)
    if "warmup_epochs" not in user and isinstance(warmup, int):
        out["warmup_epochs"] = min(epochs, scale_epoch(warmup, epochs, paper_epochs))
    user_extra = user.get("extra") or {}
    extra = dict(out.get("extra") or {})
    for key, default in epoch_extra.items():
        if key not in user_extra:
            value = extra.get(key, default)
            extra[key] = min(epochs - 1, max(0, scale_epoch(value, epochs, paper_epochs))) if epochs > 1 else value
    out["extra"] = extra
    return out


def check(cfg) -> None:
    """Refuse a schedule that cannot happen within ``cfg.epochs`` (one line, key and value)."""
    from ltlab.config import ConfigError
    if cfg.warmup_epochs > cfg.epochs:
        raise ConfigError(f"config key 'warmup_epochs' = {cfg.warmup_epochs} is longer than the run "
                          f"(epochs = {cfg.epochs}): the lr would never reach its peak; use 0..{cfg.epochs}")
    if cfg.schedule == "multistep":
        late = [m for m in cfg.milestones if m >= cfg.epochs]
        if late:
            raise ConfigError(f"config key 'milestones' = {cfg.milestones!r}: milestone {late[0]} cannot happen in a "
                              f"{cfg.epochs}-epoch run (the lr changes for epochs e > m); use values in "
                              f"1..{cfg.epochs - 1}, or leave milestones unset to scale the recipe's")
        if list(cfg.milestones) != sorted(cfg.milestones):
            raise ConfigError(f"config key 'milestones' = {cfg.milestones!r}: must be in increasing order")


def lr_points(cfg) -> list:
    """[(first epoch, lr)] at each change of a multistep schedule after warm-up (for logs)."""
    from ltlab.train import lr_at
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
