"""Post-hoc rules (evaluation.posthoc): cases that `make mutants` showed untested.

fit_temperature against the root of the NLL's derivative (scipy's brentq), its bounds, and one-sample data; class priors summing to 1;
EM's iteration count at an exact fixed point, at the cap and with max_iter = 0; counts given as
the train prior; the input checks and their messages; ``ltlab bench``'s post-hoc timing on a
fake clock."""
import math

import numpy as np
import pytest
from scipy.optimize import brentq
from scipy.special import logsumexp, softmax

from ltlab.evaluation import posthoc as P


def _root_temperature(f, y):
    """1 / the root of d NLL / d beta = mean(E_softmax(beta f)[f] - f_y) (convex NLL), by brentq."""
    f = np.asarray(f, dtype=np.float64)
    fy = f[np.arange(len(y)), y]

    def grad(beta):
        return float(np.mean((softmax(beta * f, axis=1) * f).sum(axis=1) - fy))

    return 1.0 / brentq(grad, 1 / 20, 1 / 0.05, xtol=1e-15, rtol=1e-15)


def _data(seed, n=3000, c=6, scale=2.0, t_true=1.5):
    rng = np.random.default_rng(seed)
    f = rng.normal(size=(n, c)) * scale
    p = np.exp(f / t_true - logsumexp(f / t_true, axis=1, keepdims=True))
    y = (rng.random(n)[:, None] > np.cumsum(p, axis=1)).sum(axis=1)
    return f, np.minimum(y, c - 1)


@pytest.mark.parametrize("seed,scale,t_true,rel", [
    (0, 2.0, 1.5, 1e-7), (2, 1.0, 3.0, 1e-7), (3, 8.0, 9.0, 1e-7),
    (1, 4.0, 0.6, 1e-12),      # here the Newton polish lowers the NLL in float64 and is kept
])
def test_fit_temperature_is_the_root_of_the_nll_gradient(seed, scale, t_true, rel):
    f, y = _data(seed, scale=scale, t_true=t_true)
    assert P.fit_temperature(f, y) == pytest.approx(_root_temperature(f, y), rel=rel)


def test_fit_temperature_at_the_bounds_and_on_one_sample():
    # the true class has the largest logit by a wide margin: sharpest allowed softmax, T = 0.05
    f = np.array([[5.0, 0.0, -1.0], [0.0, 6.0, 1.0], [1.0, 2.0, 9.0]])
    y = np.array([0, 1, 2])
    assert P.fit_temperature(f, y) == pytest.approx(0.05, rel=1e-12)
    # the true class has the smallest logit: flattest allowed softmax, T = 20
    assert P.fit_temperature(f, np.array([2, 0, 0])) == pytest.approx(20.0, rel=1e-12)
    # a single sample is enough data (its NLL falls as T -> 0 when it is predicted right)
    assert P.fit_temperature([[1.0, 0.0]], [0]) == pytest.approx(0.05, rel=1e-12)


def test_fit_temperature_checks():
    with pytest.raises(ValueError, match=r"^expected \(N, C\) logits, got shape \(3,\)$"):
        P.fit_temperature([0.0, 1.0, 2.0], [0, 1, 1])
    with pytest.raises(ValueError, match="^labels must be non-empty with one entry per logit row$"):
        P.fit_temperature([[0.0, 1.0], [1.0, 0.0]], [0])
    with pytest.raises(ValueError, match="^labels must be non-empty with one entry per logit row$"):
        P.fit_temperature(np.zeros((0, 2)), [])


def test_apply_temperature():
    np.testing.assert_allclose(P.apply_temperature([[1, 2]], 0.5), [[2.0, 4.0]])
    with pytest.raises(ValueError, match="^temperature must be > 0, got 0$"):
        P.apply_temperature([[1.0, 2.0]], 0)


def test_class_prior_of_a_prior_and_its_checks():
    # a prior (total 1) and counts with total 1 are valid
    np.testing.assert_allclose(P.class_prior([0.25, 0.75]), [0.25, 0.75])
    np.testing.assert_allclose(P.class_prior([1, 0]), [1.0, 0.0])
    with pytest.raises(ValueError, match="^class counts must be >= 0 with a positive total$"):
        P.class_prior([0, 0])


