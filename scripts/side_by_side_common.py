"""What the side-by-side scripts share: a list of batches as one epoch's loader, the mixup draws
ltlab's loop makes for them (so the original's code can be handed the same lambda and permutation),
and two SGD steps of ltlab's loop against a plain loop on the original's loss."""
import torch

from ltlab.training import loop as L
from ltlab.training.schedule import lr_at


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


def two_sgd_steps(ours, theirs, their_loss, batches, cfg, recipe, loss_o, momentum=None, weight_decay=None):
    """Step ``ours`` through ltlab's loop and ``theirs`` through a plain SGD loop on
    ``their_loss(logits, y)``, both at the lr of epoch 1; the original's momentum and weight decay
    are the config's unless given. For losses with no state of their own. Returns (ltlab's mean
    loss, the original's mean loss, (tensor name, max |diff|) of the largest weight difference)."""
    opt_o = torch.optim.SGD(recipe.parameters(ours, cfg), lr=cfg.lr, momentum=cfg.momentum,
                            weight_decay=cfg.weight_decay, nesterov=cfg.nesterov)
    L.set_lr(opt_o, lr_at(cfg, 1))
    mean_o, _ = L.train_one_epoch(ours, Once(batches), loss_o, opt_o, recipe, epoch=1, seed=cfg.seed)
    opt_t = torch.optim.SGD(theirs.parameters(), lr=lr_at(cfg, 1),
                            momentum=cfg.momentum if momentum is None else momentum,
                            weight_decay=cfg.weight_decay if weight_decay is None else weight_decay)
    theirs.train()
    losses_t = []
    for xb, yb in batches:
        loss = their_loss(theirs(xb)["logits"], yb)
        opt_t.zero_grad()
        loss.backward()
        opt_t.step()
        losses_t.append(loss.item())
    after = theirs.state_dict()
    worst = max(((k, (v - after[k]).abs().max().item()) for k, v in ours.state_dict().items()
                 if v.dtype.is_floating_point), key=lambda d: d[1])
    return mean_o, sum(losses_t) / len(losses_t), worst
