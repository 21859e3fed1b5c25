"""Losses and loss-level baselines: hand cases from the formulas, then 1-epoch demo runs."""
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import demo_config, small_demo

import ltlab
from ltlab.config import ConfigError
from ltlab.evaluation import posthoc
from ltlab.methods.losses import (
    LOSSES,
    CrossEntropy,
    FocalLoss,
    LDAMLoss,
    LogitAdjustedCE,
    WeightedCE,
    cb_weights,
    ldam_margins,
)
from ltlab.methods.resolve import from_dict
from ltlab.models import CosineHead

COUNTS = [100, 10, 1]


def _batch(seed=0, n=16, c=3, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, generator=g) * scale, torch.randint(0, c, (n,), generator=g)


# ------------------------------------------------------------------ class-balanced weights
def test_cb_weights_hand_case():
    beta = 0.9
    raw = np.array([(1 - beta) / (1 - beta ** 100), (1 - beta) / (1 - beta ** 10), 1.0])
    # beta^100 ~ 2.7e-5, beta^10 = 0.3487: raw ~ [0.1, 0.15353, 1]
    assert raw == pytest.approx([0.1000027, 0.1535339, 1.0], rel=1e-5)
    w = cb_weights(COUNTS, beta).numpy()
    assert w == pytest.approx(raw / raw.sum() * 3, rel=1e-6)
    assert w.sum() == pytest.approx(3.0)


@pytest.mark.parametrize("beta", [0.0, 0.9, 0.99, 0.999, 0.9999])
def test_cb_weights_sum_to_num_classes(beta):
    counts = [500, 299, 179, 107, 64, 38, 23, 13, 8, 5]
    w = cb_weights(counts, beta).numpy()
    assert w.sum() == pytest.approx(10.0, rel=1e-6)
    assert np.all(np.diff(w) >= 0)                 # rarer classes weigh more


def test_cb_weights_limits_and_errors():
    assert cb_weights(COUNTS, 0.0).numpy() == pytest.approx([1, 1, 1])
    # beta -> 1: effective number -> n, weights -> ∝ 1/n
    w = cb_weights([1000, 100, 10], 1 - 1e-9).numpy()
    assert w / w[-1] == pytest.approx([0.01, 0.1, 1.0], rel=1e-3)
    # an empty class gets 0, the others still sum to C
    w = cb_weights([10, 0, 1], 0.9).numpy()
    assert w[1] == 0 and w.sum() == pytest.approx(3.0)
    with pytest.raises(ValueError, match="beta"):
        cb_weights(COUNTS, 1.0)


def test_weighted_ce_is_sum_w_l_over_sum_w():
    z, y = _batch()
    w = torch.tensor([0.2, 1.0, 3.0])
    per = F.cross_entropy(z, y, reduction="none")
    expect = (w[y] * per).sum() / w[y].sum()
    assert WeightedCE(w)({"logits": z}, y).item() == pytest.approx(expect.item(), rel=1e-6)
    assert WeightedCE()({"logits": z}, y).item() == pytest.approx(F.cross_entropy(z, y).item(), rel=1e-6)


# ------------------------------------------------------------------------------ focal
def test_focal_gamma_zero_is_ce():
    z, y = _batch()
    assert FocalLoss(0.0)({"logits": z}, y).item() == pytest.approx(F.cross_entropy(z, y).item(), rel=1e-6)
    w = cb_weights(COUNTS, 0.99)
    # weighted: the batch mean of w_y CE (Cui et al.'s and LDAM-DRW's focal reduction), not WeightedCE's
    want = (w[y] * F.cross_entropy(z, y, reduction="none")).mean().item()
    assert FocalLoss(0.0, weight=w)({"logits": z}, y).item() == pytest.approx(want, rel=1e-6)
    assert want != pytest.approx(WeightedCE(w)({"logits": z}, y).item(), rel=1e-3)


