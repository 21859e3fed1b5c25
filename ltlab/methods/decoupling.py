"""Decoupling's stage-two classifiers (Kang et al., Decoupling Representation and Classifier for
Long-Tailed Recognition, ICLR 2020): cRT and LWS retrain on a frozen stage-one backbone;
tau-norm and NCM are post-hoc (no epochs).

Every recipe takes `stage1_run` (a finished stage-one run, usually `ce`) and inherits its data
and backbone (ltlab.methods.stage2). The classifier-balancing repo has no CIFAR configs, so
cRT / LWS use a MiSLAS-like CIFAR stage two: 10 epochs, cosine from lr 0.1 with no warm-up,
batch 128, SGD 0.9, wd 2e-4 (MiSLAS keeps stage one's wd), class-balanced sampling with 4
images per visited class.

Batch-norm choice for cRT / LWS (`bn_mode`, default 'update'): Decoupling's code puts the
frozen backbone in train() mode in stage two, so its BN running statistics are re-estimated on
the class-balanced batches (convolution and BN affine weights stay frozen). We follow the code;
'frozen' keeps stage one's statistics (the Stage2Recipe default, the paper's "fixed
representation" taken literally).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from ltlab.config import ConfigError
from ltlab.data import resolve_val_split
from ltlab.evaluation.posthoc_classifier import NCM_VARIANTS, TAU_GRID, choose_tau, ncm_centroids, tau_norm_weights
from ltlab.methods.base import METHODS, register
from ltlab.methods.stage2 import Stage2Recipe, read_stage1_config
from ltlab.models.heads import LinearHead
from ltlab.models.inference import autocast_dtype, predict

BN_MODES = ("update", "frozen")
CIFAR_STAGE2 = {"epochs": 10, "schedule": "cosine", "warmup_epochs": 0, "lr": 0.1, "batch_size": 128,
                "momentum": 0.9, "nesterov": False, "weight_decay": 2e-4, "sampler": "class_balanced",
                "mixup_alpha": 0.0}


# ------------------------------------------------------------------------------ heads
class LWSHead(nn.Module):
    """Learnable weight scaling: logits_c = f_c * z_c with z the frozen inner head's logits, so
    f_c * (w_c . x + b_c) on a linear head. f starts at 1 (the stage-one classifier)."""

    def __init__(self, inner: nn.Module, num_classes: int):
        super().__init__()
        self.inner = inner
        for p in self.inner.parameters():
            p.requires_grad_(False)
        self.scale = nn.Parameter(torch.ones(num_classes))

    def forward(self, f):
        out = dict(self.inner(f))
        out["logits"] = self.scale * out["logits"]
        return out


class TauNormHead(nn.Module):
    """x . w_c / ||w_c||^tau, no bias (Decoupling's tau_norm.py)."""

    def __init__(self, weight: np.ndarray, tau: float, grid=None, val_score=None):
        super().__init__()
        self.register_buffer("weight", torch.as_tensor(np.asarray(weight), dtype=torch.float32))
        self.register_buffer("normed", torch.as_tensor(tau_norm_weights(weight, tau), dtype=torch.float32))
        self.tau = float(tau)
        self.grid = None if grid is None else np.asarray(grid, dtype=np.float64)
        self.val_score = None if val_score is None else np.asarray(val_score, dtype=np.float64)

    def forward(self, f):
        return {"logits": f.float() @ self.normed.t()}


class NCMHead(nn.Module):
    """-||phi(x) - mu_c||^2 with phi the NCM feature map (ltlab.evaluation.posthoc_classifier)."""

    def __init__(self, centroids: np.ndarray, mean: np.ndarray, variant: str):
        super().__init__()
        self.register_buffer("centroids", torch.as_tensor(centroids, dtype=torch.float32))
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.variant = variant

    def forward(self, f):
        # distances by expansion cancel badly in bf16: compute them in fp32 whatever autocast says
        with torch.autocast(f.device.type, enabled=False):
            g = f.float()
            if self.variant == "cl2n":
                g = g - self.mean
            if self.variant in ("cl2n", "l2n"):
                g = nn.functional.normalize(g, dim=1, eps=1e-12)
            mu = self.centroids
            d2 = (g * g).sum(1, keepdim=True) - 2.0 * g @ mu.t() + (mu * mu).sum(1)[None, :]
            return {"logits": -d2.clamp_min(0)}


# ------------------------------------------------------------------------------ recipes
def _features(recipe, model, cfg, data, split: str) -> dict:
    """Unaugmented features and labels of a split, model in eval mode, with the run's autocast
    (so they match the features finish_run computes for val and test)."""

    device = next(model.parameters()).device
    return predict(model, data.eval_loader(split), recipe, amp_dtype=autocast_dtype(cfg, device), features=True)


class _Decoupled(Stage2Recipe):
    paper = "Kang et al., Decoupling Representation and Classifier for Long-Tailed Recognition, ICLR 2020"
    stage2_extra = dict(CIFAR_STAGE2)

    def defaults(self, user):
        d = super().defaults(user)
        d.update(self.stage2_extra)
        return d



class _Retrained(_Decoupled):
    extra_keys = {"bn_mode": (str, "update", "update: re-estimate the frozen backbone's BN statistics on the "
                                             "stage-two batches (Decoupling's code); frozen: keep stage one's")}

    def check(self, cfg):
        super().check(cfg)
        if self.opt(cfg, "bn_mode") not in BN_MODES:
            raise ConfigError(f"extra key 'bn_mode' = {self.opt(cfg, 'bn_mode')!r}: allowed values are "
                              f"{', '.join(BN_MODES)}")

    def setup(self, model, cfg, data):
        # on the model, not on this shared recipe object: train_mode() only sees the model
        model.stage2_bn_mode = self.opt(cfg, "bn_mode")

    def train_mode(self, model):
        if getattr(model, "stage2_bn_mode", "update") == "update":
            model.train()   # weights stay frozen (not in the optimiser); only BN running stats move
        else:
            super().train_mode(model)


class CRT(_Retrained):
    """Classifier re-training: a freshly initialised linear classifier (with bias) trained with
    CE and class-balanced sampling on the frozen stage-one backbone."""

    name = "crt"
    changes = "stage 2: new linear classifier, CE, class-balanced sampling, frozen backbone"

    def build_model(self, cfg, data):
        model = self.stage1_model(cfg, data)
        model.head = LinearHead(model.backbone.out_dim, data.num_classes, bias=True)
        return model


class LWS(_Retrained):
    """Learnable weight scaling: the stage-one classifier (weights and bias) is frozen and only a
    per-class scale f_c (init 1) is learned, with CE and class-balanced sampling. Exported
    classifier_weight / classifier_bias are the effective f_c * w_c and f_c * b_c."""

    name = "lws"
    changes = "stage 2: per-class scale f_c on the frozen stage-one classifier, class-balanced sampling"

    def build_model(self, cfg, data):
        model = self.stage1_model(cfg, data)
        model.head = LWSHead(model.head, data.num_classes)
        return model

    def export(self, model):
        head = model.head
        f = head.scale.detach().float().cpu()
        out = {"lws_scale": f.numpy()}
        fc = getattr(head.inner, "fc", None)
        if isinstance(fc, nn.Linear):
            out["classifier_weight"] = (f[:, None] * fc.weight.detach().float().cpu()).numpy()
            if fc.bias is not None:
                out["classifier_bias"] = (f * fc.bias.detach().float().cpu()).numpy()
        return out


class _PostHoc(_Decoupled):
    """No epochs: the stage-one model is turned into a new classifier in finalize()."""

    trains = False
    stage2_extra = {"sampler": "instance", "epochs": 1, "mixup_alpha": 0.0}
    extra_keys = {}

    def parameters(self, model, cfg):
        return [p for p in model.head.parameters()]   # never stepped; SGD refuses an empty list


class TauNorm(_PostHoc):
    """tau-normalised stage-one classifier: w_c / ||w_c||^tau, bias dropped.

    tau is chosen on the stage-one data's VAL split (balanced accuracy; ties to the smaller
    tau) over tau_grid (0, 0.1, ..., 2.0), never on the test set; a stage-one run without a
    val split is refused. Exported: classifier_weight (stage one's W), tau, tau_grid and
    tau_val_acc (the val curve).
    """

    name = "tau_norm"
    changes = "post-hoc: logits x . w_c / ||w_c||^tau (no bias), tau chosen on val"
    extra_keys = {"tau_metric": (str, "balanced accuracy", "val metric that picks tau: balanced accuracy | top1")}

    def check(self, cfg):
        super().check(cfg)
        s1 = read_stage1_config(cfg.stage1_run)
        s1_recipe = METHODS.get(s1.get("method"))
        if s1_recipe is not None and s1_recipe.head != "linear":
            raise ConfigError(f"method 'tau_norm' rescales a linear classifier; stage-one run '{cfg.stage1_run}' "
                              f"(method '{s1['method']}') has a {s1_recipe.head} head")
        from types import SimpleNamespace

        s1_split = resolve_val_split(SimpleNamespace(**{"val_split": "auto", **s1}))
        has_val = (Path(cfg.stage1_run) / "predictions" / "val.npz").is_file() \
            or s1_split in ("unused", "carve") or s1.get("dataset") == "demo"
        if not has_val:
            raise ConfigError(f"method 'tau_norm' chooses tau on a validation split, and stage-one run "
                              f"'{cfg.stage1_run}' has none: rerun stage one with a validation split "
                              f"(val_split auto or carve, val_per_class > 0)")
        if self.opt(cfg, "tau_metric") not in ("balanced accuracy", "top1"):
            raise ConfigError(f"extra key 'tau_metric' = {self.opt(cfg, 'tau_metric')!r}: allowed values are "
                              "balanced accuracy, top1")

    def finalize(self, model, cfg, data):
        fc = getattr(model.head, "fc", None)
        if not isinstance(fc, nn.Linear):
            raise ConfigError(f"method 'tau_norm' needs a linear stage-one classifier; run '{cfg.stage1_run}' "
                              f"has a {type(model.head).__name__}")
        W = fc.weight.detach().float().cpu().numpy()
        val = _features(self, model, cfg, data, "val")
        tau, grid, scores = choose_tau(val["features"], val["labels"], W, TAU_GRID, self.opt(cfg, "tau_metric"))
        device = fc.weight.device
        model.head = TauNormHead(W, tau, grid, scores).to(device)

    def export(self, model):
        h = model.head
        if not isinstance(h, TauNormHead):
            return super().export(model)
        return {"classifier_weight": h.weight.cpu().numpy(), "tau": np.asarray(h.tau),
                "tau_grid": h.grid, "tau_val_acc": h.val_score}


class NCM(_PostHoc):
    """Nearest class mean on stage-one features: centroids of the TRAIN split's unaugmented
    eval-mode features, feature map ncm_variant ('cl2n' default: centre by the mean training
    feature, then L2-normalise; centroids not re-normalised); logits = -squared distance.
    Exported: ncm_centroids, ncm_mean."""

    name = "ncm"
    changes = "post-hoc: nearest class mean of train features (cl2n), logits -||x - mu_c||^2"
    extra_keys = {"ncm_variant": (str, "cl2n", "feature map: un | l2n | cl2n")}

    def check(self, cfg):
        super().check(cfg)
        if self.opt(cfg, "ncm_variant") not in NCM_VARIANTS:
            raise ConfigError(f"extra key 'ncm_variant' = {self.opt(cfg, 'ncm_variant')!r}: allowed values are "
                              f"{', '.join(NCM_VARIANTS)}")

    def finalize(self, model, cfg, data):
        variant = self.opt(cfg, "ncm_variant")
        train = _features(self, model, cfg, data, "train")
        centroids, mean = ncm_centroids(train["features"], train["labels"], data.num_classes, variant)
        device = next(model.parameters()).device
        model.head = NCMHead(centroids, mean, variant).to(device)

    def export(self, model):
        h = model.head
        if not isinstance(h, NCMHead):
            return super().export(model)
        return {"ncm_centroids": h.centroids.cpu().numpy(), "ncm_mean": h.mean.cpu().numpy()}


for _recipe in (CRT(), LWS(), TauNorm(), NCM()):
    register(_recipe)
