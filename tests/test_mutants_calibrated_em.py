"""Calibration fits and EM (evaluation.calibration_fit, evaluation.calibrated_em): cases that
`make mutants` showed untested. Every optimum is checked by its first-order condition (the
gradient of the objective written out here from its formula, ~0) or against scipy's minimiser of
that objective; EM's status by hand-made posteriors (one-hot rows converge exactly)."""
import math

import numpy as np
import pytest
from scipy.optimize import minimize
from scipy.special import log_softmax, softmax

from ltlab.evaluation import calibrated_em as CE
from ltlab.evaluation import calibration_fit as CF
from ltlab.evaluation import posthoc


def _val(seed=0, n_per=40, c=4, scale=2.0):
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(c), n_per)
    f = rng.normal(size=(len(y), c)) * scale
    f[np.arange(len(y)), y] += 1.5
    f[:, 0] += 1.0                       # a class bias for BCTS to correct
    return f, y


def _grad(f, y, a, b, offset=0.0):
    """Gradient of mean NLL of softmax(a f + b + offset) in (a, b)."""
    r = softmax(a * f + b + offset, axis=1)
    r[np.arange(len(y)), y] -= 1.0
    r /= len(y)
    return float((r * f).sum()), r.sum(axis=0)


# ------------------------------------------------------------------- calibration_fit.py

def test_fit_bcts_is_stationary_with_centred_biases_and_its_nll():
    f, y = _val()
    t, b, nll = CF.fit_bcts(f, y)
    assert b.mean() == pytest.approx(0.0, abs=1e-12)
    ga, gb = _grad(f, y, 1.0 / t, b)
    assert abs(ga) < 1e-5 and np.abs(gb).max() < 1e-5      # L-BFGS-B stops on its ftol here
    want = -log_softmax(f / t + b, axis=1)[np.arange(len(y)), y].mean()
    assert nll == pytest.approx(want, rel=1e-10)
    # a start (T, b) reaches the same minimum
    t2, b2, _ = CF.fit_bcts(f, y, init=(2.0, np.arange(1.0, 5.0)))     # a start with biases of mean 2.5
    assert t2 == pytest.approx(t, rel=1e-4)
    np.testing.assert_allclose(b2, b, atol=1e-4)


def test_fit_bcts_names_at_most_ten_missing_classes():
    f = np.zeros((3, 12))
    with pytest.raises(ValueError, match=r"classes \[1, 2, 3, 4, 5, 6, 7, 8, 9, 10\] have none"):
        CF.fit_bcts(f, [0, 0, 0])


def _bcts_l2_objective(x, f, y, offset, ridge):
    a, b = x[0], x[1:]
    return -log_softmax(a * f + b + offset, axis=1)[np.arange(len(y)), y].mean() + 0.5 * ridge * b @ b


@pytest.mark.parametrize("sigma", [0.5, 2.0])
def test_fit_bcts_l2_is_the_map_fit(sigma):
    f, y = _val(1, n_per=8)                              # few images: the penalty matters
    counts = np.array([40, 20, 10, 5])
    pi = counts / counts.sum()
    q_val = np.bincount(y, minlength=4) / len(y)
    offset = np.log(q_val) - np.log(pi)
    ridge = 1.0 / (sigma ** 2 * len(y))
    t, b, obj = CF.fit_bcts_l2(f, y, counts, sigma)
    ref = minimize(_bcts_l2_objective, np.r_[1.0, np.zeros(4)], args=(f, y, offset, ridge), method="BFGS",
                   options={"gtol": 1e-10})
    assert 1.0 / t == pytest.approx(ref.x[0], rel=1e-4)
    np.testing.assert_allclose(b, ref.x[1:], atol=1e-4)
    assert obj == pytest.approx(_bcts_l2_objective(np.r_[1.0 / t, b], f, y, offset, ridge), rel=1e-10)
    # through fit_method / fit_calibration, with the sigma passed on
    cal = CE.fit_calibration("bcts_l2", f, y, counts, bias_sigma=sigma)
    assert (cal.method, cal.info) == ("bcts_l2", {"bias_sigma": sigma})
    assert cal.temperature == pytest.approx(t, rel=1e-9) and cal.val_nll == pytest.approx(obj, rel=1e-9)
    np.testing.assert_allclose(cal.bias, b, atol=1e-9)
    np.testing.assert_allclose(cal.source_prior, pi)


