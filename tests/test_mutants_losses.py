"""Losses (methods.losses, methods.losses_multi): cases that `make mutants` showed untested.

Every expected value is computed here from the papers' formulas in float64 numpy (or by
torch's own cross-entropy), on plain Python-int class counts as a user config passes them.
"""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ltlab.methods.losses import (
    CrossEntropy,
    FocalLoss,
    LDAMLoss,
    LogitAdjustedCE,
    WeightedCE,
    cb_weights,
    ldam_margins,
    log_prior,
)
from ltlab.methods.losses_multi import (
    BalPoELoss,
    LabelAwareSmoothing,
    MixtureDebiasNLL,
    expert_taus,
    las_epsilons,
)

COUNTS = [100, 10, 1]


def _batch(seed=0, n=12, c=3, scale=2.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, generator=g) * scale, torch.randint(0, c, (n,), generator=g)


def _np_logsoftmax(z):
    z = np.asarray(z, dtype=np.float64)
    m = z.max(axis=-1, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(axis=-1, keepdims=True))


# ------------------------------------------------------------------------- losses.py

def test_plain_ce_is_torch_cross_entropy_of_the_logits():
    z, y = _batch()
    want = -_np_logsoftmax(z.double().numpy())[np.arange(len(y)), y.numpy()].mean()
    assert CrossEntropy()({"logits": z}, y).item() == pytest.approx(want, rel=1e-6)


def test_log_prior_of_int_counts():
    # counts (3, 1): prior (3/4, 1/4), computed in float64 then cast
    lp = log_prior([3, 1])
    assert lp.dtype == torch.float32
    np.testing.assert_allclose(lp.numpy(), np.log([0.75, 0.25]), rtol=1e-6)
    # a zero count stays finite: log(1e-12)
    assert log_prior([1, 0])[1].item() == pytest.approx(math.log(1e-12), rel=1e-6)


def test_logit_adjusted_ce_default_tau_is_one():
    z, y = _batch(1)
    want = F.cross_entropy(z + torch.log(torch.tensor([100.0, 10.0, 1.0]) / 111.0), y)
    assert LogitAdjustedCE(COUNTS)({"logits": z}, y).item() == pytest.approx(want.item(), rel=1e-5)


def test_cb_weights_hand_values_for_two_classes():
    # beta 0.5, n = (1, 2): raw (1 - b)/(1 - b^n) = 0.5/0.5 = 1 and 0.5/0.75 = 2/3;
    # normalised to sum 2: (1.2, 0.8)
    np.testing.assert_allclose(cb_weights([1, 2], 0.5).numpy(), [1.2, 0.8], rtol=1e-6)
    # beta 0.9, n = (1, 10): raw 1 and 0.1 / (1 - 0.9^10)
    r = 0.1 / (1 - 0.9 ** 10)
    np.testing.assert_allclose(cb_weights([1, 10], 0.9).numpy(), [2 / (1 + r), 2 * r / (1 + r)], rtol=1e-6)


def test_ldam_margins_default_max_and_int_counts():
    # n^-1/4 for (16, 1): (1/2, 1), scaled so the largest is max_m = 0.5 by default
    np.testing.assert_allclose(ldam_margins([16, 1]).numpy(), [0.25, 0.5], rtol=1e-6)
    np.testing.assert_allclose(ldam_margins([16, 1], max_m=2.0).numpy(), [1.0, 2.0], rtol=1e-6)
    # smallest count 16: n^-1/4 = (1/2, 1/3), the largest scaled to max_m
    np.testing.assert_allclose(ldam_margins([16, 81], max_m=1.0).numpy(), [1.0, 2 / 3], rtol=1e-6)
    np.testing.assert_allclose(LDAMLoss([16, 81], max_m=1.0).margins.numpy(), [1.0, 2 / 3], rtol=1e-6)
    with pytest.raises(ValueError, match="^LDAM margins need every class to have at least one training image$"):
        ldam_margins([16, 0])


