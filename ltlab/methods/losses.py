"""Losses: callables (out: dict, y: LongTensor) -> scalar tensor.

Each takes the model's output dict so that methods with several heads (experts, mixture
components) reuse the same interface. Losses compute in fp32 whatever autocast produced.
Mixup is handled once in the training loop (lam * L(y_a) + (1 - lam) * L(y_b)), so no
loss needs to know about it.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


class CrossEntropy(nn.Module):
    def forward(self, out, y):
        return F.cross_entropy(out["logits"].float(), y)


LOSSES = {"ce": CrossEntropy}


def log_prior(counts) -> torch.Tensor:
    counts = torch.as_tensor(counts, dtype=torch.float64)
    return torch.log(counts / counts.sum() + 1e-12).float()


class LogitAdjustedCE(nn.Module):
    """CE(z + tau * log pi, y) (Menon et al., ICLR 2021). tau = 1 is Balanced Softmax
    (Ren et al., NeurIPS 2020); the logits themselves then estimate the balanced posterior,
    so prediction uses z without the prior term."""

    def __init__(self, train_counts, tau: float = 1.0):
        super().__init__()
        self.tau = tau
        self.register_buffer("log_prior", log_prior(train_counts))

    def forward(self, out, y):
        return F.cross_entropy(out["logits"].float() + self.tau * self.log_prior, y)


LOSSES["logit_adjust"] = LogitAdjustedCE


# ------------------------------------------------------------------ class-balanced weights
def cb_weights(counts, beta: float) -> torch.Tensor:
    """Class-balanced weights w_c = (1 - beta) / (1 - beta^n_c), normalised so sum_c w_c = C.

    Cui et al., Class-Balanced Loss Based on Effective Number of Samples, CVPR 2019, sec. 3-4:
    (1 - beta^n) / (1 - beta) is the "effective number" of n samples. beta = 0 gives all ones,
    beta -> 1 weights ∝ 1/n.
    A class with no training images never appears as a target; it gets weight 0 so that the
    normalisation stays finite, and the others share the total C.
    """
    if not 0.0 <= beta < 1.0:
        raise ValueError(f"cb beta = {beta!r}: expected 0 <= beta < 1")
    n = np.asarray(counts, dtype=np.float64).ravel()
    present = n > 0
    w = np.zeros_like(n)
    w[present] = (1.0 - beta) / (1.0 - np.power(beta, n[present]))
    w = w / w.sum() * n.size
    return torch.as_tensor(w, dtype=torch.float32)


def _weighted_mean(per_sample: torch.Tensor, y: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    # sum_i w_{y_i} l_i / sum_i w_{y_i}: the reduction of F.cross_entropy(weight=...), which the
    # LDAM-DRW code (our CIFAR lineage) uses for re-weighted CE and DRW. Cui et al.'s code divides
    # by the batch size instead, and so does LDAM-DRW's focal loss (FocalLoss below divides so too).
    if weight is None:
        return per_sample.mean()
    w = weight[y]
    return (w * per_sample).sum() / w.sum()


class WeightedCE(nn.Module):
    """Softmax cross-entropy with per-class weights (the "CB softmax" loss of Cui et al. 2019
    when weight = cb_weights(counts, beta))."""

    def __init__(self, weight=None):
        super().__init__()
        self.register_buffer("weight", None if weight is None else torch.as_tensor(weight, dtype=torch.float32))

    def forward(self, out, y):
        return F.cross_entropy(out["logits"].float(), y, weight=self.weight)


class FocalLoss(nn.Module):
    """Softmax focal loss (1 - p_y)^gamma * (-log p_y), optionally class-weighted.

    Lin et al., Focal Loss for Dense Object Detection, ICCV 2017, in the multi-class softmax form the
    LDAM-DRW code uses for its CIFAR-LT focal baseline (gamma = 1 there). Unlike the LDAM-DRW code,
    p_y is the true softmax probability even when class weights are given (that code takes
    exp(-w_y CE), which is not).

    With class weights (CB focal) the batch's sum of w_y l_i is divided by the batch size, as in
    Cui et al.'s code and the LDAM-DRW code's FocalLoss (`.mean()` over the weighted terms), not by
    sum w_y as weighted CE does: with CB weights (beta 0.9999) on CIFAR-10-LT IF 100 the average
    w_y is about 0.17, so the weighted mean would train with about 6 times the gradient of the
    published CB focal runs. gamma = 0 is then (w_y CE).mean(), the unweighted CE when w = 1.
    """

    def __init__(self, gamma: float = 1.0, weight=None):
        super().__init__()
        if gamma < 0:
            raise ValueError(f"focal gamma = {gamma!r}: expected >= 0")
        self.gamma = float(gamma)
        self.register_buffer("weight", None if weight is None else torch.as_tensor(weight, dtype=torch.float32))

    def forward(self, out, y):
        logp = F.log_softmax(out["logits"].float(), dim=1).gather(1, y[:, None]).squeeze(1)
        # the clamp keeps the gradient finite at p_y = 1 for gamma < 1 ((1-p)^(gamma-1) -> inf)
        loss = -logp if self.gamma == 0 else (1.0 - logp.exp()).clamp_min(1e-30).pow(self.gamma) * -logp
        return loss.mean() if self.weight is None else (self.weight[y] * loss).mean()


def ldam_margins(counts, max_m: float = 0.5) -> torch.Tensor:
    """m_c = C' * n_c^(-1/4), with C' such that max_c m_c = max_m (Cao et al., NeurIPS 2019, eq. 13)."""
    n = np.asarray(counts, dtype=np.float64).ravel()
    if (n <= 0).any():
        raise ValueError("LDAM margins need every class to have at least one training image")
    m = n ** -0.25
    return torch.as_tensor(m * (max_m / m.max()), dtype=torch.float32)


class LDAMLoss(nn.Module):
    """Label-distribution-aware margin loss with deferred re-weighting (Cao et al., NeurIPS 2019).

    LDAM: CE(s * (cos - m_y e_y), y), the margin subtracted from the true-class cosine before
    the scale. Our CosineHead already returns s * cos, so this subtracts s * m_y from the
    (scaled) true-class logit: identical, provided the head's scale equals ``s`` (the ldam_drw
    recipe builds the head with the same s).

    DRW: uniform weights first, then cb_weights(counts, drw_beta). The LDAM-DRW code switches
    at ``epoch // 160 == 1`` with epochs counted from 0, i.e. from its 161st epoch, the same
    epoch whose lr is first divided by 100. Our epochs count from 1 (as in ltlab.training.loop), so
    the weights are on for ``epoch > drw_epoch``: drw_epoch = 160 defers re-weighting for 160
    epochs and turns it on at epoch 161, together with the milestone step (e > 160).
    """

    def __init__(self, counts, max_m: float = 0.5, s: float = 30.0, drw_epoch: int = 160,
                 drw_beta: float = 0.9999):
        super().__init__()
        self.s = float(s)
        self.drw_epoch = int(drw_epoch)
        self.register_buffer("margins", ldam_margins(counts, max_m))
        self.register_buffer("drw_weight", cb_weights(counts, drw_beta))
        self.epoch = 1

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    @property
    def reweighting(self) -> bool:
        return self.epoch > self.drw_epoch

    def margin_logits(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return logits.float().scatter_add(1, y[:, None], -self.s * self.margins[y][:, None])

    def forward(self, out, y):
        weight = self.drw_weight if self.reweighting else None
        return F.cross_entropy(self.margin_logits(out["logits"], y), y, weight=weight)


LOSSES.update({"weighted_ce": WeightedCE, "focal": FocalLoss})
