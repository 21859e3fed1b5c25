"""Test-time label shift: BalPoE/SADE subsets, list-file subsets, accuracy with the test prior."""
import gzip

import numpy as np
import pytest
from conftest import SHARED

from ltlab.evaluation import metrics as M
from ltlab.evaluation import posthoc, shift
from ltlab.evaluation.shift import (
    SHIFTS,
    list_shift_subsets,
    model_prior_counts,
    parse_shift,
    read_split_list,
    shift_counts,
    shift_subset,
    shift_table,
)

SPLITS = SHARED / "data" / "splits"


def _cifar100_test_labels(seed=1):
    # 100 per class in a scrambled order, like a real test split (not sorted by class)
    return np.random.default_rng(seed).permutation(np.repeat(np.arange(100), 100))


# ------------------------------------------------------------------ counts / subsets

def test_cifar100_counts_match_the_published_protocol():
    fwd50 = shift_counts(100, 100, 50, "forward")
    assert sum(fwd50) == 2486 and fwd50[0] == 100 and fwd50[-1] == 2
    assert sum(shift_counts(100, 100, 2, "forward")) == 7166
    assert shift_counts(100, 100, 50, "backward") == fwd50[::-1]
    assert shift_counts(100, 100, 50, "uniform") == [100] * 100
    # the same numbers as SADE's literal imb_factor 0.02 (1/50 is that very double)
    assert fwd50 == [int(100.0 * 0.02 ** (i / 99.0)) for i in range(100)]
    with pytest.raises(ValueError, match="direction"):
        shift_counts(100, 100, 50, "sideways")


def test_shift_subset_sizes_and_per_class_counts():
    y = _cifar100_test_labels()
    fwd = shift_subset(y, "forward", 50)
    assert len(fwd) == 2486 and len(np.unique(fwd)) == 2486
    assert np.bincount(y[fwd], minlength=100).tolist() == shift_counts(100, 100, 50, "forward")
    assert len(shift_subset(y, "forward", 2)) == 7166
    bwd = shift_subset(y, "backward", 50)
    assert np.bincount(y[bwd], minlength=100).tolist() == shift_counts(100, 100, 50, "forward")[::-1]
    uni = shift_subset(y, "uniform")
    assert sorted(uni.tolist()) == list(range(len(y)))


def test_shift_subset_follows_the_ldam_sade_rng_order():
    """np.random.seed(0), then for each class in label order shuffle its indices and keep the head."""
    y = _cifar100_test_labels()
    state = np.random.get_state()
    try:
        np.random.seed(0)
        ref = []
        for c, n in enumerate(shift_counts(100, 100, 10, "backward")):
            idx = np.where(y == c)[0]
            np.random.shuffle(idx)
            ref.append(idx[:n])
    finally:
        np.random.set_state(state)
    np.testing.assert_array_equal(shift_subset(y, "backward", 10, seed=0), np.concatenate(ref))
    assert not np.array_equal(shift_subset(y, "backward", 10, seed=1), np.concatenate(ref))


def test_parse_shift_and_order():
    assert SHIFTS[0] == "forward50" and SHIFTS[5] == "uniform" and SHIFTS[-1] == "backward50"
    assert len(SHIFTS) == 11
    assert parse_shift("backward25") == ("backward", 25.0)
    assert parse_shift("uniform") == ("uniform", 1.0)
    with pytest.raises(ValueError, match="forwardR"):
        parse_shift("fwd50")


def test_shift_subset_needs_every_class():
    with pytest.raises(ValueError, match="no test image"):
        shift_subset(np.array([0, 0, 2, 2]), "forward", 2, num_classes=3)


# ------------------------------------------------------------------ the table

def _calibrated_model(c=10, n_test_per_class=200, d=6, seed=0):
    """Gaussian classes, logits = log p(x|y) + log pi: the exact training-prior posterior."""
    rng = np.random.default_rng(seed)
    counts = np.array([int(500 * 0.01 ** (i / (c - 1))) for i in range(c)])
    mu = rng.normal(scale=1.2, size=(c, d))
    y = np.repeat(np.arange(c), n_test_per_class)
    x = mu[y] + rng.normal(size=(len(y), d))
    loglik = -0.5 * ((x[:, None, :] - mu[None]) ** 2).sum(-1)
    return loglik + np.log(counts / counts.sum()), y, counts


