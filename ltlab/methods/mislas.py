"""MiSLAS: mixup stage one, then label-aware smoothing + shifted BN + weight scaling in stage two.

Zhong, Cui, Liu & Jia, "Improving Calibration for Long-Tailed Recognition", CVPR 2021
(Jia-Research-Lab/MiSLAS: ``train_stage1.py``, ``train_stage2.py``, ``methods.py``,
``config/cifar*/*.yaml``).

``mislas`` with ``stage1_run`` is stage two only. Without it, the training loop first trains stage one
(``own_stage1``; ltlab.training.loop.train_own_stage1)
(method ``ce`` with mixup, MiSLAS's stage-one recipe) into ``<run_dir>_stage1`` (a finished one
there is reused if its config matches, epochs included; an unfinished one is resumed), then runs
stage two with ``stage1_run`` pointing at it (so --restart of a ``mislas`` run restarts stage two
only: delete ``<run_dir>_stage1`` to retrain stage one). ``extra.mislas_stage1`` (a dict of
config keys) overrides the stage-one config, e.g. ``{epochs: 100, milestones: [80, 90]}``;
``weight_decay`` is shared by both stages.

Run length in one invocation (no ``stage1_run``): ``epochs`` is the length of stage one (paper: 200
on CIFAR), whose milestones and warm-up scale with it (ltlab.training.schedule); stage two gets the paper's
10 epochs scaled the same way, round(10 * epochs / 200), at least 1. ``mislas epochs=30`` is a
30-epoch stage one (warm-up 1, x0.1 after 24 and 27) and a 2-epoch stage two. Both plans are
printed before anything trains. With ``stage1_run`` set, ``epochs`` is stage two's alone.

Stage two (CIFAR): the stage-one classifier is fine-tuned (not re-initialised) under a learnable
per-class scale f (init 1): logits = f * (W x + b). Loss: label-aware smoothing
(ltlab.methods.losses_multi.LabelAwareSmoothing, concave). Class-balanced sampler, no mixup, 10 epochs,
cosine lr 0.1 (classifier at lr_factor x lr, scale at lr, via 'lr_scale' param groups).
Backbone: every parameter frozen; with shift BN on, it runs in train mode so that only the
BN running mean/var are re-estimated on the class-balanced batches (momentum 0.1), as coded.

Per-dataset table (eps_head, eps_tail, lr_factor, shift_bn), from the MiSLAS configs:
CIFAR-10 (and demo = CIFAR-10 IF 100) IF 100/50/10: 0.3/0.2/0.1, 0, 0.5/0.2/0.2, False;
CIFAR-100 IF 100/50/10: 0.4/0.3/0.2, 0.1/0/0, 0.2/0.1/0.1, True; ImageNet-LT and iNat18:
0.3, 0, 0.05, True; Places-LT: 0.4, 0.1, 0.05, True.
Choices: an imbalance factor outside {100, 50, 10} takes the row of the nearest one (in log
IF); ``folder`` and ``list`` data take the ImageNet-LT row. The original truncates a stage-two
epoch to ceil(N/batch)+1 iterations; here the class_balanced sampler draws N samples per
epoch (extra cb_epoch = 'n', ceil(N/batch) steps).
The original keeps the best-on-test epoch in both stages; ltlab reports the last epoch.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn as nn

from ltlab.config import FIELDS, ConfigError
from ltlab.config.epochs import follow_epochs, scale_epoch
from ltlab.methods import resolve
from ltlab.methods.base import Recipe, register
from ltlab.methods.losses_multi import LAS_SHAPES, LabelAwareSmoothing
from ltlab.methods.stage2 import DATA_KEYS, Stage2Recipe

# dataset -> {imb_factor: (eps_head, eps_tail, lr_factor)}, shift_bn
_CIFAR10 = ({100: (0.3, 0.0, 0.5), 50: (0.2, 0.0, 0.2), 10: (0.1, 0.0, 0.2)}, False)
_CIFAR100 = ({100: (0.4, 0.1, 0.2), 50: (0.3, 0.0, 0.1), 10: (0.2, 0.0, 0.1)}, True)
_IMAGENET = ({1: (0.3, 0.0, 0.05)}, True)
MISLAS_TABLE = {"demo": _CIFAR10, "cifar10_lt": _CIFAR10, "cifar100_lt": _CIFAR100, "imagenet_lt": _IMAGENET,
                "inat18": _IMAGENET, "places_lt": ({1: (0.4, 0.1, 0.05)}, True), "folder": _IMAGENET,
                "list": _IMAGENET}

SMALL = ("demo", "cifar10_lt", "cifar100_lt", "folder")
LARGE_STAGE1 = {"imagenet_lt": (180, 5e-4), "inat18": (200, 1e-4), "places_lt": (90, 5e-4), "list": (90, 5e-4)}


def mislas_table(dataset: str, imb_factor: float) -> dict:
    """The stage-two knobs of the MiSLAS configs for this dataset and imbalance factor."""
    rows, shift = MISLAS_TABLE.get(dataset, _IMAGENET)
    key = min(rows, key=lambda f: abs(math.log(max(float(imb_factor), 1.0)) - math.log(f)))
    head, tail, lr_factor = rows[key]
    return {"mislas_eps_head": head, "mislas_eps_tail": tail, "mislas_lr_factor": lr_factor,
            "mislas_shift_bn": shift}


def stage1_config(cfg) -> dict:
    """Stage-one config (MiSLAS train_stage1 recipe) for a ``mislas`` run without stage1_run."""
    if cfg.dataset in SMALL:
        d = {"epochs": 200, "batch_size": 128, "lr": 0.1, "schedule": "multistep", "warmup_epochs": 5,
             "milestones": [160, 180], "lr_gamma": 0.1, "mixup_alpha": 1.0}
    else:
        epochs, wd = LARGE_STAGE1.get(cfg.dataset, (90, 5e-4))
        d = {"epochs": epochs, "batch_size": 256, "lr": 0.1, "schedule": "cosine", "weight_decay": wd,
             "mixup_alpha": 0.2}
    d.update({k: getattr(cfg, k) for k in DATA_KEYS})
    d.update({k: getattr(cfg, k) for k in ("seed", "device", "amp", "channels_last", "compile", "eval_every",
                                           "progress", "momentum", "weight_decay", "accum_steps", "sync_bn",
                                           "num_workers", "weights")})
    overrides = dict(cfg.extra.get("mislas_stage1") or {})
    paper_epochs = d["epochs"]
    d.update(overrides)
    d = follow_epochs(d, overrides, paper_epochs, {})
    if d.get("schedule") != "multistep":   # the recipe's milestones would be refused as ignored keys
        for key in ("milestones", "lr_gamma"):
            if key not in overrides:
                d.pop(key, None)
    run_dir = Path(str(cfg.resolved_run_dir()) + "_stage1")
    d.update({"method": "ce", "stage1_run": "", "run_dir": str(run_dir), "run_name": run_dir.name})
    return d


class ScaledClassifier(nn.Module):
    """Learnable weight scaling on top of a head: logits = f * head(x)['logits'], f init 1
    (MiSLAS ``LearnableWeightScaling``; Kang et al. ICLR 2020's LWS)."""

    def __init__(self, inner: nn.Module, num_classes: int):
        super().__init__()
        self.inner = inner
        self.scale = nn.Parameter(torch.ones(num_classes))

    def forward(self, f):
        out = dict(self.inner(f))
        out["logits"] = out["logits"] * self.scale
        return out


class MiSLAS(Stage2Recipe):
    name = "mislas"
    paper = "Zhong et al., Improving Calibration for Long-Tailed Recognition (MiSLAS), CVPR 2021"
    changes = ("stage 1: CE + mixup 1.0; stage 2: fine-tune classifier x learnable scale with label-aware "
               "smoothing, shifted BN, class-balanced sampling")
    needs_stage1 = False   # without stage1_run, prepare() trains stage one first
    extra_keys = {
        "mislas_eps_head": (float, 0.3, "LAS smoothing of the most frequent class (default: per-dataset table)"),
        "mislas_eps_tail": (float, 0.0, "LAS smoothing of the rarest class (default: per-dataset table)"),
        "mislas_las_shape": (str, "concave", "LAS schedule: concave | linear | convex | exp"),
        "mislas_las_power": (float, 1.0, "power of the 'exp' LAS schedule"),
        "mislas_lr_factor": (float, 0.5, "classifier lr = lr_factor x lr (default: per-dataset table)"),
        "mislas_shift_bn": (bool, False, "re-estimate BN running statistics in stage two (default: table)"),
        "mislas_stage1": (dict, {}, "overrides of the stage-one config when stage1_run is empty"),
    }

    def defaults(self, user: dict) -> dict:
        d = super().defaults(user)
        dataset = user.get("dataset", d.get("dataset", FIELDS["dataset"].default))
        imb = user.get("imb_factor", d.get("imb_factor", FIELDS["imb_factor"].default))
        d.update({"batch_size": 128, "lr": 0.1, "mixup_alpha": 0.0,
                  "weight_decay": 2e-4 if dataset in SMALL else LARGE_STAGE1.get(dataset, (0, 5e-4))[1]})
        # cb_epoch 'n': MiSLAS cuts a stage-two epoch to about N samples (ceil(N/batch)+1 steps)
        d["extra"] = {**mislas_table(dataset, imb), "cb_epoch": "n"}
        return d

    def resolve(self, merged: dict, user: dict, paper_epochs: int) -> dict:
        """Without stage1_run, a user's ``epochs`` is stage one's; stage two scales with it."""
        epochs = user.get("epochs")
        if merged.get("stage1_run") or not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 1:
            return super().resolve(merged, user, paper_epochs)
        dataset = merged.get("dataset", FIELDS["dataset"].default)
        stage1_paper = 200 if dataset in SMALL else LARGE_STAGE1.get(dataset, (90, 0))[0]
        extra = dict(merged.get("extra") or {})
        s1 = extra.get("mislas_stage1") or {}
        if not isinstance(s1, dict) or "epochs" in s1:    # both stages set: epochs is stage two's
            return super().resolve(merged, user, paper_epochs)
        extra["mislas_stage1"] = {**s1, "epochs": epochs}
        return dict(merged, extra=extra, epochs=max(1, scale_epoch(paper_epochs, epochs, stage1_paper)))

    def check(self, cfg) -> None:
        if cfg.stage1_run:
            super().check(cfg)
        else:
            Recipe.check(self, cfg)
            fixed = ("method", "run_dir", "run_name")
            bad = [k for k in self.opt(cfg, "mislas_stage1") if k not in FIELDS or k in fixed]
            if bad:
                raise ConfigError(f"extra key 'mislas_stage1' sets {bad[0]!r}: allowed keys are config keys other "
                                  "than method, run_dir and run_name")
            try:   # a bad stage-one value is refused now, not after stage two's checks have passed
                resolve.from_dict(stage1_config(cfg))
            except ConfigError as e:
                raise ConfigError(f"extra key 'mislas_stage1' = {self.opt(cfg, 'mislas_stage1')!r} "
                                  f"(the stage-one config): {e}") from None
        if self.opt(cfg, "mislas_las_shape") not in LAS_SHAPES:
            raise ConfigError(f"extra key 'mislas_las_shape' = {self.opt(cfg, 'mislas_las_shape')!r}: allowed "
                              f"values are {', '.join(LAS_SHAPES)}")
        if cfg.mixup_alpha > 0:
            raise ConfigError("config key 'mixup_alpha' > 0 with method 'mislas': stage two trains without mixup; "
                              "set the stage-one mixup in extra.mislas_stage1")

    # ---- stage one ---------------------------------------------------------------------
    def own_stage1(self, cfg) -> dict | None:
        """Without stage1_run, the training loop first trains (or reuses) this stage one."""
        return None if cfg.stage1_run else stage1_config(cfg)

    # ---- stage two ---------------------------------------------------------------------
    def build_model(self, cfg, data):
        model = self.stage1_model(cfg, data)
        fc = getattr(model.head, "fc", None)
        if not isinstance(fc, nn.Linear):
            raise ConfigError(f"stage-one run '{cfg.stage1_run}' has no linear classifier (head.fc): MiSLAS "
                              "fine-tunes a linear head; train stage one with method ce")
        model.head = ScaledClassifier(model.head, data.num_classes)
        model.shift_bn = bool(self.opt(cfg, "mislas_shift_bn"))
        return model

    def build_loss(self, cfg, data):
        return LabelAwareSmoothing(data.train_counts, self.opt(cfg, "mislas_eps_head"),
                                   self.opt(cfg, "mislas_eps_tail"), self.opt(cfg, "mislas_las_shape"),
                                   self.opt(cfg, "mislas_las_power"))

    def parameters(self, model, cfg):
        for p in model.backbone.parameters():
            p.requires_grad_(False)
        return [{"params": list(model.head.inner.parameters()), "lr_scale": self.opt(cfg, "mislas_lr_factor")},
                {"params": [model.head.scale], "lr_scale": 1.0}]

    def train_mode(self, model) -> None:
        model.train()
        if not getattr(model, "shift_bn", False):
            model.backbone.eval()

    def export(self, model) -> dict:
        head = getattr(model, "_orig_mod", model).head
        fc = head.inner.fc
        out = {"classifier_weight": fc.weight.detach().float().cpu().numpy(),
               "lws_scale": head.scale.detach().float().cpu().numpy()}
        if fc.bias is not None:
            out["classifier_bias"] = fc.bias.detach().float().cpu().numpy()
        return out


register(MiSLAS())
