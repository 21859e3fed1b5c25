"""BalPoE: a balanced product of logit-adjusted experts, calibrated by mixup.

Sanchez Aimar, Jonnarth, Felsberg & Kuhlmann, "Balanced Product of Calibrated Experts for Long-Tailed
Recognition", CVPR 2023 (emasa/BalPoE-CalibratedLT, ``configs/mixup/*/config_cifar*_bs-experts.json``).

Model: ResNet-32 with shared conv1 + BN + layer1 and, per expert, its own layer2, layer3 and a
cosine classifier (s = 30) (ltlab.models.experts). Loss: mean over experts k of
CE(z_k + tau_k log pi) (ltlab.methods.losses_multi.BalPoELoss); tau = [0, 1, 2] by default, or M
values evenly spaced over [balpoe_tau_min, balpoe_tau_max], or an explicit balpoe_taus list.
Mixup alpha 0.8 (CIFAR-10, demo) / 0.4 (CIFAR-100 and the rest), applied by the loop.
Prediction: the mean of the raw expert logits, without any training-time bias; the ensemble
targets the test prior pi^(1 - mean tau), i.e. the uniform prior when mean tau = 1.

Known test prior (BalPoE's --posthoc_bias_correction), from the saved logits:
``ltlab.evaluation.posthoc.prior_correct(logits, train_counts ** (1 - mean_tau), q)`` adds log q and
removes the prior the ensemble targets (with mean tau = 1 the counts become uniform, so only
log q is added, exactly as BalPoE does); it is the rule shift.source_prior's 'method' gives
(``balpoe_taus`` is exported into predictions/*.npz). The analysis pages' known-prior column
fits the prior on the val split and reweights the calibrated posteriors instead (shift.shift_row).

Augmentation on small images: BalPoE's CIFAR pipeline (``data_loader/cifar_data_loaders.py``)
is RandomCrop(32, padding=4), RandomHorizontalFlip, RandomRotation(15) (PIL: nearest, zero
fill), in that order: the rotation comes after crop and flip. The GpuLoader does the same on the
device (``balpoe_rotation`` degrees, 15 by default; 0 turns it off); the large-image list loader
has no rotation, so a nonzero value there is refused. Models: the CIFAR ResNet-32 (shared stem + layer1, per-expert layer2-3) and the
torchvision ResNets (shared stem + layer1-2, per-expert layer3-4; ltlab.models.experts_resnet).
"""
from __future__ import annotations

import numpy as np

from ltlab.config import ConfigError
from ltlab.data import SMALL_DATASETS
from ltlab.methods.base import Recipe, register
from ltlab.methods.losses_multi import BalPoELoss, expert_taus
from ltlab.models.experts_resnet import EXPERT_MODELS, build_expert_model

BALPOE_MIXUP = {"demo": 0.8, "cifar10_lt": 0.8, "cifar100_lt": 0.4}
BALPOE_ROTATION = 15.0   # RandomRotation(15) of BalPoE's CIFAR transforms


class BalPoE(Recipe):
    name = "balpoe"
    paper = "Sanchez Aimar et al., Balanced Product of Calibrated Experts for Long-Tailed Recognition, CVPR 2023"
    changes = ("model: multi-expert ResNet-32 (cosine s=30); loss: mean_k CE(z_k + tau_k log pi); mixup; "
               "predict mean z_k")
    extra_keys = {
        "balpoe_experts": (int, 3, "number of experts M"),
        "balpoe_tau_min": (float, 0.0, "smallest tau of the evenly spaced list"),
        "balpoe_tau_max": (float, 2.0, "largest tau of the evenly spaced list"),
        "balpoe_taus": (list, None, "explicit tau per expert (overrides min/max; sets M if balpoe_experts is absent)"),
        "balpoe_rotation": (float, None, "RandomRotation degrees after crop and flip (small images: 15, else 0)"),
    }

    def defaults(self, user: dict) -> dict:
        return {"batch_size": 128, "lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4,
                "epochs": 200, "warmup_epochs": 5, "schedule": "multistep", "milestones": [160, 180],
                "lr_gamma": 0.1, "mixup_alpha": BALPOE_MIXUP.get(user.get("dataset", "demo"), 0.4)}

    def taus(self, cfg) -> list:
        given = cfg.extra.get("balpoe_taus")
        if given is not None:
            return [float(t) for t in given]
        return expert_taus(self.opt(cfg, "balpoe_experts"), self.opt(cfg, "balpoe_tau_min"),
                           self.opt(cfg, "balpoe_tau_max"))

    def rotation_degrees(self, cfg) -> float:
        given = cfg.extra.get("balpoe_rotation")
        if given is not None:
            return float(given)
        return BALPOE_ROTATION if cfg.dataset in SMALL_DATASETS else 0.0

    def check(self, cfg) -> None:
        super().check(cfg)
        rot = cfg.extra.get("balpoe_rotation")
        if rot is not None and not 0 <= rot <= 180:
            raise ConfigError(f"extra key 'balpoe_rotation' = {rot!r}: expected degrees in [0, 180]")
        if rot and cfg.dataset not in SMALL_DATASETS:
            raise ConfigError(f"extra key 'balpoe_rotation' = {rot!r}: the rotation is done by the small-image "
                              f"loader ({', '.join(SMALL_DATASETS)}); dataset {cfg.dataset!r} allows 0 only")
        if cfg.model not in EXPERT_MODELS:
            raise ConfigError(f"config key 'model' = {cfg.model!r}: method 'balpoe' has multi-expert versions of "
                              f"{', '.join(EXPERT_MODELS)} only")
        m = self.opt(cfg, "balpoe_experts")
        if m < 1:
            raise ConfigError(f"extra key 'balpoe_experts' = {m}: must be >= 1")
        given = cfg.extra.get("balpoe_taus")
        if given is not None:
            if not given or not all(isinstance(t, (int, float)) and not isinstance(t, bool) for t in given):
                raise ConfigError(f"extra key 'balpoe_taus' = {given!r}: expected a non-empty list of numbers")
            if "balpoe_experts" in cfg.extra and len(given) != m:
                raise ConfigError(f"extra key 'balpoe_taus' has {len(given)} values but balpoe_experts = {m}")

    def build_model(self, cfg, data):
        taus = self.taus(cfg)
        model = build_expert_model(cfg.model, data.num_classes, experts=len(taus))
        model.taus = taus   # a plain attribute: exported beside the predictions
        return model

    def build_loss(self, cfg, data):
        return BalPoELoss(data.train_counts, self.taus(cfg))

    def export(self, model) -> dict:
        return {"balpoe_taus": np.asarray(getattr(model, "_orig_mod", model).taus, dtype=np.float64)}


register(BalPoE())
