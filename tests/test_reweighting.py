"""ltlab.evaluation.reweighting: target accuracy from a label-shifted labelled sample (naive, IPW,
self-normalised IPW, doubly robust), hand cases, double robustness and interval coverage."""
import numpy as np
import pytest
from conftest import softmax, synth_logits

from ltlab.evaluation import reweighting as R


def table(rows):
    return {(r["estimator"], r["target"]): r for r in rows}


def test_with_the_sample_frequencies_all_three_are_the_poststratified_accuracy():
    rng = np.random.default_rng(0)
    C = 8
    y = np.repeat(np.arange(C), [80, 60, 40, 30, 20, 12, 8, 5])
    z = synth_logits(rng.random(y.size) < np.linspace(0.9, 0.4, C)[y], y, C, rng)
    tc = np.array([300, 200, 150, 90, 40, 15, 10, 5])                 # many 0-2, medium 3-4, few 5-7
    ok = z.argmax(1) == y
    acc = np.array([ok[y == k].mean() for k in range(C)])
    t = table(R.estimate_target_accuracy(z, y, np.bincount(y), temperature=1.3, train_counts=tc, n_resamples=100))
    for target, cls in (("balanced_acc", slice(None)), ("many", slice(0, 3)), ("medium", slice(3, 5)),
                        ("few", slice(5, 8))):
        for e in ("ipw", "snipw", "dr"):
            assert t[e, target]["estimate"] == pytest.approx(acc[cls].mean(), abs=1e-12), (e, target)
        assert t["naive", target]["estimate"] == pytest.approx(ok[np.isin(y, np.arange(C)[cls])].mean())
    assert t["naive", "balanced_acc"]["estimate"] == pytest.approx(ok.mean())


def test_hand_computed_two_class_example():
    # class 0: 4 images, 3 right; class 1: 1 image, wrong. Known sample prior (0.9, 0.1).
    z = np.array([[2.0, 0.0], [1.0, 0.0], [0.5, 0.0], [0.0, 1.0], [3.0, 0.0]])
    y = np.array([0, 0, 0, 0, 1])
    s, t = np.array([0.9, 0.1]), np.array([0.5, 0.5])
    w = t / s
    c = (z.argmax(1) == y).astype(float)
    rows = table(R.estimate_target_accuracy(z, y, s, temperature=2.0, n_resamples=50))
    assert rows["naive", "balanced_acc"]["estimate"] == pytest.approx(0.6)
    assert rows["ipw", "balanced_acc"]["estimate"] == pytest.approx(3 * w[0] / 5)                 # 1/3
    assert rows["snipw", "balanced_acc"]["estimate"] == pytest.approx(3 * w[0] / (4 * w[0] + w[1]))
    # dr, written out: mu_k = sum over images predicted k of their confidence / sum_i q(k | x_i)
    q = softmax(z / 2.0)
    pred, m = q.argmax(1), q.max(1)
    mu = np.array([m[pred == k].sum() / q[:, k].sum() for k in range(2)])
    dr = (t * mu).sum() + np.mean(w[y] * (c - mu[y]))
    assert rows["dr", "balanced_acc"]["estimate"] == pytest.approx(dr, abs=1e-12)


def gaussian_sample(n, prior, means, rng):
    """Labels from ``prior``, x | y ~ N(mean_y, I), and the exact log posterior for ``prior`` as
    logits: softmax(logits) = p(y | x), perfectly calibrated for the sample's own distribution."""
    y = rng.choice(means.shape[0], size=n, p=prior)
    x = means[y] + rng.normal(size=(n, means.shape[1]))
    loglik = -0.5 * ((x[:, None, :] - means[None]) ** 2).sum(-1)
    return loglik + np.log(prior), y


def test_doubly_robust_right_prior_or_calibrated_model_suffices():
    rng = np.random.default_rng(11)
    C = 6
    means = rng.normal(scale=1.5, size=(C, 2))
    s = 0.5 ** np.arange(C)
    s /= s.sum()
    # truth: per-class accuracy of argmax(loglik + log s) on many images of each class
    big_z, big_y = gaussian_sample(300_000, np.full(C, 1 / C), means, rng)
    big_pred = (big_z - np.log(1 / C) + np.log(s)).argmax(1)
    truth = np.mean([(big_pred[big_y == k] == k).mean() for k in range(C)])
    z, y = gaussian_sample(20_000, s, means, rng)

    def est(prior, temperature):
        rows = R.estimate_target_accuracy(z, y, prior, temperature=temperature, n_resamples=20)
        return {r["estimator"]: r["estimate"] for r in rows}

    wrong_prior = est(np.full(C, 1 / C), 1.0)          # weights wrong, outcome model calibrated
    assert abs(wrong_prior["ipw"] - truth) > 0.1 and abs(wrong_prior["snipw"] - truth) > 0.1
    assert abs(wrong_prior["dr"] - truth) < 0.015
    bad_model = est(s, 4.0)                             # weights right, outcome model far off
    for e in ("ipw", "snipw", "dr"):
        assert abs(bad_model[e] - truth) < 0.015, e
    assert abs(bad_model["naive"] - truth) > 0.1