def test_known_prior_beats_no_prior_under_strong_shift():
    logits, y, counts = _calibrated_model()
    t = shift_table(logits, y, counts)
    assert list(t.index) == SHIFTS and t.index.name == "test distribution"
    assert {"n", "none", "known", "em", "none_many", "known_few", "em_medium", "em_tv", "em_iter"} <= set(t.columns)
    assert t.loc["uniform", "n"] == len(y)
    # backward50 puts the mass on the training tail: the train-prior argmax is badly wrong
    assert t.loc["backward50", "known"] > t.loc["backward50", "none"] + 0.10
    assert t.loc["backward50", "em"] > t.loc["backward50", "none"] + 0.05
    assert t.loc["backward50", "em_tv"] < 0.25
    # forward50 resembles training: the correction changes little
    assert abs(t.loc["forward50", "known"] - t.loc["forward50", "none"]) < 0.05
    # many/medium/few are class means by training counts: here classes 0-2 many, 3-6 medium, 7-9 few
    sub = shift_subset(y, "uniform")
    pred = logits[sub].argmax(1)
    few = [np.mean(pred[y[sub] == k] == k) for k in range(7, 10)]
    assert t.loc["uniform", "none_few"] == pytest.approx(np.mean(few))


def test_table_with_given_subsets_and_source_prior():
    logits, y, counts = _calibrated_model()
    subsets = {"all": np.arange(len(y)), "head": np.flatnonzero(y < 3)}
    t = shift_table(logits, y, counts, subsets=subsets, em=False)
    assert list(t.index) == ["all", "head"] and "em" not in t
    assert t.loc["head", "n"] == 600 and np.isnan(t.loc["head", "none_few"])
    # a logit prior equal to the true test prior leaves the predictions unchanged
    balanced_logits = logits - np.log(counts / counts.sum())
    t2 = shift_table(balanced_logits, y, counts, shifts=["uniform"], source_counts=np.ones(10), em=False)
    assert t2.loc["uniform", "known"] == t2.loc["uniform", "none"]


def test_known_prior_reweights_the_calibrated_posteriors():
    """Hand case, two classes, q = (0.9, 0.1), source uniform. Raw logits (0, 3) at T = 2: on the
    raw scale 0 + log 0.9 < 3 + log 0.1, so class 1; Bayes' rule on softmax(z / 2) compares
    log 0.9 = -0.11 with 1.5 + log 0.1 = -0.80, so class 0 (the label). The known column follows
    the calibration EM uses; without one it stays on the raw logits."""
    from ltlab.evaluation import calibrated_em as CE
    logits = np.array([[0.0, 3.0]] * 9 + [[0.0, 9.0]])
    y = np.array([0] * 9 + [1])
    cal = CE.Calibration("ts", 2.0, np.zeros(2), np.array([0.5, 0.5]))
    subsets = {"all": np.arange(10)}
    raw = shift_table(logits, y, np.ones(2), subsets=subsets, em=False)
    cald = shift_table(logits, y, np.ones(2), subsets=subsets, calibration=cal, em=False)
    assert raw.loc["all", "known"] == pytest.approx(0.1)     # only the (0, 9) image is right
    assert cald.loc["all", "known"] == pytest.approx(1.0)
    assert cald.loc["all", "none"] == raw.loc["all", "none"] == pytest.approx(0.1)
    # a bias is part of the posteriors: +1 on class 1 turns (0, 3) into 1.5 + 1 + log 0.1 = 0.20 > -0.11
    biased = CE.Calibration("bcts", 2.0, np.array([0.0, 1.0]), np.array([0.5, 0.5]))
    t = shift_table(logits, y, np.ones(2), subsets=subsets, calibration=biased, em=False)
    assert t.loc["all", "known"] == pytest.approx(0.1)


def test_model_prior_counts():
    n = np.array([400.0, 100.0, 25.0])
    np.testing.assert_array_equal(model_prior_counts({"method": "ce"}, n), n)
    np.testing.assert_array_equal(model_prior_counts({"method": "balanced_softmax"}, n), np.ones(3))
    np.testing.assert_allclose(model_prior_counts({"method": "logit_adjust", "extra": {"la_tau": 0.5}}, n),
                               np.sqrt(n))
    np.testing.assert_array_equal(model_prior_counts({"method": "crt", "sampler": "class_balanced"}, n), np.ones(3))
    np.testing.assert_allclose(model_prior_counts({"method": "balpoe"}, n, {"balpoe_taus": np.array([0., 1, 2])}),
                               np.ones(3))
    np.testing.assert_allclose(model_prior_counts({"method": "balpoe"}, n, {"balpoe_taus": np.array([0., .5, 1])}),
                               np.sqrt(n))
    # post-hoc adjustment by tau leaves pi^(1 - tau) in a CE stage one's logits
    np.testing.assert_allclose(model_prior_counts({"method": "la_posthoc"}, n, {"la_tau": np.array(0.5)}), np.sqrt(n))
    np.testing.assert_allclose(model_prior_counts({"method": "la_posthoc"}, n, {"la_tau": np.array(1.5)}), n ** -0.5)
    # the correction with the source prior is the posthoc one
    logits = np.random.default_rng(0).normal(size=(5, 3))
    q = np.array([0.2, 0.3, 0.5])
    np.testing.assert_allclose(posthoc.prior_correct(logits, np.ones(3), q), logits + np.log(q) - np.log(1 / 3))


