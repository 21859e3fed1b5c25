"""ltlab.evaluation.calibration_cv: the EM calibration chosen by cross-validated NLL on the val split,
on cases whose right answer is known, and the regularised BCTS it can choose."""
import numpy as np
import pytest

from ltlab.evaluation import calibrated_em as CE
from ltlab.evaluation import calibration_cv as CV
from ltlab.evaluation import metrics as M

C = 10
COUNTS = np.array([int(5000 * 0.01 ** (i / (C - 1))) for i in range(C)])
LOG_PI = np.log(COUNTS / COUNTS.sum())


def _val(n_per, seed, scale=1.0, bias=0.0, d=8):
    """Val logits of a model that is Bayes-exact for the training prior up to a temperature
    (``scale``) and per-class biases: scale * (log p(x|y) + log pi) + bias, unit Gaussians."""
    mu = np.random.default_rng(0).normal(size=(C, d))
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(C), n_per)
    x = mu[y] + rng.normal(size=(len(y), d))
    ll = -0.5 * ((x[:, None, :] - mu[None]) ** 2).sum(-1)
    return scale * (ll + LOG_PI) + bias, y


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_temperature_only_miscalibration_with_few_images_chooses_ts(seed):
    zv, yv = _val(20, seed, scale=0.5)                   # under-confident, no class bias, 20 a class
    cal = CE.fit_calibration("auto", zv, yv, COUNTS)
    assert cal.method == "ts" and cal.label == "auto: ts"
    cv = cal.info["cv_nll"]
    assert list(cv) == ["ts", "bcts_l2", "bcts"] and cv["ts"] < cv["bcts_l2"] < cv["bcts"]
    assert cal.temperature == pytest.approx(0.5, rel=0.25)
    np.testing.assert_allclose(cal.source_prior, COUNTS / COUNTS.sum())
    text = cal.describe()
    assert text.startswith("ts (T = ") and "5-fold CV NLL (x4) on 200 val images: ts " in text and "bcts_l2 " in text


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_strong_class_bias_with_many_images_chooses_bcts(seed):
    zv, yv = _val(100, seed, scale=0.5, bias=3.0 * np.linspace(-1, 1, C))
    cal = CE.fit_calibration("auto", zv, yv, COUNTS)
    cv = cal.info["cv_nll"]
    assert cal.method == "bcts" and cv["bcts"] < cv["bcts_l2"] < cv["ts"] - 1.0
    # the refit on the whole split is plain BCTS
    t, b, _ = CE.fit_bcts(zv, yv)
    assert cal.temperature == pytest.approx(t) and np.allclose(cal.bias, b)


def test_moderate_bias_with_few_images_chooses_the_regularised_bcts():
    bias = np.random.default_rng(11).normal(scale=0.7, size=C)
    for seed in (1, 2, 3):
        zv, yv = _val(50, seed, bias=bias)
        cal = CE.fit_calibration("auto", zv, yv, COUNTS)
        assert cal.method == "bcts_l2", cal.describe()
        assert cal.info["bias_sigma"] == CE.BIAS_SIGMA


def test_choice_is_deterministic_and_seeded():
    zv, yv = _val(20, 4, scale=0.7, bias=np.linspace(-0.5, 0.5, C))
    a = CE.fit_calibration("auto", zv, yv, COUNTS)
    b = CE.fit_calibration("auto", zv, yv, COUNTS)
    assert a.info["cv_nll"] == b.info["cv_nll"] and a.method == b.method
    c = CE.fit_calibration("auto", zv, yv, COUNTS, seed=7, n_repeats=1, n_folds=4)
    assert c.info["cv_nll"] != a.info["cv_nll"] and c.info["n_folds"] == 4 and c.info["n_repeats"] == 1


