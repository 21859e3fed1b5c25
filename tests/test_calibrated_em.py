"""Label-shift EM on calibrated posteriors (ltlab.evaluation.calibrated_em): BCTS, weighted TS, the status flags."""
import numpy as np
import pytest

from ltlab.evaluation import calibrated_em as CE
from ltlab.evaluation import calibration_fit as CF
from ltlab.evaluation import metrics as M
from ltlab.evaluation.shift import em_tv_table, parse_shift, shift_subset, shift_table

C = 10
COUNTS = np.array([int(5000 * 0.01 ** (i / (C - 1))) for i in range(C)])
LOG_PI = np.log(COUNTS / COUNTS.sum())


def _gauss(n_per, seed, d=8):
    """log p(x|y) of unit Gaussians around fixed class means (the Bayes-exact likelihood)."""
    mu = np.random.default_rng(0).normal(size=(C, d))
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(C), n_per)
    x = mu[y] + rng.normal(size=(len(y), d))
    return -0.5 * ((x[:, None, :] - mu[None]) ** 2).sum(-1), y


def _model(scale, head_boost=0.0):
    """Logits of a miscalibrated model: scale * (log p(x|y) + log pi) plus a head-favouring bias.
    scale 1 and no boost is the exact training-prior posterior."""
    boost = head_boost * np.linspace(1.0, 0.0, C)
    return lambda ll: scale * (ll + LOG_PI) + boost


def _case(scale, head_boost=0.0, val_per_class=100):
    f = _model(scale, head_boost)
    ll_v, y_v = _gauss(val_per_class, seed=1)
    ll_t, y_t = _gauss(200, seed=2)
    return f(ll_v), y_v, f(ll_t), y_t


def _tv_and_status(method, zv, yv, zt, yt, shift):
    idx = shift_subset(yt, *parse_shift(shift))
    res = CE.estimate_prior(zt[idx], CE.fit_calibration(method, zv, yv, COUNTS))
    return CE.total_variation(res.prior, np.bincount(yt[idx], minlength=C) / len(idx)), res.status


@pytest.mark.parametrize("shift", ["forward50", "uniform", "backward50"])
def test_em_collapses_on_miscalibrated_logits_and_bcts_recovers_the_prior(shift):
    """Under-confident logits with a head-favouring bias (an early, mixup-trained model): EM on them
    puts most of the mass on a few classes; TS cannot remove a class bias; BCTS can."""
    zv, yv, zt, yt = _case(scale=0.2, head_boost=2.0)
    tv_none, st_none = _tv_and_status("none", zv, yv, zt, yt, shift)
    tv_bcts, st_bcts = _tv_and_status("bcts", zv, yv, zt, yt, shift)
    assert st_none == CE.STATUS_COLLAPSED and tv_none > 0.25
    assert st_bcts == CE.STATUS_OK and tv_bcts < 0.1
    assert _tv_and_status("ts", zv, yv, zt, yt, shift)[0] > 0.3


def test_weighted_temperature_scaling_fixes_a_pure_scale_error():
    zv, yv, zt, yt = _case(scale=0.3)
    cal = CE.fit_calibration("ts", zv, yv, COUNTS)
    assert cal.temperature == pytest.approx(0.3, rel=0.1)
    np.testing.assert_allclose(cal.source_prior, COUNTS / COUNTS.sum())
    assert _tv_and_status("none", zv, yv, zt, yt, "backward50")[1] == CE.STATUS_COLLAPSED
    tv, status = _tv_and_status("ts", zv, yv, zt, yt, "backward50")
    assert status == CE.STATUS_OK and tv < 0.1
    # fitted on the balanced val without the pi / q_val weights, T absorbs the prior mismatch
    assert abs(CE.fit_weighted_temperature(zv, yv, np.ones(len(yv))) - 0.3) > 0.05


def test_bcts_recovers_planted_temperature_and_biases():
    rng = np.random.default_rng(3)
    z = rng.normal(scale=3.0, size=(6000, 5))
    t0, b0 = 2.5, np.array([0.8, -0.4, 0.1, 0.0, -0.5])
    p = M.softmax(z / t0 + b0)
    y = (p.cumsum(1) > rng.random((len(z), 1))).argmax(1)      # labels drawn from the planted posterior
    t, b, _ = CE.fit_bcts(z, y)
    assert t == pytest.approx(t0, rel=0.08)
    np.testing.assert_allclose(b, b0 - b0.mean(), atol=0.1)
    assert b.mean() == pytest.approx(0.0, abs=1e-12)


