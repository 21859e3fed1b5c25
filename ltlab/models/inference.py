"""A model's forward pass over a whole split, and the autocast precision a run uses.

Shared by the training loop (evaluation epochs, final predictions) and by stage-two recipes
that read a stage-one model's features, so it sits below both.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn


def autocast_dtype(cfg, device: torch.device):
    """bf16 autocast by default on CUDA; on CPU only when asked (it is slower on most CPUs)."""
    if cfg.amp == "bf16" or (cfg.amp == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return None


@torch.inference_mode()
def predict(model, loader, recipe, amp_dtype=None, features=True) -> dict:
    """Logits (float32), labels (int64) and, if asked, features of a whole split."""
    model.eval()
    logits, labels, feats = [], [], []
    device = next(model.parameters()).device
    for x, y in loader:
        with torch.autocast(device.type, dtype=amp_dtype or torch.bfloat16, enabled=amp_dtype is not None):
            out = model(x)
        logits.append(recipe.inference(out).float())
        labels.append(y)
        if features:
            feats.append(out["features"].float())
    res = {"logits": torch.cat(logits).cpu().numpy().astype(np.float32),
           "labels": torch.cat(labels).cpu().numpy().astype(np.int64)}
    if features:
        res["features"] = torch.cat(feats).cpu().numpy().astype(np.float32)
    return res


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module under DDP (.module) and torch.compile (._orig_mod) wrappers."""
    while True:
        inner = getattr(model, "_orig_mod", None) or getattr(model, "module", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner
