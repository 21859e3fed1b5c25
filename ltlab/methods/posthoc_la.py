"""Post-hoc logit adjustment of a finished run (Menon et al., Long-tail learning via logit
adjustment, ICLR 2021, sec. 4): predict with argmax_y z_y - tau * log pi_y, pi the training prior.

Menon et al. use tau = 1 (the Bayes-optimal correction for a calibrated softmax) and also tune
tau on held-out data. ltlab chooses tau on the run's VAL split by balanced accuracy over
0, 0.1, ..., 2 (ties to the smaller tau, the smaller change), never on the test set;
``la_tau_from: fixed`` uses ``la_tau`` as given. No epochs run: the stage-one model is wrapped.
Exported beside the predictions: la_tau, la_tau_grid, la_tau_val_acc (the val curve), log_prior.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from ltlab.config import ConfigError
from ltlab.evaluation import posthoc
from ltlab.evaluation.metrics import balanced_accuracy
from ltlab.methods.base import METHODS, Recipe, register
from ltlab.methods.decoupling import _features, _PostHoc
from ltlab.methods.stage2 import read_stage1_config

LA_TAU_GRID = np.round(np.arange(0.0, 2.0001, 0.1), 10)
LA_TAU_FROM = ("val", "fixed")


def choose_la_tau(val_logits, val_labels, train_counts, grid=LA_TAU_GRID):
    """(tau, grid, balanced accuracies): the grid value whose adjusted val predictions
    (ltlab.evaluation.posthoc.logit_adjust) have the best balanced accuracy; ties go to the smallest tau.
    Only val data is passed in."""
    y = np.asarray(val_labels, dtype=np.int64)
    grid = np.asarray(grid, dtype=np.float64)
    c = np.asarray(val_logits).shape[1]
    scores = np.array([balanced_accuracy(posthoc.logit_adjust(val_logits, train_counts, t).argmax(1), y, c)
                       for t in grid])
    return float(grid[int(np.argmax(scores))]), grid, scores


class AdjustedHead(nn.Module):
    """logits = inner(f)['logits'] - tau * log pi (fp32)."""

    def __init__(self, inner: nn.Module, log_prior: np.ndarray, tau: float, grid=None, val_score=None):
        super().__init__()
        self.inner = inner
        self.register_buffer("log_prior", torch.as_tensor(np.asarray(log_prior), dtype=torch.float32))
        self.tau = float(tau)
        self.grid = grid
        self.val_score = val_score

    def forward(self, f):
        out = dict(self.inner(f))
        out["logits"] = out["logits"].float() - self.tau * self.log_prior
        return out


class PosthocLogitAdjust(_PostHoc):
    name = "la_posthoc"
    paper = "Menon et al., Long-tail learning via logit adjustment, ICLR 2021"
    changes = "post-hoc: predict argmax z - tau log pi on a finished run, tau chosen on val"
    extra_keys = {"la_tau": (float, 1.0, "tau when la_tau_from is 'fixed'"),
                  "la_tau_from": (str, "val", "val: tau of 0, 0.1, ..., 2 with the best val balanced accuracy; "
                                              "fixed: la_tau")}

    def check(self, cfg):
        super().check(cfg)
        if self.opt(cfg, "la_tau_from") not in LA_TAU_FROM:
            raise ConfigError(f"extra key 'la_tau_from' = {self.opt(cfg, 'la_tau_from')!r}: allowed values are "
                              f"{', '.join(LA_TAU_FROM)}")
        s1 = read_stage1_config(cfg.stage1_run)
        s1_recipe = METHODS.get(s1.get("method"))
        if s1_recipe is not None and (type(s1_recipe).inference is not Recipe.inference
                                      or not s1_recipe.trains or s1_recipe.needs_stage1):
            raise ConfigError(f"method 'la_posthoc' adjusts the logits of a one-stage run predicting with its head's "
                              f"logits; stage-one run '{cfg.stage1_run}' is method '{s1['method']}'")

    def finalize(self, model, cfg, data):
        log_prior = -posthoc.logit_adjust(np.zeros((1, data.num_classes)), data.train_counts, 1.0)[0]
        grid = scores = None
        if self.opt(cfg, "la_tau_from") == "val":
            if data.val_x is None:
                raise ConfigError(f"method 'la_posthoc' chooses tau on a validation split and stage-one run "
                                  f"'{cfg.stage1_run}' has none: use extra.la_tau_from=fixed or a run with val")
            val = _features(self, model, cfg, data, "val")
            tau, grid, scores = choose_la_tau(val["logits"], val["labels"], data.train_counts)
        else:
            tau = float(self.opt(cfg, "la_tau"))
        device = next(model.parameters()).device
        model.head = AdjustedHead(model.head, log_prior, tau, grid, scores).to(device)

    def export(self, model):
        h = model.head
        out = {"la_tau": np.asarray(h.tau), "log_prior": h.log_prior.cpu().numpy()}
        if h.grid is not None:
            out.update({"la_tau_grid": h.grid, "la_tau_val_acc": h.val_score})
        fc = getattr(h.inner, "fc", None)
        if isinstance(fc, nn.Linear):
            out["classifier_weight"] = fc.weight.detach().float().cpu().numpy()
            if fc.bias is not None:
                out["classifier_bias"] = fc.bias.detach().float().cpu().numpy()
        return out


register(PosthocLogitAdjust())