# ------------------------------------------------------------------ list files

def _write_list(path, rows):
    with gzip.open(path, "wt") as f:
        f.writelines(f"{p} {y}\n" for p, y in rows)


def test_read_split_list_and_matching(tmp_path):
    test = [(f"val/c{y}/img{i}.jpg", y) for i, y in enumerate([0, 0, 1, 1, 2, 2])]
    _write_list(tmp_path / "test.txt.gz", test)
    paths, labels = read_split_list(tmp_path / "test.txt.gz")
    assert paths[2] == "val/c1/img2.jpg" and labels.tolist() == [0, 0, 1, 1, 2, 2]
    d = tmp_path / "ImageNet_LT"
    d.mkdir()
    _write_list(d / "ImageNet_LT_forward2.txt.gz", [test[0], test[1], test[2]])
    # renamed folders: matched by file name when the relative path differs
    _write_list(d / "ImageNet_LT_backward2.txt.gz", [("other/img5.jpg", 2), ("other/img4.jpg", 2)])
    sub = list_shift_subsets(tmp_path / "test.txt.gz", tmp_path, "imagenet_lt")
    assert list(sub) == ["forward2", "backward2"]
    assert sub["forward2"].tolist() == [0, 1, 2] and sub["backward2"].tolist() == [5, 4]
    _write_list(d / "ImageNet_LT_uniform.txt.gz", [("val/c0/img0.jpg", 1)])
    with pytest.raises(ValueError, match="labels disagree"):
        list_shift_subsets(tmp_path / "test.txt.gz", tmp_path, "imagenet_lt")
    (tmp_path / "bad.txt").write_text("a b c\n")
    with pytest.raises(ValueError, match="expected 'relative/path label'"):
        read_split_list(tmp_path / "bad.txt")


@pytest.mark.skipif(not (SPLITS / "ImageNet_LT").is_dir(), reason="split lists absent")
def test_imagenet_lt_lists_map_to_the_test_split():
    test_paths, test_labels = read_split_list(SPLITS / "ImageNet_LT" / "ImageNet_LT_test.txt.gz")
    sub = list_shift_subsets(test_paths, SPLITS, "imagenet_lt", test_labels=test_labels)
    assert list(sub) == SHIFTS
    assert len(sub["forward50"]) == 12058 and len(sub["uniform"]) == 50000
    for r in (2, 5, 10, 25, 50):
        assert len(sub[f"forward{r}"]) == len(sub[f"backward{r}"])
    c = np.bincount(test_labels[sub["forward50"]], minlength=1000)
    assert c[0] > c[-1] and len(np.unique(sub["forward50"])) == 12058


@pytest.mark.skipif(not (SPLITS / "Places_LT").is_dir(), reason="split lists absent")
def test_places_lt_v1_test_list_matches_v2_shift_lists_by_file_name():
    sub = list_shift_subsets(SPLITS / "Places_LT" / "Places_LT_test.txt.gz", SPLITS, "places_lt")
    n_lines = {name: sum(1 for _ in gzip.open(SPLITS / "Places_LT_v2" / f"Places_LT_{name}.txt.gz", "rt"))
               for name in ("forward50", "backward2", "uniform")}
    assert {k: len(sub[k]) for k in n_lines} == n_lines
    assert n_lines["uniform"] == 36500


@pytest.mark.skipif(not (SPLITS / "iNaturalist18").is_dir(), reason="split lists absent")
def test_inat_has_ratios_2_and_3():
    sub = list_shift_subsets(SPLITS / "iNaturalist18" / "iNaturalist18_val.txt.gz", SPLITS, "inat18")
    assert list(sub) == ["forward3", "forward2", "uniform", "backward2", "backward3"]
    assert len(sub["uniform"]) == 24426


def test_subsets_for_run():
    assert shift.subsets_for_run({"dataset": "demo"}, np.arange(10)) is None