def test_inputs_rows_and_determinism():
    rng = np.random.default_rng(5)
    C = 5
    y = np.repeat(np.arange(C), [40, 30, 20, 10, 5])
    z = synth_logits(rng.random(y.size) < 0.7, y, C, rng)
    prior = np.array([40, 30, 20, 10, 5.0])
    with pytest.raises(ValueError, match="recover"):
        R.estimate_target_accuracy(z, y, [40, 30, 20, 10, 0])
    with pytest.raises(ValueError, match="5 classes"):
        R.estimate_target_accuracy(z, y, prior[:4])
    with pytest.raises(ValueError, match="do not match"):
        R.estimate_target_accuracy(z, y[:-1], prior)
    rows = R.estimate_target_accuracy(z, y, prior, n_resamples=300, seed=4)
    assert rows == R.estimate_target_accuracy(z, y, prior, n_resamples=300, seed=4)
    assert [r["estimator"] for r in rows] == list(R.ESTIMATORS)
    for r in rows:
        assert set(r) == {"estimator", "target", "estimate", "ci_lo", "ci_hi"} and r["target"] == "balanced_acc"
        assert r["ci_lo"] <= r["estimate"] <= r["ci_hi"]
    other = R.estimate_target_accuracy(z, y, prior, target_prior=[1, 1, 1, 1, 4], n_resamples=20)
    assert {r["target"] for r in other} == {"target_acc"}
    groups = R.estimate_target_accuracy(z, y, prior, train_counts=[500, 500, 500, 500, 500], n_resamples=20)
    assert {r["target"] for r in groups} == {"balanced_acc", "many"}       # no medium / few class


# --------------------------------------------------------------------------- coverage (item 5)

@pytest.mark.parametrize("design", ["iid labels, known prior", "fixed class counts"])
def test_reweighted_intervals_cover_the_uniform_accuracy(design, capsys):
    """300 label-shifted samples (forward-like prior 0.7^k over 10 classes, n = 2000) of a classifier
    with known per-class accuracy; 95% intervals (400 resamples) of the balanced accuracy should
    contain mean_k p_k ~95% of the time. With i.i.d. labels the class counts are noise, so the
    resampling is i.i.d.; with counts fixed by design it is stratified."""
    rng = np.random.default_rng(123 if design.startswith("iid") else 321)
    C, n, reps = 10, 2000, 300
    s = 0.7 ** np.arange(C)
    s /= s.sum()
    p = np.linspace(0.9, 0.5, C)
    fixed_y = np.repeat(np.arange(C), np.round(n * s).astype(int))
    hits = {e: 0 for e in ("ipw", "snipw", "dr")}
    for _ in range(reps):
        iid = design.startswith("iid")
        y = rng.choice(C, size=n, p=s) if iid else fixed_y
        z = synth_logits(rng.random(y.size) < p[y], y, C, rng)
        rows = R.estimate_target_accuracy(z, y, s if iid else np.bincount(y, minlength=C), temperature=1.5,
                                          n_resamples=400, seed=int(rng.integers(2**31)), stratified=not iid)
        for r in rows:
            if r["estimator"] in hits:
                hits[r["estimator"]] += r["ci_lo"] <= p.mean() <= r["ci_hi"]
    cover = {e: h / reps for e, h in hits.items()}
    with capsys.disabled():
        print(f"\n[item 5, {design}] coverage of nominal 95% intervals over {reps} samples: "
              + ", ".join(f"{e} {v:.3f}" for e, v in cover.items()))
    for e, v in cover.items():
        assert 0.90 <= v <= 0.98, (e, v)