def test_focal_hand_case():
    # two classes, logits (0, log 3): p = (1/4, 3/4)
    z = torch.tensor([[0.0, math.log(3.0)], [0.0, math.log(3.0)]])
    y = torch.tensor([0, 1])
    l0 = (1 - 0.25) ** 2 * -math.log(0.25)
    l1 = (1 - 0.75) ** 2 * -math.log(0.75)
    assert FocalLoss(2.0)({"logits": z}, y).item() == pytest.approx((l0 + l1) / 2, rel=1e-6)
    w = torch.tensor([3.0, 1.0])
    assert FocalLoss(2.0, weight=w)({"logits": z}, y).item() == pytest.approx((3 * l0 + l1) / 2, rel=1e-6)


def test_focal_gradient_finite_when_confident():
    z = torch.tensor([[60.0, 0.0]], requires_grad=True)
    FocalLoss(0.5)({"logits": z}, torch.tensor([0])).backward()
    assert torch.isfinite(z.grad).all()


# ------------------------------------------------------------------------------ LDAM
def test_ldam_margins_hand_case():
    # m_c = 0.5 * (n_c / n_min)^(-1/4): 0.5 * 100^-0.25, 0.5 * 10^-0.25, 0.5
    m = ldam_margins(COUNTS, 0.5).numpy()
    assert m == pytest.approx([0.5 / math.sqrt(10.0), 0.5 / 10 ** 0.25, 0.5], rel=1e-6)
    assert m == pytest.approx([0.1581139, 0.2811707, 0.5], rel=1e-6)
    assert ldam_margins([16, 1], 1.0).numpy() == pytest.approx([0.5, 1.0])


def test_ldam_subtracts_margin_from_cosine_then_scales():
    torch.manual_seed(0)
    head = CosineHead(8, 3, scale=30.0)
    f = torch.randn(12, 8)
    y = torch.tensor([0, 1, 2] * 4)
    cos = F.normalize(f, dim=1) @ F.normalize(head.weight, dim=0)
    m = torch.tensor([0.5 * 100 ** -0.25, 0.5 * 10 ** -0.25, 0.5])
    formula = F.cross_entropy(30.0 * (cos - m[y][:, None] * F.one_hot(y, 3)), y)
    loss = LDAMLoss(COUNTS, max_m=0.5, s=30.0)
    assert loss(head(f), y).item() == pytest.approx(formula.item(), rel=1e-5)
    # only the true-class logit moves, by exactly s * m_y
    z = head(f)["logits"]
    diff = z - loss.margin_logits(z, y)
    assert torch.allclose(diff, 30.0 * m[y][:, None] * F.one_hot(y, 3), atol=1e-5)


def test_drw_switches_on_after_drw_epoch():
    z, y = _batch(c=3)
    loss = LDAMLoss(COUNTS, drw_epoch=160, drw_beta=0.9999)
    plain = F.cross_entropy(loss.margin_logits(z, y), y).item()
    # hand weights: (1-b)/(1-b^n) for n = 100, 10, 1, normalised to sum 3
    raw = np.array([1e-4 / (1 - 0.9999 ** 100), 1e-4 / (1 - 0.9999 ** 10), 1.0])
    w = raw / raw.sum() * 3
    assert w == pytest.approx([0.027159, 0.270367, 2.702474], rel=1e-4)
    weighted = F.cross_entropy(loss.margin_logits(z, y), y, weight=torch.tensor(w, dtype=torch.float32)).item()
    for epoch, expect, on in ((1, plain, False), (160, plain, False), (161, weighted, True), (200, weighted, True)):
        loss.set_epoch(epoch)
        assert loss.reweighting is on
        assert loss({"logits": z}, y).item() == pytest.approx(expect, rel=1e-5)


def test_losses_registry_kept():
    assert LOSSES["ce"] is CrossEntropy and LOSSES["logit_adjust"] is LogitAdjustedCE
    assert LOSSES["focal"] is FocalLoss and LOSSES["weighted_ce"] is WeightedCE


