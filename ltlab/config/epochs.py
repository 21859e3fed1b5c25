"""Learning-rate schedules that follow the run's length.

A recipe states its schedule for its paper length (LDAM-DRW: 200 epochs, warm-up 5, lr x0.01
after epochs 160 and 180, DRW from epoch 161). A user who shortens the run with ``epochs`` and
gives no milestones gets the same shape compressed: every epoch-indexed knob the user did not set
(``warmup_epochs``, ``milestones`` and a recipe's ``epoch_extra_keys`` such as ``drw_epoch``) is
multiplied by ``epochs / paper_epochs`` and rounded half up (a warm-up to at least one epoch); a milestone lands in [1, epochs - 1]
so the decay still happens (several may share an epoch in very short runs). Explicit values are
honoured and checked: a milestone at or after the last epoch, or a warm-up longer than the run,
cannot happen and is refused.
"""
from __future__ import annotations

import math

from ltlab.config import RunConfig


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
    base = RunConfig()
    out = dict(merged)
    milestones = out.get("milestones", base.milestones)
    warmup = out.get("warmup_epochs", base.warmup_epochs)
    multistep = out.get("schedule", base.schedule) == "multistep"   # milestones mean nothing otherwise
    if "milestones" not in user and isinstance(milestones, list) and multistep:
        out["milestones"] = scale_milestones(milestones, epochs, paper_epochs)
    if "warmup_epochs" not in user and isinstance(warmup, int):
        # at least one epoch when the recipe warms up: its step floor (warmup_min_steps) then sets the ramp
        out["warmup_epochs"] = min(epochs, max(1 if warmup > 0 else 0, scale_epoch(warmup, epochs, paper_epochs)))
    user_extra = user.get("extra") or {}
    extra = dict(out.get("extra") or {})
    for key, default in epoch_extra.items():
        if key not in user_extra:
            value = extra.get(key, default)
            extra[key] = min(epochs - 1, max(0, scale_epoch(value, epochs, paper_epochs))) if epochs > 1 else value
    out["extra"] = extra
    return out
