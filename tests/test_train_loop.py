"""The training loop's promises, on a linear model and hand-made batches (no dataset, seconds):
the loss's epoch hook (DRW), each baseline's loss and inference wiring, mixup, gradient clipping."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ltlab.methods import METHODS
from ltlab.methods.losses import cb_weights
from ltlab.methods.resolve import from_dict
from ltlab.training.loop import epoch_rng, train_one_epoch

COUNTS = np.array([100, 10, 1])


class Data:
    num_classes, train_counts = 3, COUNTS


class Linear(nn.Module):
    def __init__(self, scale=1.0):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.fc = nn.Linear(4, 3)
        with torch.no_grad():
            self.fc.weight.copy_(torch.randn(3, 4, generator=g) * scale)
            self.fc.bias.zero_()

    def forward(self, x):
        return {"logits": self.fc(x)}


class Batches(list):
    """A loader: fixed (x, y) batches, set_epoch recorded."""

    epochs = ()

    def set_epoch(self, epoch):
        self.epochs = (*self.epochs, epoch)


def _batch(n=12, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 4, generator=g), torch.arange(n) % 3


def _epoch(model, loss_fn, recipe="ce", epoch=1, lr=0.0, mixup_alpha=0.0, batches=None):
    batches = batches or Batches([_batch()])
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    loss, bad = train_one_epoch(model, batches, loss_fn, opt, METHODS[recipe], epoch=epoch, seed=0,
                                mixup_alpha=mixup_alpha)
    assert bad == -1
    return loss, batches


def test_loop_sets_the_epoch_so_drw_reweights_after_drw_epoch():
    cfg = from_dict({"method": "ldam_drw", "extra": {"drw_epoch": 2, "drw_beta": 0.9999}})
    loss_fn = METHODS["ldam_drw"].build_loss(cfg, Data)
    model = Linear()
    x, y = _batch()
    z = model(x)["logits"].detach()
    plain = F.cross_entropy(loss_fn.margin_logits(z, y), y).item()
    weighted = F.cross_entropy(loss_fn.margin_logits(z, y), y, weight=cb_weights(COUNTS, 0.9999)).item()
    assert abs(plain - weighted) > 0.1
    for epoch, expect in ((1, plain), (2, plain), (3, weighted)):
        loss, batches = _epoch(model, loss_fn, "ldam_drw", epoch=epoch)
        assert loss == pytest.approx(expect, rel=1e-5), epoch
        assert loss_fn.epoch == epoch and batches.epochs == (epoch,)


@pytest.mark.parametrize("method, extra, expected", [
    ("cb", {"cb_beta": 0.99},
     lambda z, y: F.cross_entropy(z, y, weight=torch.tensor(_hand_cb(0.99)))),
    ("cb", {"cb_beta": 0.99, "cb_loss": "focal", "focal_gamma": 2.0},
     lambda z, y: _hand_focal(z, y, 2.0, torch.tensor(_hand_cb(0.99)))),
    ("focal", {"focal_gamma": 0.5}, lambda z, y: _hand_focal(z, y, 0.5, None)),
    ("logit_adjust", {"la_tau": 0.5}, lambda z, y: F.cross_entropy(z + 0.5 * _log_pi(), y)),
    ("balanced_softmax", {}, lambda z, y: F.cross_entropy(z + _log_pi(), y)),
])
def test_baseline_loss_wiring(method, extra, expected):
    """Each recipe's loss is the paper's formula with its extra keys, computed by hand here."""
    loss_fn = METHODS[method].build_loss(from_dict({"method": method, "extra": extra}), Data)
    z = torch.randn(30, 3, generator=torch.Generator().manual_seed(2)) * 3
    y = torch.arange(30) % 3
    assert loss_fn({"logits": z}, y).item() == pytest.approx(expected(z, y).item(), rel=1e-5)


@pytest.mark.parametrize("method", ["logit_adjust", "balanced_softmax"])
def test_logit_adjusted_methods_predict_with_z(method):
    z = torch.randn(5, 3)
    assert torch.equal(METHODS[method].inference({"logits": z}), z)


def _log_pi():
    return torch.log(torch.tensor(COUNTS / COUNTS.sum(), dtype=torch.float32))


def _hand_cb(beta):
    w = np.array([(1 - beta) / (1 - beta ** n) for n in COUNTS])
    return (w / w.sum() * 3).astype(np.float32)


def _hand_focal(z, y, gamma, w):
    p = F.softmax(z, 1)[torch.arange(len(y)), y]
    per = (1 - p) ** gamma * -torch.log(p)
    ww = torch.ones_like(per) if w is None else w[y]
    return (ww * per).sum() / ww.sum()


def test_mixup_mixes_images_and_targets_with_the_epoch_rng():
    """loss = lam CE(f(lam x + (1 - lam) x[perm]), y) + (1 - lam) CE(., y[perm]), lam ~ Beta(a, a)
    and perm drawn from epoch_rng(seed, epoch) (Zhang et al., ICLR 2018)."""
    model, loss_fn = Linear(), METHODS["ce"].build_loss(from_dict({}), Data)
    x, y = _batch()
    rng = epoch_rng(0, 3)
    lam = float(rng.beta(0.8, 0.8))
    perm = torch.from_numpy(rng.permutation(len(y)))
    with torch.no_grad():
        out = model(lam * x + (1 - lam) * x[perm])
        expect = lam * F.cross_entropy(out["logits"], y) + (1 - lam) * F.cross_entropy(out["logits"], y[perm])
        plain = F.cross_entropy(model(x)["logits"], y)
    assert 0.05 < lam < 0.95 and abs(expect.item() - plain.item()) > 1e-3
    loss, _ = _epoch(model, loss_fn, epoch=3, mixup_alpha=0.8, batches=Batches([(x, y)]))
    assert loss == pytest.approx(expect.item(), rel=1e-5)
    loss, _ = _epoch(model, loss_fn, epoch=3, mixup_alpha=0.0, batches=Batches([(x, y)]))
    assert loss == pytest.approx(plain.item(), rel=1e-5)


def test_recipes_that_train_with_mixup():
    assert from_dict({"method": "balpoe", "dataset": "cifar100_lt"}).mixup_alpha == 0.4
    from ltlab.methods.mislas import stage1_config

    assert from_dict(stage1_config(from_dict({"method": "mislas"}))).mixup_alpha == 1.0


def test_the_loop_clips_through_the_recipe_once_per_step(monkeypatch):
    """EnMos clips at max-norm 5, per network (tests/test_enmos.py checks backbone and head apart);
    here: the training loop hands every step's gradients to the recipe's clipping, before the step."""
    assert METHODS["enmos"].clip_grad_norm == 5.0
    loss_fn = METHODS["ce"].build_loss(from_dict({}), Data)
    calls = []

    def clip(model):
        calls.append(torch.sqrt(sum((p.grad ** 2).sum() for p in model.parameters())).item())
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
    monkeypatch.setattr(METHODS["enmos"], "clip_gradients", clip)
    model = Linear()
    before = [p.detach().clone() for p in model.parameters()]
    x, y = _batch()
    _epoch(model, loss_fn, "enmos", lr=1.0, batches=Batches([(100 * x, y)]))   # large inputs, large gradient
    moved = torch.sqrt(sum(((p.detach() - b) ** 2).sum() for p, b in zip(model.parameters(), before)))
    assert len(calls) == 1 and calls[0] > 10 and moved.item() == pytest.approx(5.0, rel=1e-4)