# ------------------------------------------------------------------------------ recipes
def test_baseline_defaults_are_the_ldam_drw_recipe():
    for method in ("focal", "cb", "ldam_drw"):
        cfg = from_dict({"method": method, "dataset": "cifar10_lt"})    # the demo set has its own short defaults
        assert (cfg.epochs, cfg.batch_size, cfg.lr, cfg.weight_decay, cfg.warmup_epochs, cfg.milestones,
                cfg.lr_gamma, cfg.sampler) == (200, 128, 0.1, 2e-4, 5, [160, 180], 0.01, "instance")
    from ltlab.methods import METHODS
    assert METHODS["focal"].opt(from_dict({"method": "focal", "dataset": "cifar10_lt"}), "focal_gamma") == 1.0
    cfg = from_dict({"method": "ldam_drw", "dataset": "cifar10_lt"})
    r = METHODS["ldam_drw"]
    assert (r.head, r.opt(cfg, "ldam_max_m"), r.opt(cfg, "ldam_s"), r.opt(cfg, "drw_epoch"),
            r.opt(cfg, "drw_beta")) == ("cosine", 0.5, 30.0, 160, 0.9999)
    assert (METHODS["cb"].opt(cfg, "cb_beta"), METHODS["cb"].opt(cfg, "cb_loss")) == (0.9999, "softmax")


@pytest.mark.parametrize("d, needle", [
    ({"method": "cb", "extra": {"cb_loss": "sigmoid"}}, "'cb_loss' = 'sigmoid'"),
    ({"method": "cb", "extra": {"cb_beta": 1.0}}, "'cb_beta' = 1.0"),
    ({"method": "focal", "extra": {"focal_gamma": -1}}, "'focal_gamma' = -1"),
    ({"method": "ldam_drw", "extra": {"ldam_s": 0}}, "'ldam_s' = 0"),
    ({"method": "ldam_drw", "extra": {"drw_beta": "x"}}, "expected float"),
])
def test_baseline_bad_extra(d, needle):
    with pytest.raises(ConfigError, match=needle):
        from_dict(d)


def test_ldam_head_uses_the_loss_scale():
    from ltlab.methods import METHODS

    class D:
        num_classes, train_counts = 3, np.array(COUNTS)

    cfg = from_dict({"method": "ldam_drw", "extra": {"ldam_s": 16}})
    model = METHODS["ldam_drw"].build_model(cfg, D)
    loss = METHODS["ldam_drw"].build_loss(cfg, D)
    assert isinstance(model.head, CosineHead) and model.head.scale == 16 and loss.s == 16


@pytest.mark.parametrize("method, extra", [
    ("focal", {}),
    ("cb", {"cb_loss": "focal", "cb_beta": 0.999}),
    ("ldam_drw", {"drw_epoch": 0}),          # DRW on from epoch 1, so the weighted path runs
])
def test_baseline_demo_run(tmp_path, monkeypatch, method, extra):
    small_demo(monkeypatch, train_every=4, test_cap=20)
    run_dir = ltlab.fit(demo_config(tmp_path / method, method=method, epochs=1, extra=extra))
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["method"] == method and summary["epochs"] == 1 and summary["train_size"] == 312
    assert math.isfinite(summary["top1"])


# ------------------------------------------------------------------------- post-hoc LA
def test_posthoc_logit_adjustment_on_a_demo_run(demo_run):
    test = ltlab.load_run(demo_run).predictions("test")
    logits, _labels, counts = test["logits"], test["labels"], test["train_counts"]
    assert np.array_equal(posthoc.logit_adjust(logits, counts, tau=0.0), logits.astype(np.float64))
    # a 2-epoch model is near chance, so accuracy need not move; its predictions must move to the tail
    rare = np.argsort(counts)[:5]
    before = np.isin(logits.argmax(1), rare).mean()
    after = np.isin(posthoc.logit_adjust(logits, counts, tau=1.0).argmax(1), rare).mean()
    assert after > before
