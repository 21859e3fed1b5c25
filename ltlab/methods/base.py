"""The Recipe base class and the method registry."""
from __future__ import annotations

import torch
import torch.nn as nn

from ltlab.config import ConfigError
from ltlab.config.checks import check_extra_pairs, check_extra_value
from ltlab.config.epochs import follow_epochs
from ltlab.methods.losses import LOSSES
from ltlab.methods.samplers import SAMPLER_EXTRA_KEYS, build_sampler, check_sampler_extra
from ltlab.models import build_model

METHODS: dict[str, Recipe] = {}


def register(recipe: Recipe) -> Recipe:
    METHODS[recipe.name] = recipe
    return recipe


class Recipe:
    """Defaults and hooks of one method. Subclass and override what differs."""

    name = "base"
    paper = ""
    changes = ""
    head = "linear"
    loss = "ce"
    needs_stage1 = False   # refuses to run without stage1_run
    takes_stage1 = False   # stage1_run means something to it (two-stage recipes)
    trains = True          # False: a post-hoc method, no epochs run (e.g. tau_norm, ncm)
    clip_grad_norm = None  # max global gradient norm before each optimizer step (None: no clipping)
    # method-specific knobs in cfg.extra: name -> (type, default, help)
    extra_keys: dict = {}
    linear_init = "kaiming"   # a linear head on resnet32: 'kaiming' (the CIFAR originals) or 'default' (torch's)
    epoch_extra_keys: tuple = ()   # extra knobs counted in epochs, scaled with a shortened run

    # ---- configuration ----------------------------------------------------------------
    def defaults(self, user: dict) -> dict:
        """Config defaults of this method; `user` is what the user gave (to pick per dataset)."""
        return {}

    def resolve(self, merged: dict, user: dict, paper_epochs: int) -> dict:
        """The merged config (defaults < user) before validation: by default, the schedule
        follows a user's ``epochs`` (ltlab.config.epochs.follow_epochs)."""
        known = self.known_extra()
        return follow_epochs(merged, user, paper_epochs, {k: known[k][1] for k in self.epoch_extra_keys})

    def known_extra(self) -> dict:
        """This method's knobs plus the sampler knobs every method may set."""
        return {**SAMPLER_EXTRA_KEYS, **self.extra_keys}

    def check(self, cfg) -> None:
        known = self.known_extra()
        for key, value in cfg.extra.items():
            if key not in known:
                raise ConfigError(f"unknown extra key '{key}' for method '{self.name}'; allowed: {', '.join(known)}")
            typ = known[key][0]
            int_for_float = typ is float and isinstance(value, int) and not isinstance(value, bool)
            if not int_for_float and (not isinstance(value, typ) or (typ is not bool and isinstance(value, bool))):
                raise ConfigError(f"extra key '{key}' = {value!r}: expected {typ.__name__}")
            check_extra_value(key, value, typ)
        check_extra_pairs(cfg.extra)
        try:
            check_sampler_extra(cfg)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        if self.needs_stage1 and not cfg.stage1_run:
            raise ConfigError(f"method '{self.name}' is a stage-two method: set stage1_run to a finished stage-one run directory")

    def opt(self, cfg, key):
        """An extra knob's value, or its default."""
        return cfg.extra.get(key, self.known_extra()[key][1])

    def own_stage1(self, cfg) -> dict | None:
        """The config of a stage one this recipe trains itself before its own run (MiSLAS
        without stage1_run), or None. The training loop runs it (ltlab.training.loop)."""
        return None

    # ---- pieces ------------------------------------------------------------------------
    def build_model(self, cfg, data) -> nn.Module:
        model = build_model(cfg.model, data.num_classes, self.head)
        if self.head == "linear" and cfg.model in ("resnet8", "resnet20", "resnet32") and self.linear_init == "kaiming":
            # LDAM-DRW's and MiSLAS's resnet32 (and the same family's resnet8 / resnet20) apply kaiming_normal_ to every Conv2d and Linear
            # (their _weights_init), the classifier included; its bias keeps torch's default
            nn.init.kaiming_normal_(model.head.fc.weight)
        return model

    def build_loss(self, cfg, data) -> nn.Module:
        return LOSSES[self.loss]()

    def build_sampler(self, cfg, data):
        return build_sampler(cfg.sampler, data.train_y.cpu().numpy(), data.train_counts, cfg)

    def setup(self, model, cfg, data) -> None:
        """Before training: e.g. load and freeze a stage-one model."""

    def rotation_degrees(self, cfg) -> float:
        """Range of the random rotation the training loader adds after crop and flip (0: none)."""
        return 0.0

    def clip_gradients(self, model) -> None:
        """Clip before each optimizer step: one max norm over all parameters (the
        LDAM-DRW-lineage convention); a recipe whose original clips per network overrides."""
        if self.clip_grad_norm:
            torch.nn.utils.clip_grad_norm_(model.parameters(), self.clip_grad_norm)

    def parameters(self, model, cfg):
        return [p for p in model.parameters() if p.requires_grad]

    def train_mode(self, model) -> None:
        model.train()

    def inference(self, out: dict):
        """Model output dict -> logits (N, C) used for prediction and saved to predictions/."""
        return out["logits"]

    def export(self, model) -> dict:
        """Arrays saved beside the predictions so post-hoc tools need no model (numpy)."""
        head = getattr(model, "head", None)
        fc = getattr(head, "fc", None)
        if isinstance(fc, nn.Linear):
            out = {"classifier_weight": fc.weight.detach().float().cpu().numpy()}
            if fc.bias is not None:
                out["classifier_bias"] = fc.bias.detach().float().cpu().numpy()
            return out
        return {}

    def finalize(self, model, cfg, data) -> None:
        """After training, before predictions: e.g. choose a post-hoc knob on the val split."""