def test_fit_prior_power_recovers_a_planted_temperature_and_source_prior():
    """Logits z = T0 (s + gamma0 log pi), s the log-likelihoods of a balanced val split: the fit
    finds T0 and gamma0; its NLL equals scipy's Nelder-Mead minimum of the same objective."""
    from scipy.optimize import minimize

    rng = np.random.default_rng(4)
    counts = np.array([500.0, 200.0, 80.0, 30.0, 10.0])
    log_pi = np.log(counts / counts.sum())
    y = np.repeat(np.arange(5), 1500)                           # balanced, as the val split
    s = rng.normal(scale=2.0, size=(len(y), 5))
    s[np.arange(len(y)), y] += 2.0                              # informative log-likelihoods
    t0, g0 = 1.8, 0.4
    p = M.softmax(s)                                            # the true posterior under the uniform prior
    y = (p.cumsum(1) > rng.random((len(y), 1))).argmax(1)       # labels drawn from it
    z = t0 * (s + g0 * log_pi)
    t, g, nll = CF.fit_prior_power(z, y, counts, val_prior=np.ones(5))
    assert t == pytest.approx(t0, rel=0.05) and g == pytest.approx(g0, abs=0.08)

    def objective(x):
        return M.nll(z / x[0] - x[1] * log_pi, y)                # val prior uniform: log q_val is constant
    ref = minimize(objective, [1.0, 1.0], method="Nelder-Mead", options={"xatol": 1e-8, "fatol": 1e-12})
    assert nll == pytest.approx(ref.fun, abs=1e-7)
    assert t == pytest.approx(ref.x[0], rel=1e-3) and g == pytest.approx(ref.x[1], abs=1e-3)
    # logits that already carry the training prior in full (gamma 1) and no scale error
    t1, g1, _ = CF.fit_prior_power(s + log_pi, y, counts, val_prior=np.ones(5))
    assert t1 == pytest.approx(1.0, rel=0.05) and g1 == pytest.approx(1.0, abs=0.08)


def test_fit_prior_power_moves_the_posteriors_to_the_val_prior_and_keeps_gamma_in_bounds():
    """On an imbalanced val split the val prior enters as + log q_val: the default (the labels'
    frequencies) equals passing them, recovers the planted gamma, and differs from assuming a
    uniform val prior; a gamma beyond PRIOR_POWER_BOUNDS stops at the bound."""
    rng = np.random.default_rng(6)
    counts = np.array([500.0, 200.0, 80.0, 30.0, 10.0])
    log_pi = np.log(counts / counts.sum())
    q_val = np.array([0.4, 0.25, 0.15, 0.12, 0.08])
    y = np.repeat(np.arange(5), (8000 * q_val).astype(int))                 # the val split's classes
    x = rng.normal(size=(len(y), 5)) + 1.5 * np.eye(5)[y]
    s = 1.5 * x                                 # log p(x | k) + const: the posterior is softmax(s + log q)
    z = 1.4 * (s + 0.6 * log_pi)
    t, g, nll = CF.fit_prior_power(z, y, counts)
    freq = np.bincount(y, minlength=5) / len(y)
    assert (t, g, nll) == pytest.approx(CF.fit_prior_power(z, y, counts, val_prior=freq), rel=1e-9)
    assert t == pytest.approx(1.4, rel=0.05) and g == pytest.approx(0.6, abs=0.08)
    assert abs(CF.fit_prior_power(z, y, counts, val_prior=np.ones(5))[1] - g) > 0.1
    hi = CF.PRIOR_POWER_BOUNDS[1]
    assert CF.fit_prior_power(1.4 * (s + (hi + 3.0) * log_pi), y, counts)[1] == pytest.approx(hi)
    # a val split without the last class still fits (its q_val is floored, not a shape error)
    keep = y < 4
    assert np.isfinite(CF.fit_prior_power(z[keep], y[keep], counts)).all()
    lo = CF.PRIOR_POWER_BOUNDS[0]
    assert CF.fit_prior_power(1.4 * (s + (lo - 3.0) * log_pi), y, counts)[1] == pytest.approx(lo)


def test_a_marked_calibration_refits_its_source_prior_on_other_val_images():
    """with_fitted_source keeps the calibration and records the counts; source_prior_on gives
    pi^gamma (normalised) with gamma fitted on the images given, and an unmarked one its own."""
    rng = np.random.default_rng(7)
    counts = np.array([400.0, 150.0, 50.0, 20.0, 1.0])   # a class seen once, as in iNaturalist
    log_pi = np.log(counts / counts.sum())
    y = np.repeat(np.arange(5), 300)
    s = 1.5 * (rng.normal(size=(len(y), 5)) + 1.5 * np.eye(5)[y])
    z = 1.2 * (s + 0.3 * log_pi)
    cal = CE.fit_calibration("ts", z, y, counts)
    marked = CF.with_fitted_source(cal, counts)
    assert marked.temperature == cal.temperature and marked.method == "ts" and CF.SOURCE_FIT not in cal.info
    np.testing.assert_array_equal(marked.info[CF.SOURCE_FIT], counts)
    np.testing.assert_array_equal(CF.source_prior_on(cal, z, y), cal.source_prior)
    half = y % 2 == 0
    g = CF.fit_prior_power(z[half], y[half], counts)[1]
    assert g == pytest.approx(0.3, abs=0.15)
    want = counts ** g / (counts ** g).sum()
    np.testing.assert_allclose(CF.source_prior_on(marked, z[half], y[half]), want, rtol=1e-12)