def test_a_source_prior_fitted_on_val_is_refitted_inside_each_fold(monkeypatch):
    """With ``source_fit`` (the model prior is the val fit's pi^gamma), every fold fits gamma on its
    own fitting images only: the held-out fold never shapes the model prior it is scored under.
    Without it the given prior is used unchanged and gamma is never fitted."""
    from ltlab.evaluation import calibration_fit as CF
    zv, yv = _val(20, 5, scale=0.6)
    seen, real = [], CF.fit_prior_power

    def spy(f, y, counts):
        seen.append((len(y), np.bincount(y, minlength=C).min()))
        return real(f, y, counts)
    monkeypatch.setattr(CF, "fit_prior_power", spy)
    gamma = real(zv, yv, COUNTS)[1]
    cal = CE.fit_calibration("auto", zv, yv, COUNTS ** gamma, n_folds=5, n_repeats=2, source_fit=COUNTS)
    assert seen == [(160, 16)] * 10                        # 2 repeats x 5 folds, 4/5 of each class
    losses = CV.cv_nll(zv, yv, COUNTS ** gamma, ("ts",), 5, 1, 0, source_fit=COUNTS)["ts"]
    fixed = CV.cv_nll(zv, yv, COUNTS ** gamma, ("ts",), 5, 1, 0)["ts"]
    assert not np.allclose(losses, fixed)                  # the per-fold gamma is not the whole split's
    seen.clear()
    CE.fit_calibration("auto", zv, yv, COUNTS, n_folds=5, n_repeats=2)
    assert seen == [] and cal.info["n_folds"] == 5


def test_stratified_folds():
    y = np.repeat(np.arange(4), [20, 13, 7, 3])
    f = CV.stratified_folds(y, 5, seed=0)
    per = np.array([[np.sum((y == k) & (f == j)) for j in range(5)] for k in range(4)])
    assert (per.max(1) - per.min(1) <= 1).all() and np.ptp(np.bincount(f)) <= 1
    assert np.array_equal(f, CV.stratified_folds(y, 5, seed=0))
    assert not np.array_equal(f, CV.stratified_folds(y, 5, seed=1))


def test_heldout_score_moves_every_candidate_to_the_val_prior():
    """ts' posteriors are under pi, bcts' under the val prior: after the move both predict a
    balanced val split, and the score is the NLL of exactly that."""
    zv, yv = _val(30, 5, scale=0.6)
    q = np.full(C, 0.1)
    ts = CE.fit_calibration("ts", zv, yv, COUNTS)
    want = -M.log_softmax(zv / ts.temperature + np.log(q) - LOG_PI)[np.arange(yv.size), yv]
    np.testing.assert_allclose(CV.heldout_nll(ts, zv, yv, q), want, atol=1e-10)
    bcts = CE.fit_calibration("bcts", zv, yv, COUNTS)
    assert CV.heldout_nll(bcts, zv, yv, q).mean() == pytest.approx(bcts.val_nll, abs=1e-9)


def test_regularised_bcts_spans_ts_and_bcts():
    zv, yv = _val(40, 6, scale=0.8, bias=np.linspace(-1, 1, C))
    q = np.bincount(yv) / yv.size
    bcts = CE.fit_calibration("bcts", zv, yv, COUNTS)
    loose = CE.fit_calibration("bcts_l2", zv, yv, COUNTS, bias_sigma=1e4)
    # the same model as bcts, reparametrised: its posteriors moved to the val prior are bcts'
    np.testing.assert_allclose(M.softmax(zv / loose.temperature + loose.bias + np.log(q) - LOG_PI),
                               bcts.probs(zv), atol=1e-4)
    tight = CE.fit_calibration("bcts_l2", zv, yv, COUNTS, bias_sigma=1e-4)
    assert np.abs(tight.bias).max() < 1e-4
    np.testing.assert_allclose(tight.source_prior, COUNTS / COUNTS.sum())
    mid = CE.fit_calibration("bcts_l2", zv, yv, COUNTS)
    assert 0 < np.abs(mid.bias).max() < np.abs(loose.bias - loose.bias.mean()).max()


def test_a_class_with_one_val_image_leaves_bcts_out_and_says_so():
    zv, yv = _val(10, 7, scale=0.5)
    keep = (yv != 9) | (np.arange(yv.size) == np.flatnonzero(yv == 9)[0])
    cal = CE.fit_calibration("auto", zv[keep], yv[keep], COUNTS)
    assert list(cal.info["cv_nll"]) == ["ts", "bcts_l2"]
    assert "bcts left out: classes [9]" in cal.info["excluded"][0] and "bcts left out" in cal.describe()
    with pytest.raises(ValueError, match="needs the model prior"):
        CE.fit_calibration("auto", zv, yv)
    with pytest.raises(ValueError, match="needs a validation split"):
        CE.fit_calibration("auto", model_prior=COUNTS)
    with pytest.raises(TypeError, match="options of calibration 'auto' only"):
        CE.fit_calibration("ts", zv, yv, COUNTS, n_folds=3)
