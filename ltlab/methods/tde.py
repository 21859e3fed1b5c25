"""Causal-TDE: a causal-norm classifier trained with plain CE, with the total direct effect at test.

Tang, Huang & Zhang, "Long-Tailed Classification by Keeping the Good and Removing the Bad
Momentum Causal Effect", NeurIPS 2020 (KaihuaTang/Long-Tailed-Recognition.pytorch,
``config/CIFAR{10,100}_LT/causal_norm_32.yaml``).

Training: CE on the de-confounded logits (tau 16, gamma 1/32, K = 2 heads), instance-balanced
sampling, the moving feature direction d <- mu d + mean(x) (mu 0.9) updated on every training
batch and kept in the checkpoint. Prediction: the TDE logits with alpha (1.0 CIFAR-10 and demo,
1.5 CIFAR-100, 3.0 ImageNet-LT; others 1.0). The classifier weight, the direction and the
hyperparameters are exported into predictions/*.npz, and ``ltlab.evaluation.posthoc_tde`` recomputes
the logits for any alpha from the saved features (alpha = 0: the "De-confound" baseline).

Choices where the original differs or is ambiguous:
- backbone: LDAM's ResNet-32 (64-d feature, split into 2 x 32 for the two heads) instead of
  BBN's two-branch ResNet-32 (128-d, one head per branch);
- warm-up: ltlab's linear lr e/5 (e = 1..5) instead of the original's ramp from lr/3;
  milestones [120, 160] with factor 0.01 as in the original (lr x 1e-4 after epoch 160);
- mu stays 0.9 for every dataset (the original anneals it towards 1 with the lr outside CIFAR);
- the LT subset is ltlab's seeded one (the original's BBN copy is unseeded).
"""
from __future__ import annotations

import numpy as np

from ltlab.config import ConfigError
from ltlab.methods.base import Recipe, register
from ltlab.models import LTNet, build_backbone
from ltlab.models.causal_norm import CausalNormHead

TDE_ALPHA = {"demo": 1.0, "cifar10_lt": 1.0, "cifar100_lt": 1.5, "imagenet_lt": 3.0}


class TDE(Recipe):
    name = "tde"
    paper = "Tang et al., Long-Tailed Classification by ... Momentum Causal Effect, NeurIPS 2020"
    changes = "head: multi-head causal norm + moving direction; prediction: TDE (factual - alpha x counterfactual)"
    extra_keys = {
        "tde_alpha": (float, 1.0, "strength of the removed direct effect at test (0 = De-confound)"),
        "tde_tau": (float, 16.0, "logit scale tau"),
        "tde_gamma": (float, 1 / 32, "gamma in w / (|w| + gamma)"),
        "tde_heads": (int, 2, "number of heads K (the feature is split into K chunks)"),
        "tde_mu": (float, 0.9, "momentum of the feature direction (d <- mu d + mean x)"),
    }

    def defaults(self, user: dict) -> dict:
        return {"batch_size": 256, "lr": 0.2, "weight_decay": 5e-4, "epochs": 200, "warmup_epochs": 5,
                "schedule": "multistep", "milestones": [120, 160], "lr_gamma": 0.01,
                "extra": {"tde_alpha": TDE_ALPHA.get(user.get("dataset", "demo"), 1.0)}}

    def check(self, cfg) -> None:
        super().check(cfg)
        if self.opt(cfg, "tde_heads") < 1:
            raise ConfigError(f"extra key 'tde_heads' = {self.opt(cfg, 'tde_heads')}: must be >= 1")

    def build_model(self, cfg, data):
        backbone = build_backbone(cfg.model)
        heads = self.opt(cfg, "tde_heads")
        if backbone.out_dim % heads:
            raise ConfigError(f"extra key 'tde_heads' = {heads}: the {cfg.model} feature size {backbone.out_dim} "
                              "is not divisible by it")
        head = CausalNormHead(backbone.out_dim, data.num_classes, tau=self.opt(cfg, "tde_tau"),
                              gamma=self.opt(cfg, "tde_gamma"), heads=heads, mu=self.opt(cfg, "tde_mu"),
                              alpha=self.opt(cfg, "tde_alpha"))
        return LTNet(backbone, head)

    def inference(self, out: dict):
        return out["tde_logits"]

    def export(self, model) -> dict:
        head = getattr(model, "_orig_mod", model).head
        return {"tde_weight": head.weight.detach().float().cpu().numpy(),
                "tde_direction": head.direction.detach().float().cpu().numpy(),
                "tde_alpha": np.float64(head.alpha), "tde_tau": np.float64(head.tau),
                "tde_gamma": np.float64(head.gamma), "tde_heads": np.int64(head.heads)}


register(TDE())