def test_fit_bcts_l2_checks_sigma():
    f, y = _val()
    with pytest.raises(ValueError, match="^bcts_l2's sigma must be > 0, got 0$"):
        CF.fit_bcts_l2(f, y, [1, 1, 1, 1], sigma=0)


def test_fit_weighted_temperature_is_stationary():
    f, y = _val(2)
    w = np.arange(1, len(y) + 1)                          # integer weights
    t = CF.fit_weighted_temperature(f, y, w)
    beta = 1.0 / t
    p = softmax(beta * f, axis=1)
    fy = f[np.arange(len(y)), y]
    g = float((w / w.sum()) @ ((p * f).sum(axis=1) - fy))
    assert abs(g) < 1e-8


def test_ts_calibration_weights_by_pi_over_q_val():
    f, y = _val(3)
    y = y[20:]                                            # val prior (20, 40, 40, 40) / 140
    f = f[20:]
    counts = np.array([50, 30, 15, 5])
    pi = counts / counts.sum()
    q = np.bincount(y, minlength=4) / len(y)
    cal = CE.fit_calibration("ts", f, y, counts)
    assert cal.method == "ts" and cal.bias.tolist() == [0.0] * 4
    np.testing.assert_allclose(cal.source_prior, pi)
    assert cal.temperature == pytest.approx(CF.fit_weighted_temperature(f, y, pi[y] / q[y]), rel=1e-12)
    want_nll = -log_softmax(f / cal.temperature, axis=1)[np.arange(len(y)), y].mean()
    assert cal.val_nll == pytest.approx(want_nll, rel=1e-12)
    with pytest.raises(ValueError, match="^calibration 'ts' needs a positive model prior for every class$"):
        CE.fit_calibration("ts", f, y, [50, 30, 15, 0])


def test_bcts_source_prior_is_the_val_label_frequency():
    f, y = _val(4)
    y, f = y[10:], f[10:]
    cal = CE.fit_calibration("bcts", f, y)
    assert cal.method == "bcts"
    np.testing.assert_allclose(cal.source_prior, np.bincount(y, minlength=4) / len(y))


# -------------------------------------------------------------------- calibrated_em.py

def test_fit_calibration_none_and_argument_checks():
    cal = CE.fit_calibration("none", model_prior=[3, 1])
    assert (cal.method, cal.temperature) == ("none", 1.0)
    np.testing.assert_allclose(cal.source_prior, [0.75, 0.25])
    with pytest.raises(ValueError, match=r"^calibration 'none' needs the model prior \(the prior the logits encode\)$"):
        CE.fit_calibration("none")
    f, y = _val()
    for kw in ({"val_logits": f}, {"val_labels": y}):
        with pytest.raises(ValueError, match="^calibration 'ts' needs a validation split .*pass calibration 'none' "
                                             "to run EM on the uncalibrated logits$"):
            CE.fit_calibration("ts", model_prior=[1, 1, 1, 1], **kw)
    with pytest.raises(TypeError, match="^n_folds, seed: options of calibration 'auto' only$"):
        CE.fit_calibration("ts", f, y, [1, 1, 1, 1], n_folds=3, seed=1)


def test_auto_passes_everything_to_choose_calibration(monkeypatch):
    seen = {}

    def spy(*args, **kw):
        seen["args"], seen["kw"] = args, kw
        return "chosen"

    monkeypatch.setattr(CE, "choose_calibration", spy)
    f, y = _val()
    assert CE.fit_calibration("auto", f, y, [1, 2, 3, 4], bias_sigma=0.7, n_folds=3, seed=5) == "chosen"
    assert seen["args"][0] is f and seen["args"][1] is y and seen["args"][2] == [1, 2, 3, 4]
    assert seen["kw"] == {"bias_sigma": 0.7, "n_folds": 3, "seed": 5}


def test_perplexity_ignores_zero_mass():
    assert CE.perplexity([0.5, 0.5, 0.0]) == pytest.approx(2.0)
    assert CE.perplexity([1, 0]) == pytest.approx(1.0)


def test_em_status_threshold_is_strict():
    # perplexity 2 against a reference of 4 at ratio 0.5: not below, so 'ok'; ratio 0.6 flags it
    q_hat, q_first = [0.5, 0.5, 0.0, 0.0], [0.25] * 4
    assert CE.em_status(q_hat, q_first, False, collapse_ratio=0.5) == CE.STATUS_OK
    assert CE.em_status(q_hat, q_first, False, collapse_ratio=0.6) == CE.STATUS_COLLAPSED
    assert CE.em_status(q_hat, q_first, True) == CE.STATUS_CAP