def test_ldam_loss_defaults_hand_case():
    # defaults: max_m 0.5, s 30, drw_epoch 160, epoch 1 (no re-weighting)
    loss = LDAMLoss([16, 1])
    assert (loss.s, loss.drw_epoch, loss.epoch) == (30.0, 160, 1)
    z = torch.tensor([[2.0, 1.0], [0.5, 3.0]])
    y = torch.tensor([0, 1])
    m = np.array([0.25, 0.5])
    adj = z.double().numpy().copy()
    adj[[0, 1], [0, 1]] -= 30.0 * m
    want = -_np_logsoftmax(adj)[[0, 1], [0, 1]].mean()
    assert loss({"logits": z}, y).item() == pytest.approx(want, rel=1e-5)
    loss.set_epoch(160)
    assert not loss.reweighting
    loss.set_epoch(161)
    assert loss.reweighting


def test_weighted_ce_with_int_weights_is_the_weighted_mean():
    z, y = _batch(2)
    w = [3, 1, 2]                                    # ints, as a user might pass them
    per = -_np_logsoftmax(z.double().numpy())[np.arange(len(y)), y.numpy()]
    wy = np.asarray(w, dtype=np.float64)[y.numpy()]
    assert WeightedCE(w)({"logits": z}, y).item() == pytest.approx((wy * per).sum() / wy.sum(), rel=1e-5)


def test_focal_default_gamma_one_and_int_weights():
    z, y = _batch(3)
    logp = _np_logsoftmax(z.double().numpy())[np.arange(len(y)), y.numpy()]
    want = np.mean((1 - np.exp(logp)) * -logp)      # gamma = 1 (the LDAM-DRW baseline)
    assert FocalLoss()({"logits": z}, y).item() == pytest.approx(want, rel=1e-5)
    w = [1, 2, 3]
    wy = np.asarray(w, dtype=np.float64)[y.numpy()]
    got = FocalLoss(gamma=1.0, weight=w)({"logits": z}, y).item()
    assert got == pytest.approx((wy * (1 - np.exp(logp)) * -logp).sum() / len(wy), rel=1e-5)
    with pytest.raises(ValueError, match=r"focal gamma = -1: expected >= 0"):
        FocalLoss(gamma=-1)


def test_focal_gamma_one_differs_from_ce():
    # the gamma == 0 shortcut must not be taken at gamma = 1
    z, y = _batch(4)
    logp = _np_logsoftmax(z.double().numpy())[np.arange(len(y)), y.numpy()]
    got = FocalLoss(gamma=1.0)({"logits": z}, y).item()
    assert got == pytest.approx(np.mean((1 - np.exp(logp)) * -logp), rel=1e-5)
    assert got < np.mean(-logp) - 1e-3


# ------------------------------------------------------------------- losses_multi.py

def test_expert_taus_errors():
    with pytest.raises(ValueError, match="^experts = 0: need at least one$"):
        expert_taus(0)


def test_balpoe_with_int_taus_is_the_mean_of_logit_adjusted_ce():
    g = torch.Generator().manual_seed(5)
    z = torch.randn(2, 6, 3, generator=g)
    y = torch.randint(0, 3, (6,), generator=g)
    lp = np.log(np.asarray(COUNTS, dtype=np.float64) / sum(COUNTS))
    want = np.mean([-_np_logsoftmax(z[k].double().numpy() + t * lp)[np.arange(6), y.numpy()].mean()
                    for k, t in enumerate([0, 2])])
    loss = BalPoELoss(COUNTS, [0, 2])                  # int taus
    assert loss.taus.dtype == torch.float32
    assert loss({"expert_logits": z}, y).item() == pytest.approx(want, rel=1e-5)


