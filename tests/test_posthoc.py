"""ltlab.evaluation.posthoc: temperature scaling, logit adjustment, prior correction, EM prior."""
import math

import numpy as np
import pytest
import torch

from ltlab.evaluation import metrics as M
from ltlab.evaluation import posthoc as P


def _nll_at(f, y, temps):
    t = torch.tensor(f)[None] / torch.tensor(temps)[:, None, None]
    return torch.nn.functional.cross_entropy(
        t.reshape(-1, f.shape[1]), torch.tensor(y).repeat(len(temps)),
        reduction="none").reshape(len(temps), -1).mean(1).numpy()


def _brute_force_temperature(f, y, points=201, levels=3):
    # exhaustive grid over log T in [log .05, log 20], zoomed 3 times around the best cell
    lo, hi = math.log(0.05), math.log(20)
    for _ in range(levels):
        grid = np.linspace(lo, hi, points)
        i = int(np.argmin(_nll_at(f, y, np.exp(grid))))
        lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, points - 1)]
    return math.exp(grid[i])


def _planted(seed, t_star, n=20000, c=10, scale=3.0):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, c)) * scale
    p = M.softmax(z / t_star)
    y = (rng.random(n)[:, None] > np.cumsum(p, axis=1)).sum(axis=1)
    return z, np.minimum(y, c - 1)


def test_class_prior():
    np.testing.assert_allclose(P.class_prior([30, 10, 0]), [0.75, 0.25, 0.0])
    with pytest.raises(ValueError):
        P.class_prior([0, 0])


def test_apply_temperature():
    np.testing.assert_allclose(P.apply_temperature([[2.0, -4.0]], 2.0), [[1.0, -2.0]])
    with pytest.raises(ValueError):
        P.apply_temperature([[1.0]], -1.0)


def test_fit_temperature_hand():
    # logits (2, 0), labels 0,0,0,1: NLL is minimal where softmax(2/T)_0 = 3/4,
    # i.e. 2/T = ln(3/4 / 1/4) = ln 3  ->  T = 2 / ln 3 = 1.8205
    f = np.array([[2.0, 0.0]] * 4)
    assert P.fit_temperature(f, [0, 0, 0, 1]) == pytest.approx(2 / math.log(3), rel=1e-7)


@pytest.mark.parametrize("t_star", [0.6, 2.5])
def test_fit_temperature_matches_brute_force_and_recovers_planted(t_star):
    f, y = _planted(0, t_star, n=6000)
    t = P.fit_temperature(f, y)
    assert t == pytest.approx(_brute_force_temperature(f, y), rel=1e-3)
    assert t == pytest.approx(t_star, rel=0.05)
    # scaling improves NLL and ECE vs the raw logits
    assert M.nll(f / t, y) < M.nll(f, y)
    assert M.ece(M.softmax(f / t), y) < M.ece(M.softmax(f), y)


def test_fit_temperature_recovers_planted_large():
    f, y = _planted(1, 1.7, n=20000, c=20)
    assert P.fit_temperature(f, y) == pytest.approx(1.7, rel=0.05)


def test_fit_temperature_bound():
    # labels independent of the logits: the flattest allowed softmax wins -> T = 20
    rng = np.random.default_rng(2)
    f = rng.normal(size=(2000, 5)) * 5
    y = rng.integers(0, 5, 2000)
    assert P.fit_temperature(f, y) == pytest.approx(20.0, rel=1e-6)


def test_logit_adjust():
    # counts (30, 10): pi = (.75, .25); f - log pi = (-ln .75, -ln .25)
    out = P.logit_adjust([[0.0, 0.0]], [30, 10])
    np.testing.assert_allclose(out, [[-math.log(0.75), -math.log(0.25)]], rtol=1e-15)
    np.testing.assert_allclose(P.logit_adjust([[0.0, 0.0]], [30, 10], tau=0.5),
                               [[-0.5 * math.log(0.75), -0.5 * math.log(0.25)]], rtol=1e-15)
    f = np.random.default_rng(3).normal(size=(50, 4))
    np.testing.assert_array_equal(P.logit_adjust(f, [100, 50, 10, 1], tau=0.0), f)


def test_prior_correct():
    # counts (30, 10), q = (.5, .5): f + ln .5 - ln(.75, .25) = (ln 2/3, ln 2)
    np.testing.assert_allclose(P.prior_correct([[0.0, 0.0]], [30, 10], [0.5, 0.5]),
                               [[math.log(2 / 3), math.log(2)]], rtol=1e-14)
    f = np.random.default_rng(4).normal(size=(50, 4))
    counts = [100, 50, 10, 1]
    np.testing.assert_allclose(P.prior_correct(f, counts, P.class_prior(counts)), f, atol=1e-14)
    np.testing.assert_allclose(P.prior_correct(f, counts, counts), f, atol=1e-14)  # normalised
    # a uniform target equals logit adjustment with tau = 1 up to a per-row constant
    d = P.prior_correct(f, counts, [1, 1, 1, 1]) - P.logit_adjust(f, counts)
    np.testing.assert_allclose(d, d[:, :1].repeat(4, 1), atol=1e-12)
    # zero target mass: finite, and that class is never predicted
    out = P.prior_correct([[5.0, 0.0], [9.0, 0.0]], [10, 10], [0.0, 1.0])
    assert np.isfinite(out).all() and (out.argmax(1) == 1).all()


def test_em_prior_hand():
    # pi = (.5, .5), posteriors (.8, .2), (.4, .6): one M-step gives q = (.6, .4);
    # reweighting by q/pi = (1.2, .8): (.96, .16)/1.12 = (6/7, 1/7) and (.48, .48)/.96 = (.5, .5)
    q, adj, it = P.em_prior([[0.8, 0.2], [0.4, 0.6]], [0.5, 0.5], max_iter=1)
    np.testing.assert_allclose(q, [0.6, 0.4])
    np.testing.assert_allclose(adj, [[6 / 7, 1 / 7], [0.5, 0.5]])
    assert it == 1
    # uninformative posteriors: q = pi is a fixed point, stop after one update
    q, adj, it = P.em_prior([[0.5, 0.5]] * 3, [0.5, 0.5])
    np.testing.assert_allclose(q, [0.5, 0.5])
    assert it == 1


def test_em_prior_recovers_planted_shift():
    # 1-D Gaussian classes; p_s(y|x) is the exact (calibrated) source posterior
    rng = np.random.default_rng(5)
    mu, pi = np.array([-2.0, 0.0, 2.0]), np.array([0.7, 0.2, 0.1])
    q_true = np.array([0.2, 0.3, 0.5])
    y = rng.choice(3, size=30000, p=q_true)
    x = rng.normal(mu[y], 1.0)
    log_lik = -0.5 * (x[:, None] - mu[None]) ** 2
    p_src = M.softmax(log_lik + np.log(pi))
    q, adj, it = P.em_prior(p_src, pi)
    np.testing.assert_allclose(q, q_true, atol=0.015)
    assert 1 < it < 100
    np.testing.assert_allclose(adj.mean(0), q, atol=1e-5)  # converged: EM fixed point
    p_true = M.softmax(log_lik + np.log(q_true))
    assert np.abs(adj - p_true).mean() < 0.01
    # the target-aware posteriors are more accurate on the shifted data
    assert M.top1(adj.argmax(1), y) > M.top1(p_src.argmax(1), y) + 0.03
