"""ltlab.evaluation.scores: hand values, torch references, orientation and stability."""
import math

import numpy as np
import pytest
import torch

from ltlab.evaluation import metrics as M
from ltlab.evaluation import scores as S


def _logits(seed=0, n=400, c=9, scale=3.0):
    return np.random.default_rng(seed).normal(size=(n, c)) * scale


def test_registry():
    assert set(S.SCORES) == {"msp", "energy", "residual_energy", "max_logit", "neg_entropy"}
    f = _logits()
    for name, fn in S.SCORES.items():
        out = fn(f)
        assert out.shape == (400,) and out.dtype == np.float64, name
        assert out.shape == fn(f.astype(np.float32), T=2.0).shape


def test_msp_hand_and_temperature():
    # (0, ln 3) -> probs (1/4, 3/4)
    assert S.msp([[0.0, math.log(3)]])[0] == pytest.approx(0.75, abs=1e-15)
    # (0, 2 ln 3) at T = 2 is the same distribution
    assert S.msp([[0.0, 2 * math.log(3)]], T=2.0)[0] == pytest.approx(0.75, abs=1e-15)
    f = _logits(1)
    np.testing.assert_allclose(S.msp(f, T=1.7),
                               torch.softmax(torch.tensor(f / 1.7), 1).max(1).values.numpy(),
                               atol=1e-14)
    with pytest.raises(ValueError):
        S.msp(f, T=0.0)


def test_neg_energy_hand_and_torch():
    # -E = logsumexp(0, ln 3) = ln(1 + 3) = ln 4 ; at T = 2 on (0, 2 ln 3): 2 * ln 4
    assert S.neg_energy([[0.0, math.log(3)]])[0] == pytest.approx(math.log(4), abs=1e-15)
    assert S.neg_energy([[0.0, 2 * math.log(3)]], T=2.0)[0] == pytest.approx(2 * math.log(4),
                                                                          abs=1e-14)
    f = _logits(2)
    ref = 0.5 * torch.logsumexp(torch.tensor(f) / 0.5, 1).numpy()
    np.testing.assert_allclose(S.neg_energy(f, T=0.5), ref, atol=1e-12)
    assert S.neg_energy([[1e4, 1e4]])[0] == pytest.approx(1e4 + math.log(2))  # no overflow


def test_residual_energy_hand():
    # ŷ = 2 ; BE = -log(e^1 + e^2) = -(1 + log(1 + e))
    assert S.residual_energy([[1.0, 2.0, 3.0]])[0] == pytest.approx(-(1 + math.log(1 + math.e)),
                                                                   abs=1e-14)
    # C = 2: exactly minus the other logit, even for huge logits
    np.testing.assert_array_equal(S.residual_energy([[5.0, -3.0], [1e300, -1e300]]),
                                  [3.0, 1e300])
    # large logits: -(999 + log(1 + e^-1)) without overflow
    assert S.residual_energy([[1000.0, 999.0, 998.0]])[0] == pytest.approx(
        -(999 + math.log1p(math.exp(-1))), abs=1e-12)
    assert S.residual_energy([[2.0]])[0] == np.inf  # no other class


def test_residual_energy_identities_and_orientation():
    f = _logits(3, scale=2.0)
    be = S.residual_energy(f)
    m = S.msp(f)
    # BE - E(x) = -log(1 - MSP), with E(x) = -logsumexp f (reference doc §1.3)
    np.testing.assert_allclose(be + S.neg_energy(f), -np.log1p(-m), atol=1e-10)
    # brute force: mask the predicted class and logsumexp the rest
    mask = np.ones_like(f, dtype=bool)
    mask[np.arange(len(f)), f.argmax(1)] = False
    ref = -torch.logsumexp(torch.tensor(np.where(mask, f, -np.inf)), 1).numpy()
    np.testing.assert_allclose(be, ref, atol=1e-12)
    # not a function of MSP: same MSP, different level -> different BE (0 vs -10)
    np.testing.assert_allclose(S.residual_energy([[10.0, 0.0], [20.0, 10.0]]), [0.0, -10.0])
    # higher = more likely correct: less mass on the other classes -> higher score
    assert S.residual_energy([[5.0, 0.0, 0.0]])[0] > S.residual_energy([[5.0, 4.0, 0.0]])[0]


def test_residual_energy_separates_correct_on_synthetic_data():
    # correct predictions keep the other logits low: BE must rank them higher (AUROC > .5)
    rng = np.random.default_rng(4)
    n, c = 4000, 10
    y = rng.integers(0, c, n)
    f = rng.normal(size=(n, c))
    f[np.arange(n), y] += 2.5
    ok = f.argmax(1) == y
    # (~0.575 here: far weaker than MSP, as §1.3 warns, but on the right side of 0.5)
    assert M.auroc(S.residual_energy(f), ok) > 0.55


def test_max_logit_and_neg_entropy():
    f = [[1.0, 3.0, -2.0]]
    assert S.max_logit(f)[0] == 3.0
    assert S.max_logit(f, T=5.0)[0] == 3.0  # T only rescales; ignored by design
    # uniform over 4 classes: entropy ln 4 -> score -ln 4 ; one-hot-like -> ~0
    assert S.neg_entropy([[0.0, 0.0, 0.0, 0.0]])[0] == pytest.approx(-math.log(4), abs=1e-15)
    assert S.neg_entropy([[1000.0, 0.0, 0.0]])[0] == pytest.approx(0.0, abs=1e-300)
    g = _logits(5)
    ref = -torch.distributions.Categorical(logits=torch.tensor(g / 1.3)).entropy().numpy()
    np.testing.assert_allclose(S.neg_entropy(g, T=1.3), ref, atol=1e-12)
