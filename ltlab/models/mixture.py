"""Mixture-of-softmaxes head (EnMos / ReDebias).

pengr0925/EnMos_debias, ``models/EnergyMosClassifier.py:DotProduct_MOS`` (paper: "ReDebias:
Exploring Residual energy based Debias learning", OpenReview SwRlpDKrY9). K linear heads
z_k = W_k x + b_k and a bias-free gate w(x) = softmax(W_g x), W_g in R^{K x d}:

    p(y|x) = sum_k w_k(x) softmax(z_k(x))_y.

Output dict: 'component_logits' (K, N, C), 'gate' (N, K) (the mixing weights, rows sum to
1), and 'logits' = log p(.|x) = logsumexp_k(log w_k + log_softmax(z_k)): normalised
log-probabilities, hence a valid logit vector whose softmax is the mixture itself.
The residual-energy gate of the original is commented out there (it needs the label) and
is not implemented.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class MixtureHead(nn.Module):
    def __init__(self, in_dim: int, num_classes: int, components: int = 3):
        super().__init__()
        if components < 1:
            raise ValueError(f"components = {components}: need at least one")
        self.components, self.num_classes = int(components), int(num_classes)
        # one Linear for the K heads: row block k of the weight is head k
        self.fc = nn.Linear(in_dim, components * num_classes)
        self.gate = nn.Linear(in_dim, components, bias=False)

    def forward(self, f):
        with torch.autocast(f.device.type, enabled=False):
            x = f.float()
            z = self.fc(x).reshape(x.shape[0], self.components, self.num_classes).transpose(0, 1)  # (K, N, C)
            log_w = F.log_softmax(self.gate(x), dim=1)                                          # (N, K)
            logits = torch.logsumexp(log_w.t()[..., None] + F.log_softmax(z, dim=-1), dim=0)
        return {"component_logits": z, "gate": log_w.exp(), "logits": logits}
