"""EnMos_debias ("ReDebias"): a mixture of softmaxes trained with the logit-adjusted likelihood.

pengr0925/EnMos_debias (``models/EnergyMosClassifier.py``, ``loss/EnergyDebiasMosLoss.py``);
paper "ReDebias: Exploring Residual energy based Debias learning" (OpenReview SwRlpDKrY9).

Head: K = 3 linear heads with bias and a bias-free softmax gate (ltlab.models.mixture).
Loss: -log(sum_k w_k softmax(z_k + log(C pi))_y + 1e-12) (ltlab.methods.losses_multi.MixtureDebiasNLL).
Prediction: the mixture without the prior term, log sum_k w_k softmax(z_k), which estimates
the balanced posterior.

CIFAR defaults come from the repo's unwired ``cifar10_lt_im100/En_debias_11.yaml`` (bs 128,
lr 0.1, wd 2e-4, 200 epochs, x0.01 at 160 and 180), with ltlab's 5-epoch warm-up. The original
clips gradients to max-norm 5 per network (``run_networks.py`` ``batch_backward``: one
``clip_grad_norm_`` call for ``feat_model`` and one for ``classifier``), so this recipe clips
the backbone and the mixture head separately, each to 5 (:meth:`EnMos.clip_gradients`).
Backbone: ltlab's LDAM ResNet-32 (the repo's CIFAR model is a Google-LA bottleneck ResNet-32
that no code path uses). The residual-energy gate (commented out upstream; it needs the label)
is not implemented.
"""
from __future__ import annotations

import torch

from ltlab.config import ConfigError
from ltlab.methods.base import Recipe, register
from ltlab.methods.losses_multi import MixtureDebiasNLL
from ltlab.models import LTNet, build_backbone
from ltlab.models.inference import unwrap
from ltlab.models.mixture import MixtureHead


class EnMos(Recipe):
    name = "enmos"
    paper = "EnMos_debias / ReDebias (pengr0925/EnMos_debias; OpenReview SwRlpDKrY9)"
    changes = ("head: 3-softmax mixture with bias-free gate; loss: mixture NLL with log(C pi) in each component; "
               "predict without it")
    extra_keys = {"enmos_components": (int, 3, "number of mixture components K")}
    clip_grad_norm = 5.0   # per network, as the original (run_networks.py)

    def defaults(self, user: dict) -> dict:
        return {"batch_size": 128, "lr": 0.1, "weight_decay": 2e-4, "epochs": 200, "warmup_epochs": 5,
                "schedule": "multistep", "milestones": [160, 180], "lr_gamma": 0.01}

    def check(self, cfg) -> None:
        super().check(cfg)
        if self.opt(cfg, "enmos_components") < 1:
            raise ConfigError(f"extra key 'enmos_components' = {self.opt(cfg, 'enmos_components')}: must be >= 1")

    def build_model(self, cfg, data):
        backbone = build_backbone(cfg.model)
        return LTNet(backbone, MixtureHead(backbone.out_dim, data.num_classes, self.opt(cfg, "enmos_components")))

    def clip_gradients(self, model) -> None:
        # EnMos_debias's feat_model and classifier are ltlab's backbone and head; a single norm over
        # both would let the backbone's large gradients shrink the head's step too
        net = unwrap(model)
        for part in (net.backbone, net.head):
            torch.nn.utils.clip_grad_norm_(part.parameters(), self.clip_grad_norm)

    def build_loss(self, cfg, data):
        return MixtureDebiasNLL(data.train_counts)

    def export(self, model) -> dict:
        head = getattr(model, "_orig_mod", model).head
        k, c = head.components, head.num_classes
        w = head.fc.weight.detach().float().cpu().numpy()
        b = head.fc.bias.detach().float().cpu().numpy()
        return {"mos_weight": w.reshape(k, c, -1), "mos_bias": b.reshape(k, c),
                "mos_gate": head.gate.weight.detach().float().cpu().numpy()}


register(EnMos())