def test_bcts_and_em_match_the_abstention_package():
    """Alexandari et al.'s own implementation (abstention 0.1.3.1): TempScaling(bias_positions='all')
    is BCTS; EMImbalanceAdapter runs EM on the posteriors we give it (its calibrator_factory path
    iterates on the uncalibrated posteriors, so calibrated ones are passed in), the source prior
    from the validation labels."""
    cal_mod = pytest.importorskip("abstention.calibration")
    ls_mod = pytest.importorskip("abstention.label_shift")
    zv, yv, zt, yt = _case(scale=1.0, val_per_class=50)
    onehot = np.eye(C)[yv]
    ours = CE.fit_calibration("bcts", zv, yv, COUNTS)
    ref = cal_mod.TempScaling(bias_positions="all")(zv, onehot)
    np.testing.assert_allclose(ours.probs(zt), ref(zt), atol=2e-3)
    assert ours.val_nll <= M.nll(np.log(ref(zv)), yv) + 1e-9          # ours is at least as good a fit
    idx = shift_subset(yt, "backward", 50)
    probs = ours.probs(zt[idx])
    fn = ls_mod.EMImbalanceAdapter(estimate_priors_from_valid_labels=True, max_iterations=1000)(
        tofit_initial_posterior_probs=probs, valid_posterior_probs=ours.probs(zv), valid_labels=onehot)
    np.testing.assert_allclose(CE.estimate_prior(zt[idx], ours).prior, fn.multipliers * onehot.mean(0), atol=1e-4)


def test_status_flags():
    zv, yv, zt, _ = _case(scale=1.0)
    cal = CE.fit_calibration("bcts", zv, yv, COUNTS)
    assert CE.estimate_prior(zt, cal).status == CE.STATUS_OK
    capped = CE.estimate_prior(zt, cal, max_iter=2)
    assert capped.status == CE.STATUS_CAP and capped.n_iter == 2
    q1 = np.full(4, 0.25)
    assert CE.em_status(np.array([0.97, 0.01, 0.01, 0.01]), q1, capped=False) == CE.STATUS_COLLAPSED
    assert CE.em_status(np.array([0.4, 0.3, 0.2, 0.1]), q1, capped=False) == CE.STATUS_OK
    assert CE.perplexity(q1) == pytest.approx(4.0)


def test_calibration_inputs_are_checked():
    zv, yv, _, _ = _case(scale=1.0, val_per_class=5)
    with pytest.raises(ValueError, match="expected one of auto, ts, bcts, bcts_l2, none"):
        CE.fit_calibration("platt", zv, yv, COUNTS)
    with pytest.raises(ValueError, match="needs a validation split"):
        CE.fit_calibration("bcts", model_prior=COUNTS)
    with pytest.raises(ValueError, match=r"classes \[9\] have none"):
        CE.fit_calibration("bcts", zv[yv < 9], yv[yv < 9], COUNTS)


def test_shift_table_leaves_a_flagged_estimate_out_of_the_results():
    zv, yv, zt, yt = _case(scale=0.2, head_boost=2.0)
    raw = shift_table(zt, yt, COUNTS, shifts=["forward50", "backward50"])
    assert (raw["em_status"] == CE.STATUS_COLLAPSED).all() and (raw["em_calibration"] == "none").all()
    assert raw["em"].isna().all() and raw["em_few"].isna().all() and (raw["em_tv"] > 0.25).all()
    cal = CE.fit_calibration("bcts", zv, yv, COUNTS)
    t = shift_table(zt, yt, COUNTS, shifts=["forward50", "backward50"], calibration=cal)
    assert (t["em_status"] == CE.STATUS_OK).all() and (t["em_calibration"] == "bcts").all()
    assert t["em"].notna().all() and (t["em_tv"] < 0.1).all()
    assert t.loc["backward50", "em"] > t.loc["backward50", "none"] + 0.1
    tv = em_tv_table(zt, yt, {"bcts": cal, "none": CE.fit_calibration("none", model_prior=COUNTS)},
                     shifts=["backward50"])
    assert tv.loc["backward50", "tv bcts"] == pytest.approx(t.loc["backward50", "em_tv"])
    assert tv.loc["backward50", "status none"] == CE.STATUS_COLLAPSED
