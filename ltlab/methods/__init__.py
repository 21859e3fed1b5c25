"""Method recipes: each method is a small declaration composed of shared pieces.

A Recipe names its head, loss, sampler and defaults (the paper's CIFAR hyperparameters,
possibly per dataset), and may override a few hooks: how the model is built, which
parameters train, what happens before training (loading a stage-one run), and how
outputs become logits at inference. The training loop in ltlab.training.loop never changes for a
method. Every module in this package registers its recipes on import.
"""
from __future__ import annotations

import importlib
import pkgutil

from ltlab.methods.base import METHODS, Recipe, register  # noqa: F401
from ltlab.methods.samplers import SAMPLERS  # noqa: F401

for _m in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    if _m.name != "base":
        importlib.import_module(f"{__name__}.{_m.name}")
