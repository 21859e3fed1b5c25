"""Balanced Softmax / logit-adjusted loss: train on z + tau log pi, predict with z."""
from ltlab.methods.base import Recipe, register
from ltlab.methods.losses import LogitAdjustedCE


class LogitAdjust(Recipe):
    name = "logit_adjust"
    paper = "Menon et al., Long-tail learning via logit adjustment, ICLR 2021"
    changes = "loss: CE(z + tau log pi); prediction argmax z"
    extra_keys = {"la_tau": (float, 1.0, "tau of the training-time adjustment")}

    def build_loss(self, cfg, data):
        return LogitAdjustedCE(data.train_counts, tau=self.opt(cfg, "la_tau"))


class BalancedSoftmax(LogitAdjust):
    """The logit-adjusted loss with tau fixed to 1 (Ren et al., NeurIPS 2020)."""

    name = "balanced_softmax"
    paper = "Ren et al., Balanced Meta-Softmax for Long-Tailed Visual Recognition, NeurIPS 2020"
    changes = "loss: CE(z + log pi) (logit adjustment with tau = 1)"
    extra_keys = {}

    def build_loss(self, cfg, data):
        return LogitAdjustedCE(data.train_counts, tau=1.0)


register(LogitAdjust())
register(BalancedSoftmax())