def _one_hot_case():
    # posteriors exactly one-hot: EM reaches its fixed point (the label frequencies) at update 2
    z = np.array([[0.0, -np.inf]] * 3 + [[-np.inf, 0.0]])
    return z, CF.Calibration("none", 1.0, np.zeros(2), np.array([0.5, 0.5]))


def test_estimate_prior_converged_exactly_at_the_cap_is_ok():
    z, cal = _one_hot_case()
    res = CE.estimate_prior(z, cal, max_iter=2, tol=0.0)
    assert res.n_iter == 2 and res.status == CE.STATUS_OK
    np.testing.assert_allclose(res.prior, [0.75, 0.25])
    h = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert res.perplexity == pytest.approx(math.exp(h))
    assert res.reference_perplexity == pytest.approx(math.exp(h))      # mean one-hot posterior = frequencies
    # identical posteriors (0.6, 0.4): EM only approaches the corner (1, 0), so the cap stops it
    z2 = np.log(np.array([[0.6, 0.4]] * 10))
    res = CE.estimate_prior(z2, cal, max_iter=50, tol=0.0)
    assert res.n_iter == 50 and res.status == CE.STATUS_CAP


def test_estimate_prior_passes_tol_and_collapse_ratio():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(300, 3)) * 2
    cal = CF.Calibration("none", 1.0, np.zeros(3), np.array([0.6, 0.3, 0.1]))
    p = cal.probs(z)
    for tol in (1e-2, 1e-9):
        _, _, it = posthoc.em_prior(p, cal.source_prior, max_iter=1000, tol=tol)
        assert CE.estimate_prior(z, cal, tol=tol).n_iter == it
    res = CE.estimate_prior(z, cal)
    ratio = res.perplexity / res.reference_perplexity
    assert CE.estimate_prior(z, cal, collapse_ratio=ratio * 0.99).status == CE.STATUS_OK
    assert CE.estimate_prior(z, cal, collapse_ratio=ratio * 1.01).status == CE.STATUS_COLLAPSED


def test_fit_bcts_l2_with_a_given_val_prior_and_an_absent_class():
    f, y = _val(5, n_per=10)
    counts = np.array([40, 20, 10, 5])
    vp = np.array([0.1, 0.2, 0.3, 0.4])                  # not the labels' frequencies
    ridge = 1.0 / len(y)
    offset = np.log(vp) - np.log(counts / counts.sum())
    t, b, obj = CF.fit_bcts_l2(f, y, counts, 1.0, val_prior=vp)
    ref = minimize(_bcts_l2_objective, np.r_[1.0, np.zeros(4)], args=(f, y, offset, ridge), method="BFGS",
                   options={"gtol": 1e-10})
    assert 1.0 / t == pytest.approx(ref.x[0], rel=1e-4)
    np.testing.assert_allclose(b, ref.x[1:], atol=1e-4)
    # the last class has no val label: its bias is held by the penalty, everything stays finite
    keep = y < 3
    t3, b3, obj3 = CF.fit_bcts_l2(f[keep], y[keep], counts, 1.0)
    assert np.isfinite([t3, obj3]).all() and np.isfinite(b3).all() and b3.shape == (4,)


def test_fit_method_needs_the_model_prior():
    f, y = _val()
    with pytest.raises(ValueError, match="^calibration 'ts' needs the model prior \\(the prior the logits encode\\)$"):
        CF.fit_method("ts", f, y, None)


def test_describe_hand_cases():
    pi = np.array([0.5, 0.5])
    assert CF.Calibration("ts", 1.894, np.zeros(2), pi).describe() == "ts (T = 1.89)"
    assert CF.Calibration("none", 1.0, np.zeros(2), pi).describe() == "none (T = 1)"
    assert CF.Calibration("bcts", 2.0, np.array([-0.25, 0.5]), pi).describe() == "bcts (T = 2, bias range 0.75)"
    info = {"cv_nll": {"ts": 0.5411, "bcts_l2": 0.553, "bcts": 0.5634}, "n_folds": 5, "n_repeats": 4, "n_val": 200,
            "excluded": ["bcts: a class without val images", "x: y"]}
    assert CF.Calibration("ts", 1.894, np.zeros(2), pi, info=info).describe() == (
        "ts (T = 1.89), chosen by 5-fold CV NLL (x4) on 200 val images: ts 0.541 vs bcts_l2 0.553 vs bcts 0.563 "
        "(bcts: a class without val images; x: y)")
