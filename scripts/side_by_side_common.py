"""What the side-by-side scripts (side_by_side_mislas.py, side_by_side_balpoe.py) share: a list of
batches as one epoch's loader, and the mixup draws ltlab's loop makes for them, so the original's
code can be handed the same lambda and permutation."""
import torch

from ltlab.training import loop as L


class Once:
    """The batches as one epoch's loader."""
    def __init__(self, b):
        self.b = b

    def __iter__(self):
        return iter(self.b)

    def __len__(self):
        return len(self.b)

    def set_epoch(self, e):
        pass


def mixup_draws(cfg, batches, epoch: int = 1) -> list:
    """[(lambda, permutation)] per batch, as training.loop.train_one_epoch draws them for ``epoch``."""
    rng = L.epoch_rng(cfg.seed, epoch)
    out = []
    for x, _ in batches:
        lam = float(rng.beta(cfg.mixup_alpha, cfg.mixup_alpha))
        out.append((lam, torch.from_numpy(rng.permutation(x.shape[0]))))
    return out
