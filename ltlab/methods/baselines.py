"""Loss-level baselines of the LDAM-DRW CIFAR-LT lineage: focal, class-balanced, LDAM-DRW.

All three train a ResNet-32 end to end with instance-balanced sampling and only change the
loss (and, for LDAM-DRW, the head). Their defaults are the LDAM-DRW CIFAR recipe (Cao et al.,
NeurIPS 2019, cifar_train.py): 200 epochs, batch 128, SGD 0.9, lr 0.1 with 5 warm-up epochs,
x0.01 after epoch 160 and again after 180, weight decay 2e-4. `balanced_softmax` and
`logit_adjust` live in logit_adjust.py; post-hoc logit adjustment is ltlab.evaluation.posthoc.logit_adjust
applied to any run's saved logits.
"""
from __future__ import annotations

from ltlab.config import ConfigError
from ltlab.methods.base import Recipe, register
from ltlab.methods.losses import FocalLoss, LDAMLoss, WeightedCE, cb_weights
from ltlab.models import build_model

LDAM_DRW_RECIPE = {"epochs": 200, "batch_size": 128, "lr": 0.1, "momentum": 0.9, "nesterov": False,
                   "weight_decay": 2e-4, "schedule": "multistep", "warmup_epochs": 5,
                   "milestones": [160, 180], "lr_gamma": 0.01, "sampler": "instance"}
CB_LOSSES = ("softmax", "focal")


def _require(ok: bool, key: str, value, rule: str) -> None:
    if not ok:
        raise ConfigError(f"extra key '{key}' = {value!r}: {rule}")


class _LDAMLineage(Recipe):
    def defaults(self, user):
        return dict(LDAM_DRW_RECIPE)


class Focal(_LDAMLineage):
    """Softmax focal loss (Lin et al., ICCV 2017), unweighted.

    gamma defaults to 1, the value of the LDAM-DRW code's CIFAR-LT focal baseline (Lin et al.
    use 2 with an alpha term for detection; methods.md gives no CIFAR value).
    """

    name = "focal"
    paper = "Lin et al., Focal Loss for Dense Object Detection, ICCV 2017"
    changes = "loss: (1 - p_y)^gamma * CE"
    extra_keys = {"focal_gamma": (float, 1.0, "focusing parameter gamma (0 = CE)")}

    def check(self, cfg):
        super().check(cfg)
        g = self.opt(cfg, "focal_gamma")
        _require(g >= 0, "focal_gamma", g, "must be >= 0")

    def build_loss(self, cfg, data):
        return FocalLoss(gamma=self.opt(cfg, "focal_gamma"))


class ClassBalanced(_LDAMLineage):
    """Class-balanced loss (Cui et al., CVPR 2019): per-class weights from the effective number,
    w_c = (1 - beta) / (1 - beta^n_c) normalised to sum C, applied from the first epoch.

    cb_loss = 'softmax' (default): weighted softmax CE. cb_loss = 'focal': the weighted softmax
    focal loss with focal_gamma. Choice: Cui et al.'s focal variant is sigmoid-based (one-vs-all
    over classes); we use the softmax form, as the LDAM-DRW code does for its CB/focal baselines,
    so that every method here shares one softmax head and inference rule. Batch reduction, as in
    the LDAM-DRW code: softmax, sum w_y l / sum w_y (torch's weighted CE); focal, sum w_y l / batch
    size (its FocalLoss's mean, also Cui et al.'s division). The published 74.6 on CIFAR-10-LT IF 100
    (Cui et al. Table 2, LDAM-DRW's "CB Focal") is the focal variant, beta 0.9999, gamma 1.
    """

    name = "cb"
    paper = "Cui et al., Class-Balanced Loss Based on Effective Number of Samples, CVPR 2019"
    changes = "loss: per-class weights (1-beta)/(1-beta^n_c) on softmax CE or focal"
    extra_keys = {"cb_beta": (float, 0.9999, "beta of the effective number (0 = unweighted)"),
                  "cb_loss": (str, "softmax", "softmax (weighted CE) | focal (weighted softmax focal)"),
                  "focal_gamma": (float, 1.0, "gamma when cb_loss = focal")}

    def check(self, cfg):
        super().check(cfg)
        beta, kind, g = (self.opt(cfg, k) for k in ("cb_beta", "cb_loss", "focal_gamma"))
        _require(0 <= beta < 1, "cb_beta", beta, "must be in [0, 1)")
        _require(kind in CB_LOSSES, "cb_loss", kind, f"allowed values are {', '.join(CB_LOSSES)}")
        _require(g >= 0, "focal_gamma", g, "must be >= 0")

    def build_loss(self, cfg, data):
        w = cb_weights(data.train_counts, self.opt(cfg, "cb_beta"))
        if self.opt(cfg, "cb_loss") == "focal":
            return FocalLoss(gamma=self.opt(cfg, "focal_gamma"), weight=w)
        return WeightedCE(w)


class LDAMDRW(_LDAMLineage):
    """LDAM loss with deferred re-weighting (Cao et al., NeurIPS 2019) on a cosine classifier.

    Head: cosine (LDAM's NormedLinear, no bias) with scale ldam_s, which the head applies; the
    loss subtracts ldam_s * m_y from the true-class logit, i.e. m_y from the cosine (see
    ltlab.methods.losses.LDAMLoss). Margins m_c ∝ n_c^(-1/4), largest ldam_max_m. DRW: class-balanced
    weights with drw_beta switched on for epochs e > drw_epoch (1-based), which matches the
    LDAM-DRW code's `epoch // 160` on 0-based epochs (its 161st epoch). drw_epoch >= epochs
    disables the re-weighting (plain LDAM).
    """

    name = "ldam_drw"
    paper = "Cao et al., Learning Imbalanced Datasets with Label-Distribution-Aware Margin Loss, NeurIPS 2019"
    changes = "head: cosine x s; loss: CE with margin m_y ∝ n_y^-1/4; DRW class weights after drw_epoch"
    head = "cosine"
    extra_keys = {"ldam_max_m": (float, 0.5, "largest margin (of the rarest class)"),
                  "ldam_s": (float, 30.0, "scale of the cosine logits"),
                  "drw_epoch": (int, 160, "re-weighting is on for epochs e > drw_epoch (1-based)"),
                  "drw_beta": (float, 0.9999, "beta of the DRW class-balanced weights")}
    epoch_extra_keys = ("drw_epoch",)

    def check(self, cfg):
        super().check(cfg)
        m, s, e, b = (self.opt(cfg, k) for k in ("ldam_max_m", "ldam_s", "drw_epoch", "drw_beta"))
        _require(m > 0, "ldam_max_m", m, "must be > 0")
        _require(s > 0, "ldam_s", s, "must be > 0")
        _require(e >= 0, "drw_epoch", e, "must be >= 0")
        _require(0 <= b < 1, "drw_beta", b, "must be in [0, 1)")

    def build_model(self, cfg, data):
        return build_model(cfg.model, data.num_classes, self.head, scale=self.opt(cfg, "ldam_s"))

    def build_loss(self, cfg, data):
        return LDAMLoss(data.train_counts, max_m=self.opt(cfg, "ldam_max_m"), s=self.opt(cfg, "ldam_s"),
                        drw_epoch=self.opt(cfg, "drw_epoch"), drw_beta=self.opt(cfg, "drw_beta"))


register(Focal())
register(ClassBalanced())
register(LDAMDRW())