def test_prior_correct_checks():
    for bad in ([-0.1, 1.1], [0.0, 0.0]):
        with pytest.raises(ValueError, match="^target_prior must be >= 0 with a positive total$"):
            P.prior_correct([[0.0, 0.0]], [1, 1], bad)
    # integer target weights are normalised: (1, 3) is the prior (1/4, 3/4)
    np.testing.assert_allclose(P.prior_correct([[0, 0]], [1, 1], [1, 3]),
                               [[math.log(0.25) - math.log(0.5), math.log(0.75) - math.log(0.5)]])


def test_em_prior_counts_as_train_prior_and_iteration_counts():
    rng = np.random.default_rng(0)
    p = rng.dirichlet([1.0, 1.0, 1.0], size=200)
    q1, adj1, it1 = P.em_prior(p, [0.5, 0.25, 0.25])
    q2, adj2, it2 = P.em_prior(p, [200, 100, 100])            # counts: the same prior
    np.testing.assert_allclose(q1, q2, rtol=1e-12)
    np.testing.assert_allclose(adj1, adj2, rtol=1e-12)
    assert it1 == it2
    # one-hot posteriors: the first update gives the label frequencies, the second repeats them
    # exactly (delta 0 <= tol 0), so EM stops after 2 updates
    onehot = np.eye(2)[[0, 0, 0, 1]]
    q, adj, it = P.em_prior(onehot, [0.5, 0.5], tol=0.0)
    assert it == 2 and q.tolist() == [0.75, 0.25]
    np.testing.assert_array_equal(adj, onehot)
    # max_iter = 0: no update, the train prior and its (identity) reweighting
    q, adj, it = P.em_prior(p, [2, 1, 1], max_iter=0)                  # counts, normalised
    assert it == 0 and q.tolist() == [0.5, 0.25, 0.25]
    np.testing.assert_allclose(adj, p, rtol=1e-12)


def test_em_prior_stops_at_its_default_cap_of_100():
    # identical posteriors (0.6, 0.4) under a uniform train prior: the ML estimate is the corner
    # (1, 0), which EM only approaches, so with tol = 0 it runs to the cap
    p = np.array([[0.6, 0.4]] * 10)
    _, _, it = P.em_prior(p, [0.5, 0.5], tol=0.0)
    assert it == 100


def test_em_prior_row_with_mass_only_on_a_zero_prior_class():
    # class 1 has train prior 0, so its estimate starts (and stays) at 0; the row whose posterior
    # is all on class 1 then has no mass left and is left at zeros, not NaN
    q, adj, _ = P.em_prior(np.array([[1.0, 0.0], [0.0, 1.0]]), [1.0, 0.0])
    assert np.isfinite(adj).all() and adj[1].tolist() == [0.0, 0.0]
    np.testing.assert_allclose(q, [0.5, 0.0])


def test_benchmark_posthoc_times_the_documented_work(monkeypatch):
    # the median, in ms, of `repeats` timed runs after one warm-up, on a fake clock
    ticks = iter([0.0, 0.004, 10.0, 10.001, 20.0, 20.003])
    monkeypatch.setattr(P.time, "perf_counter", lambda: next(ticks))
    seen = []
    real = P.prior_correct

    def spy(logits, counts, target):
        seen.append((logits.shape, logits.dtype, np.asarray(counts).copy(), np.asarray(target).copy()))
        return real(logits, counts, target)

    monkeypatch.setattr(P, "prior_correct", spy)
    assert P.benchmark_posthoc(n=300, c=4, repeats=3) == pytest.approx(3.0)
    assert len(seen) == 4                                        # warm-up + 3 timed
    shape, dtype, counts, target = seen[0]
    assert shape == (300, 4) and dtype == np.float32
    np.testing.assert_allclose(target, [0.25] * 4)
    assert counts[0] == 500 and counts[-1] == 5 and (np.diff(counts) < 0).all()   # imbalance 100
