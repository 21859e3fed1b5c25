"""Causal-norm classifier with a moving-average feature direction (Causal-TDE).

Tang, Huang & Zhang, "Long-Tailed Classification by Keeping the Good and Removing the Bad
Momentum Causal Effect", NeurIPS 2020 (KaihuaTang/Long-Tailed-Recognition.pytorch,
``models/CausalNormClassifier.py``, ``run_networks.py``).

With K heads the feature x and every class weight w_c are split into K equal chunks:

    de-confounded  z_c     = (tau/K) sum_k < x_k/|x_k| , w_ck/(|w_ck| + gamma) >
    TDE            z_c^TDE = (tau/K) sum_k < x_k/|x_k| - alpha cos(x_k, d_k) d_k/|d_k| , w_ck/(|w_ck| + gamma) >

where d is the moving feature direction, updated on every training forward as
d <- mu d + mean_batch(x). As in the authors' code there is no (1 - mu) factor: only the
direction of each chunk of d is ever used, so its length does not matter.

Backbone choice (documented deviation): the authors' CIFAR model is BBN's ResNet-32 with a
128-d two-branch feature, one head per branch. ltlab uses LDAM's ResNet-32 (64-d), so with
K = 2 the two heads split the 64-d feature into two 32-d chunks (channels 0-31 and 32-63).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

# The authors divide by |x_k| with no epsilon; a ReLU feature chunk can be exactly zero,
# so norms are floored here (and identically in ltlab.evaluation.posthoc_tde).
NORM_EPS = 1e-12


def _chunk_unit(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(N, d) -> (N, K, d/K), each chunk scaled to unit length."""
    xs = x.reshape(x.shape[0], heads, -1)
    return xs / xs.norm(dim=-1, keepdim=True).clamp_min(NORM_EPS)


class CausalNormHead(nn.Module):
    """Multi-head causal-norm classifier; outputs 'logits' (de-confounded, trained on),
    'tde_logits' (TDE with ``self.alpha``, eval mode only) and 'tde_effect' (the
    counterfactual term, so that tde_logits = logits - alpha * tde_effect).

    ``direction`` is a buffer, so it lives in the state dict and thus the checkpoint.
    """

    def __init__(self, in_dim: int, num_classes: int, tau: float = 16.0, gamma: float = 1 / 32,
                 heads: int = 2, mu: float = 0.9, alpha: float = 1.0):
        super().__init__()
        if in_dim % heads:
            raise ValueError(f"feature size {in_dim} is not divisible by heads = {heads}")
        self.tau, self.gamma, self.heads = float(tau), float(gamma), int(heads)
        self.mu, self.alpha = float(mu), float(alpha)
        stdv = 1.0 / math.sqrt(in_dim)
        self.weight = nn.Parameter(torch.empty(num_classes, in_dim).uniform_(-stdv, stdv))
        self.register_buffer("direction", torch.zeros(in_dim))

    def normed_weight(self) -> torch.Tensor:
        """(C, K, d/K): w_ck / (|w_ck| + gamma)."""
        w = self.weight.float().reshape(self.weight.shape[0], self.heads, -1)
        return w / (w.norm(dim=-1, keepdim=True) + self.gamma)

    def forward(self, f):
        # fp32 whatever autocast is active: unit-normalising bf16 chunks loses too much
        with torch.autocast(f.device.type, enabled=False):
            x = f.float()
            if self.training:
                with torch.no_grad():
                    self.direction.mul_(self.mu).add_(x.detach().mean(0))
            w = self.normed_weight()
            scale = self.tau / self.heads
            xn = _chunk_unit(x, self.heads)                              # (N, K, h)
            logits = scale * torch.einsum("nkh,ckh->nc", xn, w)
            out = {"logits": logits}
            if not self.training:
                dn = _chunk_unit(self.direction.float()[None], self.heads)[0]   # (K, h)
                cos = (xn * dn).sum(-1)                                       # (N, K)
                dw = torch.einsum("kh,ckh->kc", dn, w)                        # (K, C)
                effect = scale * cos @ dw
                out["tde_effect"] = effect
                out["tde_logits"] = logits - self.alpha * effect
        return out
