"""ltlab.evaluation.prior_intervals: bootstrap intervals on EM's estimate of the test prior."""
import numpy as np
import pytest

from ltlab.evaluation import calibrated_em as CE
from ltlab.evaluation import posthoc
from ltlab.evaluation import prior_intervals as PI
from ltlab.evaluation.intervals import resample_counts, stratified_bootstrap_indices

C = 10
COUNTS = np.array([int(5000 * 0.01 ** (i / (C - 1))) for i in range(C)])
LOG_PI = np.log(COUNTS / COUNTS.sum())
MU = 2.0 * np.random.default_rng(0).normal(size=(C, 6))   # classes apart enough for EM to converge fast


def _logits(y, seed, scale=1.0):
    """scale * (log p(x|y) + log pi): Bayes-exact training-prior logits at scale 1."""
    x = MU[y] + np.random.default_rng(seed).normal(size=(y.size, MU.shape[1]))
    return scale * (-0.5 * ((x[:, None, :] - MU[None]) ** 2).sum(-1) + LOG_PI)


def _draw(q, n, seed):
    return np.random.default_rng(seed).choice(C, size=n, p=q)


def test_vectorised_em_is_em_on_each_resampled_test_set():
    y = _draw(np.full(C, 0.1), 600, 1)
    cal = CE.fit_calibration("none", model_prior=COUNTS)
    P = cal.probs(_logits(y, 2))
    W = resample_counts(np.random.default_rng(3).integers(0, y.size, size=(4, y.size)), y.size, np.float64)
    q0 = CE.estimate_prior(_logits(y, 2), cal).prior
    q, capped = PI._em_block(P, W, q0, cal.source_prior, 5000, 1e-12)
    assert not capped.any()
    for j in range(4):
        ref, _, _ = posthoc.em_prior(np.repeat(P, W[j].astype(int), axis=0), cal.source_prior, 5000, 1e-12)
        np.testing.assert_allclose(q[j], ref, atol=1e-8)
    # one posterior matrix per resample (refitted calibrations) gives the same when they agree
    q3, _ = PI._em_block(np.stack([P] * 4), W, q0, np.stack([cal.source_prior] * 4), 5000, 1e-12)
    np.testing.assert_allclose(q3, q, atol=1e-10)


def test_val_resampling_refits_the_calibration_on_the_same_resamples():
    """Resample j: the stratified val resample j of intervals.stratified_bootstrap_indices, the
    calibration refitted on it, EM on the test images drawn j-th; written out here."""
    yv = np.repeat(np.arange(C), 15)
    zv = _logits(yv, 4, scale=0.6)
    yt = _draw(np.full(C, 0.1), 500, 5)
    zt = _logits(yt, 6, scale=0.6)
    for method in ("ts", "bcts", "bcts_l2"):
        cal = CE.fit_calibration(method, zv, yv, COUNTS)
        res = PI.em_prior_intervals(zt, cal, zv, yv, n_resamples=3, seed=9, tol=1e-10)
        assert res.resampled.startswith("test images and val images")
        vidx = stratified_bootstrap_indices(yv, 3, 9)
        W = resample_counts(np.random.default_rng([9, 1]).integers(0, yt.size, size=(3, yt.size)), yt.size)
        for j in range(3):
            cj = CE.fit_calibration(method, zv[vidx[j]], yv[vidx[j]], COUNTS)
            want = CE.estimate_prior(np.repeat(zt, W[j].astype(int), axis=0), cj, tol=1e-10).prior
            # bcts and bcts_l2 refits start from the full-split fit: the same minimum to L-BFGS's tolerance
            np.testing.assert_allclose(res.boot[j], want, atol=1e-5 if method == "ts" else 1e-4), method