@pytest.mark.skipif(not (SPLITS / "iNaturalist18").is_dir(), reason="split lists absent")
def test_subsets_for_run_with_a_given_test_list():
    test_list = SPLITS / "iNaturalist18" / "iNaturalist18_val.txt.gz"
    _, labels = read_split_list(test_list)
    sub = shift.subsets_for_run({"dataset": "inat18"}, labels, splits_dir=SPLITS, test_list=str(test_list))
    # iNat18 val holds 3 images of each of 8,142 classes; forward2 keeps int(3 * 0.5^(c/8141)) of class c
    assert np.bincount(labels).tolist() == [3] * 8142
    assert len(sub["forward2"]) == sum(int(3 * (1 / 2) ** (c / 8141)) for c in range(8142)) == 12906


def test_source_prior_fits_the_val_split_where_there_is_one():
    """'auto' is the val fit (calibration_fit.fit_prior_power) when a val split is given, the rule
    by method without one; 'val' without one, or an unknown source, is an error."""
    from ltlab.evaluation import calibration_fit as CF
    from ltlab.evaluation.shift import source_prior
    rng = np.random.default_rng(5)
    counts = np.array([300.0, 100.0, 30.0, 10.0])
    s = rng.normal(scale=2.0, size=(4000, 4))
    yv = (M.softmax(s).cumsum(1) > rng.random((len(s), 1))).argmax(1)   # softmax(s): the balanced posterior
    zv = 1.5 * (s + 0.2 * np.log(counts / counts.sum()))       # TDE-like: far less than the training prior
    test = {"train_counts": counts}
    val = {"logits": zv, "labels": yv}
    src, how = source_prior({"method": "tde"}, test, val)
    t, g, _ = CF.fit_prior_power(zv, yv, counts)
    np.testing.assert_allclose(src, counts ** (t * g))                # the raw logits carry pi^(T gamma)
    assert t == pytest.approx(1.5, rel=0.1) and g == pytest.approx(0.2, abs=0.1)
    assert "fitted on the val split" in how and f"pi^{t * g:.2f} on the raw logits" in how and f"{g:.2f}" in how
    np.testing.assert_allclose(shift.calibrated_source_prior(test, val), counts ** g)
    # dividing pi^(T gamma) out of the raw logits leaves T times the balanced log-likelihoods
    np.testing.assert_allclose(M.softmax(zv - np.log(src)), M.softmax(1.5 * s), atol=0.05)
    cal = shift.run_calibration({"method": "tde"}, test, val, "ts")
    np.testing.assert_allclose(cal.source_prior, posthoc.class_prior(counts ** g))
    np.testing.assert_allclose(source_prior({"method": "tde"}, test, val, "val")[0], src)
    src_m, how_m = source_prior({"method": "tde"}, test, None)
    np.testing.assert_array_equal(src_m, counts)
    assert "by the method's objective" in how_m and "no val split" in how_m
    np.testing.assert_array_equal(source_prior({"method": "tde"}, test, val, "method")[0], counts)
    np.testing.assert_array_equal(source_prior({"method": "ce"}, test, val, "uniform")[0], np.ones(4))
    np.testing.assert_array_equal(source_prior({"method": "ce"}, test, val, "train")[0], counts)
    with pytest.raises(ValueError, match="needs the run's val split"):
        source_prior({"method": "ce"}, test, None, "val")
    with pytest.raises(ValueError, match="source prior 'sideways'"):
        source_prior({"method": "ce"}, test, val, "sideways")


def test_auto_calibration_refits_the_source_prior_inside_its_folds(monkeypatch):
    """run_calibration 'auto' with the val-fitted source hands the training counts to the CV choice
    (calibration_cv.fold_prior refits gamma per fold); with given source counts, or another
    method, nothing is refitted per fold."""
    from ltlab.evaluation import calibrated_em as CE
    seen = []
    real = CE.fit_calibration

    def spy(method, *args, **kw):
        seen.append((method, kw.get("source_fit")))
        return real(method, *args, **kw)
    monkeypatch.setattr(CE, "fit_calibration", spy)
    logits, y, counts = _calibrated_model()
    test, val = {"train_counts": counts}, {"logits": logits[::5], "labels": y[::5]}
    cal = shift.run_calibration({"method": "ce"}, test, val, "auto")
    assert seen[0][0] == "auto" and np.array_equal(seen[0][1], counts)
    assert cal.info.get("cv_nll") and CE.SOURCE_FIT in cal.info
    seen.clear()
    shift.run_calibration({"method": "ce"}, test, val, "auto", source_counts=counts)
    shift.run_calibration({"method": "ce"}, test, val, "ts")
    assert [m for m, _ in seen] == ["auto", "ts"] and all(s is None for _, s in seen)
