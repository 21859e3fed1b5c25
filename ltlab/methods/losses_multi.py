"""Losses of the multi-output methods (BalPoE, EnMos) and MiSLAS's label-aware smoothing.

Same interface as ltlab.methods.losses: (out: dict, y) -> scalar, computed in fp32; mixup is applied
by the training loop (lam L(y_a) + (1 - lam) L(y_b)).
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ltlab.methods.losses import log_prior


def expert_taus(experts: int, tau_min: float = 0.0, tau_max: float = 2.0) -> list:
    """BalPoE's ``--tau_list limits``: M values evenly spaced over [tau_min, tau_max]
    (M = 3 on [0, 2] gives the paper's [0, 1, 2]). Choice for M = 1: the midpoint, so the
    single expert keeps the ensemble's mean tau (1 by default: Balanced Softmax)."""
    if experts < 1:
        raise ValueError(f"experts = {experts}: need at least one")
    if experts == 1:
        return [0.5 * (tau_min + tau_max)]
    return [float(t) for t in np.linspace(tau_min, tau_max, experts)]


class BalPoELoss(nn.Module):
    """mean_k CE(z_k + tau_k log pi, y) over the experts (BalPoE's BSExpertLoss; Sanchez
    Aimar et al., CVPR 2023). tau_k = 1 - lambda_k: expert k targets the test prior pi^lambda_k; one
    expert with tau = 1 is Balanced Softmax (Ren et al. 2020). Reads out['expert_logits']."""

    def __init__(self, train_counts, taus):
        super().__init__()
        self.register_buffer("log_prior", log_prior(train_counts))
        self.register_buffer("taus", torch.as_tensor(list(taus), dtype=torch.float32))

    def forward(self, out, y):
        z = out["expert_logits"].float()                                   # (E, N, C)
        e, n, c = z.shape
        if e != self.taus.numel():
            raise ValueError(f"{e} experts in the output but {self.taus.numel()} taus in the loss")
        adj = z + self.taus[:, None, None] * self.log_prior
        # every expert sees the same N samples, so the mean over E*N rows is the mean of the E means
        return F.cross_entropy(adj.reshape(e * n, c), y.repeat(e))


class MixtureDebiasNLL(nn.Module):
    """-log(sum_k w_k softmax(z_k + log(C pi))_y + 1e-12) (EnMos_debias,
    ``loss/EnergyDebiasMosLoss.py``): logit adjustment with tau = 1 inside every component.
    log C is the same for every class and cancels in each softmax. Reads
    out['component_logits'] (K, N, C) and out['gate'] (N, K)."""

    def __init__(self, train_counts):
        super().__init__()
        counts = torch.as_tensor(np.asarray(train_counts), dtype=torch.float64)
        self.register_buffer("log_bias", torch.log(counts.numel() * counts / counts.sum() + 1e-12).float())

    def forward(self, out, y):
        z = out["component_logits"].float()
        w = out["gate"].float()
        p = F.softmax(z + self.log_bias, dim=-1)                               # (K, N, C)
        py = p.gather(2, y.view(1, -1, 1).expand(p.shape[0], -1, 1)).squeeze(2)   # (K, N)
        mix = (w.t() * py).sum(0)
        return -torch.log(mix + 1e-12).mean()


def las_epsilons(train_counts, eps_head: float, eps_tail: float, shape: str = "concave",
                 power: float | None = None) -> np.ndarray:
    """Per-class smoothing eps_y of label-aware smoothing (Zhong et al., "Improving
    Calibration for Long-Tailed Recognition" (MiSLAS), CVPR 2021, Eq. 6; ``methods.py``).

    r = (N_y - N_K)/(N_1 - N_K) with N_1 the largest and N_K the smallest count;
    concave eps_K + (eps_1 - eps_K) sin(pi r / 2); linear eps_K + (eps_1 - eps_K) r;
    convex eps_1 + (eps_1 - eps_K) sin(3 pi/2 + pi r / 2); exp eps_K + (eps_1 - eps_K) r^power.
    Choice for equal counts (N_1 = N_K, a 0/0 in the original): every class is the head, r = 1.
    """
    n = np.asarray(train_counts, dtype=np.float64)
    n1, nk = n.max(), n.min()
    r = np.ones_like(n) if n1 == nk else (n - nk) / (n1 - nk)
    if shape == "concave":
        eps = eps_tail + (eps_head - eps_tail) * np.sin(r * math.pi / 2)
    elif shape == "linear":
        eps = eps_tail + (eps_head - eps_tail) * r
    elif shape == "convex":
        eps = eps_head + (eps_head - eps_tail) * np.sin(1.5 * math.pi + r * math.pi / 2)
    elif shape == "exp":
        if power is None:
            raise ValueError("LAS shape 'exp' needs a power")
        eps = eps_tail + (eps_head - eps_tail) * np.power(r, power)
    else:
        raise ValueError(f"LAS shape {shape!r}: expected concave, linear, convex or exp")
    return eps


LAS_SHAPES = ("concave", "linear", "convex", "exp")


class LabelAwareSmoothing(nn.Module):
    """(1 - eps_y)(-log p_y) + eps_y (1/C) sum_j (-log p_j), eps_y from ``las_epsilons``
    (MiSLAS, CVPR 2021). eps = 0 everywhere is plain CE. Reads out['logits']."""

    def __init__(self, train_counts, eps_head: float, eps_tail: float, shape: str = "concave",
                 power: float | None = None):
        super().__init__()
        eps = las_epsilons(train_counts, eps_head, eps_tail, shape, power)
        self.register_buffer("eps", torch.as_tensor(eps, dtype=torch.float32))

    def forward(self, out, y):
        logp = F.log_softmax(out["logits"].float(), dim=-1)
        eps = self.eps[y]
        nll = -logp.gather(1, y[:, None]).squeeze(1)
        smooth = -logp.mean(dim=-1)
        return ((1 - eps) * nll + eps * smooth).mean()