def test_a_source_prior_fitted_on_val_is_fitted_again_on_each_val_resample():
    """A calibration marked with_fitted_source: refit j uses pi^gamma_j, gamma_j fitted
    (calibration_fit.fit_prior_power) on val resample j, then its method on the same resample."""
    from ltlab.evaluation import calibration_fit as CF
    yv = np.repeat(np.arange(C), 15)
    zv = _logits(yv, 4, scale=0.6) - 0.5 * LOG_PI          # carries pi^(1 - 0.5 / 0.6): not the rule's pi
    _, g, _ = CF.fit_prior_power(zv, yv, COUNTS)
    src = COUNTS ** g
    for method in ("ts", "bcts_l2"):
        cal = CE.with_fitted_source(CE.fit_calibration(method, zv, yv, src), COUNTS)
        refits = PI.val_refits(cal, zv, yv, 4, 9)
        vidx = stratified_bootstrap_indices(yv, 4, 9)
        gammas = []
        for j in range(4):
            _, gj, _ = CF.fit_prior_power(zv[vidx[j]], yv[vidx[j]], COUNTS)
            gammas.append(gj)
            np.testing.assert_allclose(refits[j].source_prior, posthoc.class_prior(COUNTS ** gj), rtol=1e-9)
            want = CE.fit_calibration(method, zv[vidx[j]], yv[vidx[j]], COUNTS ** gj)
            assert refits[j].temperature == pytest.approx(want.temperature, rel=1e-3), method
        assert np.ptp(gammas) > 0.01                      # gamma's noise is in the interval now
        # unmarked, the source prior is held
        held = PI.val_refits(CE.fit_calibration(method, zv, yv, src), zv, yv, 4, 9)
        for r in held:
            np.testing.assert_allclose(r.source_prior, posthoc.class_prior(src))


def test_point_estimate_seeds_and_tv():
    q_true = np.exp(-0.3 * np.arange(C))
    q_true /= q_true.sum()
    y = _draw(q_true, 1500, 7)
    z = _logits(y, 8)
    cal = CE.fit_calibration("none", model_prior=COUNTS)
    a = PI.em_prior_intervals(z, cal, true_prior=q_true, n_resamples=200, seed=1)
    b = PI.em_prior_intervals(z, cal, true_prior=q_true, n_resamples=200, seed=1)
    np.testing.assert_array_equal(a.boot, b.boot)
    np.testing.assert_allclose(a.estimate, CE.estimate_prior(z, cal).prior)
    assert a.resampled == "test images" and a.n_capped == 0 and a.n_collapsed == 0
    assert (a.ci[:, 0] <= a.estimate + 1e-12).all() and (a.estimate <= a.ci[:, 1] + 1e-12).all()
    assert a.tv == pytest.approx(0.5 * np.abs(a.estimate - q_true).sum())
    assert a.tv_ci[0] <= a.tv_ci[1] and a.tv_boot.shape == (200,)
    t = a.table()
    assert list(t.columns) == ["true", "estimate", "ci_lo", "ci_hi", "covered"] and len(t) == C
    assert "TV to the true prior" in a.describe()
    # a calibration that was not fitted on val ('none') ignores the val split
    yv = np.repeat(np.arange(C), 10)
    c = PI.em_prior_intervals(z, cal, _logits(yv, 9), yv, true_prior=q_true, n_resamples=200, seed=1)
    np.testing.assert_array_equal(c.boot, a.boot)
    # paired TV difference of two calibrations on the same resamples
    ts = CE.fit_calibration("ts", _logits(yv, 9), yv, COUNTS)
    d = PI.em_prior_intervals(z, ts, true_prior=q_true, n_resamples=200, seed=1)
    diff, ci = PI.tv_difference(a, d)
    assert diff == pytest.approx(a.tv - d.tv) and ci[0] <= ci[1]
    with pytest.raises(ValueError, match="same seed"):
        PI.tv_difference(a, PI.em_prior_intervals(z, cal, true_prior=q_true, n_resamples=200, seed=2))
    with pytest.raises(ValueError, match="true_prior has 3 entries"):
        PI.em_prior_intervals(z, cal, true_prior=[1, 1, 1])


def test_intervals_cover_the_prior_of_a_shifted_population():
    """Exact posteriors (EM is then the MLE): redraw the test set from a shifted prior 120 times;
    the nominal 95% per-class intervals contain the population prior in about 95% of the draws."""
    q_true = np.exp(-0.35 * np.arange(C)[::-1])
    q_true /= q_true.sum()
    cal = CE.fit_calibration("none", model_prior=COUNTS)
    hits, reps = [], 120
    for r in range(reps):
        y = _draw(q_true, 1000, 100 + r)
        res = PI.em_prior_intervals(_logits(y, 500 + r), cal, n_resamples=200, seed=r)
        hits.append((res.ci[:, 0] <= q_true) & (q_true <= res.ci[:, 1]))
    cover = np.mean(hits)
    print(f"\n[item 4] per-class prior interval coverage, exact posteriors, {reps} test sets: {cover:.3f}")
    assert 0.90 <= cover <= 0.98