def test_em_estimated_sample_prior_is_reestimated_on_each_resample():
    """em_calibration: the point estimate is the one with EM's prior given as known; the interval
    re-runs EM on every resample, so it differs from the fixed-prior one."""
    from ltlab.evaluation import calibrated_em as CE

    rng = np.random.default_rng(5)
    C = 6
    y = rng.choice(C, size=1500, p=np.array([0.4, 0.25, 0.15, 0.1, 0.06, 0.04]))
    z = synth_logits(rng.random(y.size) < np.linspace(0.9, 0.5, C)[y], y, C, rng)
    cal = CE.fit_calibration("none", model_prior=np.ones(C))
    q = CE.estimate_prior(z, cal).prior
    fixed = table(R.estimate_target_accuracy(z, y, q, n_resamples=200, stratified=False))
    est = table(R.estimate_target_accuracy(z, y, None, n_resamples=200, stratified=False, em_calibration=cal))
    for e in ("ipw", "snipw", "dr"):
        assert est[e, "balanced_acc"]["estimate"] == pytest.approx(fixed[e, "balanced_acc"]["estimate"], abs=1e-12)
        assert est[e, "balanced_acc"]["ci_lo"] != fixed[e, "balanced_acc"]["ci_lo"]
    with pytest.raises(ValueError, match="not both"):
        R.estimate_target_accuracy(z, y, q, em_calibration=cal)


def test_val_resamples_refit_the_calibration_and_widen_the_em_interval():
    """val_logits / val_labels: the EM calibration is refitted on val resamples, so the interval
    adds the calibration's noise to the test sample's (wider, same point estimate); refused
    without em_calibration; every interval lies in [0, 1]."""
    from ltlab.evaluation import calibrated_em as CE

    rng = np.random.default_rng(8)
    C = 5
    prior = np.array([0.4, 0.3, 0.15, 0.1, 0.05])
    acc = np.linspace(0.9, 0.5, C)
    y = rng.choice(C, size=1500, p=prior)
    z = synth_logits(rng.random(y.size) < acc[y], y, C, rng)
    yv = np.repeat(np.arange(C), 12)                       # a small balanced val split
    zv = synth_logits(rng.random(yv.size) < acc[yv], yv, C, rng)
    cal = CE.fit_calibration("ts", zv, yv, np.ones(C))
    args = dict(n_resamples=300, stratified=False, em_calibration=cal, seed=3)
    fixed = table(R.estimate_target_accuracy(z, y, None, **args))
    refit = table(R.estimate_target_accuracy(z, y, None, val_logits=zv, val_labels=yv, **args))
    for e in ("ipw", "snipw", "dr"):
        f, r = fixed[e, "balanced_acc"], refit[e, "balanced_acc"]
        assert r["estimate"] == pytest.approx(f["estimate"], abs=1e-12)
        assert r["ci_hi"] - r["ci_lo"] > f["ci_hi"] - f["ci_lo"]
        assert 0.0 <= r["ci_lo"] <= r["ci_hi"] <= 1.0
    with pytest.raises(ValueError, match="em_calibration"):
        R.estimate_target_accuracy(z, y, prior, val_logits=zv, val_labels=yv)
    with pytest.raises(ValueError, match="without val_labels"):
        R.estimate_target_accuracy(z, y, None, val_logits=zv, **args)


def test_empirical_prior_is_the_poststratified_estimate_resampled():
    """sample_prior='empirical': the sample's label frequencies, taken again on every resample; the
    three estimators then equal sum_k t(k) * (class k's sample accuracy), computed here by hand."""
    rng = np.random.default_rng(11)
    C = 4
    y = rng.choice(C, size=800, p=[0.5, 0.3, 0.15, 0.05])
    z = synth_logits(rng.random(y.size) < np.array([0.9, 0.8, 0.6, 0.4])[y], y, C, rng)
    correct = z.argmax(1) == y
    by_hand = np.mean([correct[y == k].mean() for k in range(C)])
    rows = table(R.estimate_target_accuracy(z, y, "empirical", n_resamples=300, stratified=False, seed=2))
    fixed = table(R.estimate_target_accuracy(z, y, np.bincount(y, minlength=C), n_resamples=300,
                                             stratified=False, seed=2))
    for e in ("ipw", "snipw", "dr"):
        r = rows[e, "balanced_acc"]
        assert r["estimate"] == pytest.approx(by_hand, abs=1e-12)
        assert r["ci_lo"] < by_hand < r["ci_hi"]
        # the frequencies re-taken per resample: not the interval of the fixed-frequency weights
        assert (r["ci_lo"], r["ci_hi"]) != (fixed[e, "balanced_acc"]["ci_lo"], fixed[e, "balanced_acc"]["ci_hi"])
    with pytest.raises(ValueError, match="empirical"):
        R.estimate_target_accuracy(z, y, "frequencies")