def test_las_epsilons_int_counts_equal_counts_and_convex():
    # equal counts: every class is the head (r = 1)
    eq = las_epsilons([5, 5], 0.3, 0.1)
    assert eq.shape == (2,)
    np.testing.assert_allclose(eq, [0.3, 0.3])
    # convex at r = 1/2: eps_1 + (eps_1 - eps_K) sin(3pi/2 + pi/4) = 0.3 - 0.2 sin(pi/4)
    eps = las_epsilons([3, 2, 1], 0.3, 0.1, "convex")
    np.testing.assert_allclose(eps, [0.3, 0.3 - 0.2 * math.sin(math.pi / 4), 0.1], atol=1e-12)
    # int counts: r = (n - nk) / (n1 - nk) must not be integer-divided
    np.testing.assert_allclose(las_epsilons([3, 2, 1], 0.3, 0.1, "linear"), [0.3, 0.2, 0.1], atol=1e-12)
    np.testing.assert_allclose(las_epsilons([3, 2, 1], 0.3, 0.1, "exp", power=2), [0.3, 0.15, 0.1],
                               atol=1e-12)
    with pytest.raises(ValueError, match="^LAS shape 'exp' needs a power$"):
        las_epsilons([3, 1], 0.3, 0.1, "exp")
    with pytest.raises(ValueError, match="LAS shape 'cubic': expected concave, linear, convex or exp"):
        las_epsilons([3, 1], 0.3, 0.1, "cubic")


def test_label_aware_smoothing_hand_case_and_power():
    z = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 4.0]])     # rows with different mean log-probabilities
    y = torch.tensor([0, 2])
    eps = las_epsilons([3, 2, 1], 0.3, 0.1, "linear")          # (0.3, 0.2, 0.1)
    ls = _np_logsoftmax(z.double().numpy())
    want = np.mean([(1 - eps[c]) * -ls[i, c] + eps[c] * -ls[i].mean() for i, c in enumerate([0, 2])])
    got = LabelAwareSmoothing([3, 2, 1], 0.3, 0.1, "linear")({"logits": z}, y).item()
    assert got == pytest.approx(want, rel=1e-6)
    # the power reaches las_epsilons
    lasp = LabelAwareSmoothing([3, 2, 1], 0.3, 0.1, "exp", power=2)
    np.testing.assert_allclose(lasp.eps.numpy(), [0.3, 0.15, 0.1], rtol=1e-6)


def test_mixture_debias_nll_int_counts_hand_case():
    # two components, three samples; prior pi = (3, 1) / 4, bias log(C pi) = log(1.5), log(0.5)
    z = torch.tensor([[[1.0, 0.0], [0.0, 2.0], [0.5, 0.5]],
                      [[0.0, 1.0], [1.0, 1.0], [2.0, -1.0]]])       # (K=2, N=3, C=2)
    gate = torch.tensor([[0.25, 0.75], [0.5, 0.5], [1.0, 0.0]])    # (N, K)
    y = torch.tensor([1, 0, 1])
    bias = np.log([1.5, 0.5])
    p = np.exp(_np_logsoftmax(z.double().numpy() + bias))          # (K, N, C)
    py = p[:, np.arange(3), y.numpy()]                             # (K, N)
    want = -np.log((gate.double().numpy().T * py).sum(0) + 1e-12).mean()
    got = MixtureDebiasNLL([3, 1])({"component_logits": z, "gate": gate}, y).item()
    assert got == pytest.approx(want, rel=1e-6)


def test_mixture_debias_nll_floors_zero_mass_and_zero_counts():
    # a class with no training image: log(C * 0 / N + 1e-12), finite
    loss = MixtureDebiasNLL([2, 0])
    assert loss.log_bias[1].item() == pytest.approx(math.log(1e-12), rel=1e-6)
    # the true class's probability underflows in every component: -log(0 + 1e-12)
    z = torch.tensor([[[0.0, -200.0]], [[0.0, -300.0]]])            # (K=2, N=1, C=2)
    gate = torch.tensor([[0.5, 0.5]])
    got = MixtureDebiasNLL([1, 1])({"component_logits": z, "gate": gate}, torch.tensor([1])).item()
    assert got == pytest.approx(-math.log(1e-12), rel=1e-6)
