"""Classifier heads: feature (N, d) -> dict with at least 'logits' (N, C).

A head returns a dict so that methods can pass more than one tensor to their loss and
inference rule (expert logits, mixture weights) without touching the training loop.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class LinearHead(nn.Module):
    def __init__(self, in_dim: int, num_classes: int, bias: bool = True):
        super().__init__()
        self.fc = nn.Linear(in_dim, num_classes, bias=bias)

    def forward(self, f):
        return {"logits": self.fc(f)}


class CosineHead(nn.Module):
    """Cosine classifier (LDAM's NormedLinear): s * <f/|f|, w_c/|w_c|>, no bias.

    The scale s (30 in LDAM-DRW and BalPoE) lives in the head so that every loss and the
    saved logits see the same scaled values.
    """

    def __init__(self, in_dim: int, num_classes: int, scale: float = 30.0):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(in_dim, num_classes).uniform_(-1, 1).renorm_(2, 1, 1e-5).mul_(1e5))
        self.scale = scale

    def forward(self, f):
        # fp32 even under bf16 autocast: cosines near 1 need the mantissa before the x30 scale
        with torch.autocast(f.device.type, enabled=False):
            cos = F.normalize(f.float(), dim=1) @ F.normalize(self.weight.float(), dim=0)
        return {"logits": self.scale * cos}


HEADS = {"linear": LinearHead, "cosine": CosineHead}
