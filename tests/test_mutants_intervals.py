"""Edges of ltlab.evaluation.intervals and .paired that their main tests left open (found by
mutation testing, experiments/mutants/README.md): bin edges, default sizes, seeded resamples that
must not change between versions, metrics asked for one at a time, zero-weight classes and tie
runs, integer overflow at ImageNet scale, and the messages of bad input. Each value comes from
the definition, a hand computation or sklearn."""
import contextlib
import warnings

import numpy as np
import pytest
from conftest import synth_logits
from sklearn.metrics import roc_auc_score

from ltlab.evaluation import intervals as I
from ltlab.evaluation import paired as P


@pytest.fixture
def small():
    rng = np.random.default_rng(5)
    C = 6
    y = np.repeat(np.arange(C), [30, 25, 20, 15, 10, 6])
    z = synth_logits(rng.random(y.size) < 0.7, y, C, rng)
    tc = np.array([400, 150, 60, 30, 12, 5])   # two many, two medium, two few classes
    return z, y, tc


@contextlib.contextmanager
def no_warnings():
    """numpy's 'Mean of empty slice' and 0/0 warnings become errors: the code must not divide by 0."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


# --------------------------------------------------------------------------- resampling

def test_resamples_of_a_seed_are_fixed_across_versions():
    """summary.json records ci_seed so that anyone can recompute the interval: the resamples of a
    seed are part of the contract (numpy's PCG64 stream, int32 draws, stable class order)."""
    idx = I.stratified_bootstrap_indices([2, 0, 1, 0, 2, 2, 1], n_resamples=3, seed=7)
    assert idx.dtype == np.int32
    assert idx.tolist() == [[5, 3, 6, 3, 0, 4, 6], [5, 3, 6, 3, 0, 5, 2], [0, 1, 2, 1, 4, 5, 6]]
    lay = I._Layout(np.array([2, 0, 1, 0, 2, 2, 1]))
    chunks = [p.tolist() for p in lay.position_chunks(2, 7, stratified=False)]
    assert chunks == [[[6, 4, 4, 6, 4, 5, 5], [1, 0, 2, 1, 6, 6, 0]]]
    # past numpy's insertion-sort size a plain argsort reorders a class's images: a stable one keeps them
    idx = I.stratified_bootstrap_indices(np.arange(200) % 3, n_resamples=4, seed=11)
    assert idx[:, :5].tolist() == [[15, 103, 26, 15, 82], [99, 82, 194, 174, 106], [138, 79, 182, 192, 115],
                                   [120, 49, 110, 9, 94]]
    assert int((idx.astype(np.int64) * np.arange(1, 201)).sum()) == 7817408


def test_default_sizes_and_seed_are_the_documented_ones(small):
    z, y, tc = small
    assert I.stratified_bootstrap_indices(y).shape == (1000, y.size)
    assert np.array_equal(I.stratified_bootstrap_indices(y, 20), I.stratified_bootstrap_indices(y, 20, seed=0))
    assert I.bootstrap_cis(z, y, tc) == I.bootstrap_cis(z, y, tc, n_resamples=1000, seed=0)
    assert I.summary_fields(z, y, tc)["ci_resamples"] == 1000
    out = P.paired_bootstrap(z, z[:, ::-1], y, tc)               # another run: classes reversed
    assert (out["n_resamples"], out["seed"], out["level"]) == (2000, 0, 0.95)


def test_blocks_of_resamples_add_up_to_what_was_asked(monkeypatch):
    """With N larger than the block size allows, the resamples come in several blocks: all of them,
    no more, stratified or not."""
    y = np.repeat(np.arange(3), [4, 3, 3])
    monkeypatch.setattr(I, "CHUNK_ELEMENTS", 25)          # 2 rows a block at N = 10
    lay = I._Layout(y)
    for stratified in (True, False):
        blocks = list(lay.position_chunks(7, 1, stratified=stratified))
        assert [b.shape for b in blocks] == [(2, 10)] * 3 + [(1, 10)]
        assert all(b.dtype == np.int32 for b in blocks)
    assert I.stratified_bootstrap_indices(y, 7, seed=1).shape == (7, 10)
    monkeypatch.setattr(I, "CHUNK_ELEMENTS", 5)           # fewer elements than one row: still a row a block
    assert [b.shape for b in lay.position_chunks(3, 1)] == [(1, 10)] * 3


def test_unstratified_draws_cover_every_image_uniformly():
    lay = I._Layout(np.repeat(np.arange(2), [3, 2]))
    pos = np.concatenate(list(lay.position_chunks(4000, 2, stratified=False)))
    assert pos.shape == (4000, 5) and pos.min() == 0 and pos.max() == 4
    freq = np.bincount(pos.ravel(), minlength=5) / pos.size
    assert np.allclose(freq, 0.2, atol=0.01)              # 20,000 draws: sd of a frequency 0.003
    counts = I.resample_counts(pos, 5)
    assert counts.dtype == np.float32 and (counts.sum(axis=1) == 5).all()
    assert counts[0].tolist() == np.bincount(pos[0], minlength=5).tolist()


def test_one_resample_and_one_image_are_allowed():
    z = np.array([[2.0, 0.0]])
    assert I.point_estimates(z, [0])["top1"] == 1.0
    assert I.bootstrap_cis(z, [0], n_resamples=1)["top1"] == [1.0, 1.0]
    with pytest.raises(ValueError, match="^n_resamples must be >= 1$"):
        I.bootstrap_cis(z, [0], n_resamples=0)
    with pytest.raises(ValueError, match="^no test images$"):
        I.bootstrap_cis(np.zeros((0, 2)), [])


# --------------------------------------------------------------------------- per-image quantities

def test_confidence_bins_are_right_closed_from_zero():
    """Bin m is ((m-1)/15, m/15], confidence 0 in the first (Guo et al. 2017)."""
    edges = np.linspace(0.0, 1.0, 16)
    conf = np.array([0.0, 0.01, edges[3], edges[3] + 1e-9, 0.5, 1.0])
    correct = np.array([1.0, 1.0, 1.0, 1.0, 1.0, 0.0])  # correct - conf is never 0
    f = I._bin_features(conf, correct)
    assert f.shape == (6, 15)
    assert np.argmax(np.abs(f), axis=1).tolist() == [0, 0, 2, 3, 7, 14]
    assert np.allclose(f.sum(axis=1), correct - conf)


def test_softmax_survives_large_and_very_different_logits():
    z = np.array([[1000.0, 998.0, 990.0], [-1000.0, -1003.0, -1001.0], [0.0, 1.0, 2.0]])
    p = I._softmax_inplace(z.copy())
    e = np.exp(np.array([[0.0, -2.0, -10.0], [0.0, -3.0, -1.0], [-2.0, -1.0, 0.0]]))
    assert np.allclose(p, e / e.sum(axis=1, keepdims=True))
    est = I.point_estimates(z, [0, 1, 2])
    assert est["top1"] == pytest.approx(2 / 3) and np.isfinite(est["ece"])


def test_shot_group_boundaries():
    """many: more than 100 training images; few: fewer than 20; 20 and 100 themselves medium."""
    assert I.shot_groups([101, 100, 20, 19, 1000, 0]).tolist() == [0, 1, 1, 2, 0, 2]
    assert I.shot_groups([101, 100, 20, 19], many=50, few=100).tolist() == [0, 0, 2, 2]


def test_groups_override_train_counts(small):
    z, y, tc = small
    groups = np.array([2, 2, 1, 1, 0, 0])              # the reverse of what tc gives
    a = I.point_estimates(z, y, tc, groups=groups)
    b = I.point_estimates(z, y, groups=groups)
    c = I.point_estimates(z, y, tc)
    assert a == b and a["many"] != c["many"]
    assert I.bootstrap_cis(z, y, tc, groups=groups, n_resamples=50) == I.bootstrap_cis(z, y, groups=groups, n_resamples=50)


def test_summary_fields_are_bootstrap_cis_with_every_argument_passed(small):
    z, y, tc = small
    kw = dict(n_resamples=60, seed=3, level=0.8, temperature=1.7, groups=np.array([0, 0, 1, 1, 2, 2]))
    f = I.summary_fields(z, y, tc[::-1].copy(), **kw)
    cis = I.bootstrap_cis(z, y, tc[::-1].copy(), **kw)
    assert {k[:-3]: v for k, v in f.items() if k.endswith("_ci")} == cis
    assert f["ece_ts_ci"] is not None and f["ece_ts_ci"] != f["ece_ci"]
    assert (f["ci_level"], f["ci_resamples"], f["ci_seed"]) == (0.8, 60, 3)
    assert f["ci_method"] == "percentile bootstrap over test images, stratified by class"
    f2 = I.summary_fields(z, y, tc, n_resamples=60, seed=3)
    assert f2["many_ci"] == I.bootstrap_cis(z, y, tc, n_resamples=60, seed=3)["many"]
    assert f2["many_ci"] != I.bootstrap_cis(z, y, tc, n_resamples=60, seed=4)["many"]


def test_temperature_is_used_and_must_be_positive(small):
    z, y, tc = small
    with_t = I.bootstrap_cis(z, y, tc, n_resamples=40, temperature=0.5)
    assert with_t["ece_ts"] is not None and with_t["ece_ts"] != with_t["ece"]
    assert I.point_estimates(z, y, temperature=0.5)["ece_ts"] is not None
    for t in (0.0, -1.0):
        with pytest.raises(ValueError, match=f"^temperature must be > 0, got {t}$"):
            I.bootstrap_cis(z, y, n_resamples=5, temperature=t)


# --------------------------------------------------------------------------- metrics, one at a time

@pytest.mark.parametrize("name", I.METRICS)
def test_each_metric_alone_equals_the_same_metric_among_all(small, name):
    z, y, tc = small
    lay = I._Layout(y)
    run = I._Run(z, lay, I.shot_groups(tc), temperature=1.3)
    W = I.resample_counts(next(lay.position_chunks(4, 0)), lay.n)
    alone = run.metrics(W, (name,))
    assert list(alone) == [name]
    assert np.allclose(alone[name], run.metrics(W)[name])


def test_a_class_with_zero_weight_is_left_out_of_the_class_means(small):
    """metrics(W) are the metrics of the test set W describes: a class none of whose images is in it
    does not exist there (balanced accuracy and the group means over the classes present)."""
    z, y, tc = small
    lay = I._Layout(y)
    run = I._Run(z, lay, I.shot_groups(tc))
    keep = y[lay.order] != 5                            # drop class 5 (few)
    W = keep[None, :].astype(np.float64)
    with no_warnings():
        got = run.metrics(W)
    ref = I.point_estimates(z[y != 5], y[y != 5], groups=I.shot_groups(tc))
    for k in ("top1", "balanced_acc", "many", "medium", "few", "ece", "auroc", "aurc"):
        assert got[k][0] == pytest.approx(ref[k]), k


def test_ranking_with_one_correct_or_one_wrong_image_and_with_one_outcome():
    z = np.array([[3.0, 0.0], [0.0, 1.0], [0.0, 2.0], [0.5, 0.0]])
    y = np.array([0, 0, 0, 0])                          # correct: images 0 and 3
    est = I.point_estimates(z[[0, 1, 2]], y[:3])        # one correct image
    ok, conf = np.array([1, 0, 0]), np.array([0.9526, 0.7311, 0.8808])
    assert est["auroc"] == pytest.approx(roc_auc_score(ok, conf))
    est = I.point_estimates(z[[0, 1, 3]], y[:3])        # one wrong image
    assert est["auroc"] == pytest.approx(roc_auc_score([1, 0, 1], [0.9526, 0.7311, 0.6225]))
    with no_warnings():
        for sel in ([0, 3], [1, 2]):                    # all correct / all wrong
            lay = I._Layout(y[sel])
            out = I._Run(z[sel], lay).metrics(np.ones((1, 2)))
            assert np.isnan(out["auroc"][0]) and np.isfinite(out["aurc"][0])


def test_a_tie_run_left_out_of_a_resample(small):
    """Rounded scores make tie runs; a resample that draws none of a run's images must give the
    metrics of the resampled test set, not 0/0."""
    z, y, _ = small
    z = np.round(z * 2) / 2                             # many ties in the MSP
    lay = I._Layout(y)
    run = I._Run(z, lay)
    assert run.blocks is not None
    W = np.ones((1, lay.n))
    top = run.score_order[-1]                           # the most confident image and its ties
    W[0, run.conf == run.conf[top]] = 0
    with no_warnings():
        got = run.metrics(W, ("auroc", "aurc"))
    keep = np.ones(y.size, dtype=bool)
    keep[lay.order[W[0] == 0]] = False
    ref = I.point_estimates(z[keep], y[keep])
    assert got["auroc"][0] == pytest.approx(ref["auroc"]) and got["aurc"][0] == pytest.approx(ref["aurc"])


@pytest.mark.parametrize("tied", [False, True])
def test_ranking_counts_do_not_overflow_at_imagenet_scale(tied):
    """Pair counts reach n^2 / 4: past int32 from about 93,000 images (ImageNet-LT and iNaturalist
    test sets are 50,000 and 30,000 and the weights of a resample go higher)."""
    n = 120_000
    rng = np.random.default_rng(0)
    y = np.zeros(n, dtype=np.int64)
    ok = np.arange(n) % 2 == 0
    margin = np.full(n, 1.0) if tied else rng.random(n) + ok
    z = np.stack([np.where(ok, margin, -margin), np.zeros(n)], axis=1)
    est = I.point_estimates(z, y)
    conf = np.exp(np.abs(margin)) / (1 + np.exp(np.abs(margin)))
    assert est["auroc"] == pytest.approx(roc_auc_score(ok, conf), abs=1e-12)
    if tied:
        assert est["aurc"] == pytest.approx(0.5)        # one tie run: the error rate at every depth


# --------------------------------------------------------------------------- percentile, levels, seeds

def test_percentile_of_nothing_is_none():
    assert I._percentile(None, 0.95) is None
    with no_warnings():
        assert I._percentile(np.array([np.nan, np.nan]), 0.95) is None
    assert I._percentile(np.array([np.nan, 1.0, 3.0]), 0.5) == [1.5, 2.5]


@pytest.mark.parametrize("level", [0.0, 1.0, 1.5, -0.1])
def test_level_outside_zero_one_is_refused(level):
    with pytest.raises(ValueError, match=rf"^level must be in \(0, 1\), got {level}$"):
        I.seed_summary([0.5, 0.6], level=level)


def test_seed_summary_text_in_percent_and_in_fractions():
    s = I.seed_summary([0.60, 0.62, 0.64])
    lo, hi = s["ci"]
    assert s["text"] == f"62.0 ± 2.0 (n = 3 seeds, 95% t-interval [{lo * 100:.1f}, {hi * 100:.1f}])"
    f = I.seed_summary([0.60, 0.62, 0.64], percent=False)
    assert f["text"] == f"0.6 ± 0.0 (n = 3 seeds, 95% t-interval [{lo:.1f}, {hi:.1f}])"
    assert I.seed_summary([1, 2])["mean"] == 1.5          # integers are values, not truncated
    with pytest.raises(ValueError, match="^seed_summary needs at least one value$"):
        I.seed_summary([])
    with pytest.raises(ValueError, match="^seed_summary got a non-finite value$"):
        I.seed_summary([0.5, np.nan])


def test_bad_labels_and_logits_are_named():
    z = np.zeros((3, 2))
    with pytest.raises(ValueError, match=r"^labels must be 1-d, got shape \(3, 1\)$"):
        I.point_estimates(z, [[0], [1], [0]])
    with pytest.raises(ValueError, match="^labels must be >= 0$"):
        I.point_estimates(z, [0, -1, 1])
    with pytest.raises(ValueError, match="^a label is >= num_classes=2$"):
        I._labels([0, 2], num_classes=2)
    assert I._labels([0, 1], num_classes=2).tolist() == [0, 1]
    with pytest.raises(ValueError, match="^a label is >= the number of logit columns 2$"):
        I.point_estimates(z, [0, 1, 2])
    with pytest.raises(ValueError, match="^a label is >= the number of logit columns 2$"):
        I.point_estimates(np.zeros((4, 2)), [0, 1, 3, 3])
    assert I.point_estimates(np.array([[0.0, 1.0]] * 3), [1, 1, 1])["top1"] == 1.0   # C - 1 is a label
    lay = I._Layout(np.array([0, 1, 0]))
    with pytest.raises(ValueError, match="^weight matrix does not match the run$"):
        I._Run(z, lay).metrics(np.ones((1, 4)))


# --------------------------------------------------------------------------- paired

def test_paired_bootstrap_without_a_few_shot_class(small):
    z, y, _ = small
    rng = np.random.default_rng(9)
    zb = synth_logits(rng.random(y.size) < 0.6, y, 6, rng)
    all_many = np.full(6, 500)
    with no_warnings():
        out = P.paired_bootstrap(z, zb, y, all_many, n_resamples=100, seed=2, level=0.8)
    assert out["few"] == dict(a=None, b=None, diff=None, ci=None, text="few-shot accuracy: not available for both runs")
    assert out["ece"]["diff"] is not None                # the metric after 'few' is still compared
    assert "80% CI" in out["top1"]["text"] and "80% CI" in out["ece"]["text"]
    assert (out["n_resamples"], out["level"], out["seed"]) == (100, 0.8, 2)
    groups = np.array([0, 0, 1, 1, 2, 2])
    with_groups = P.paired_bootstrap(z, zb, y, all_many, n_resamples=100, groups=groups)
    assert with_groups["few"]["diff"] is not None
    assert with_groups["few"] == P.paired_bootstrap(z, zb, y, n_resamples=100, groups=groups)["few"]


def test_paired_bootstrap_names_the_run_whose_logits_do_not_fit(small):
    z, y, tc = small
    for a, b, name in ((z[:-1], z, "logits_a"), (z, z[:-1], "logits_b")):
        with pytest.raises(ValueError, match=rf"^{name} has shape \({y.size - 1}, 6\) but labels has {y.size} "
                                             "entries: a paired comparison needs both runs on the same test images$"):
            P.paired_bootstrap(a, b, y, tc, n_resamples=5)


def test_verdict_units_and_missing_halves():
    assert P.verdict("x", 0.5, [0.2, 0.7]) == "x: A − B = +50.0 points, 95% CI [20.0, 70.0]: A is better on this test set"
    assert P.verdict("NLL", 0.5, [0.25, 0.75], unit="nats") == (
        "NLL: A − B = +0.5 nats, 95% CI [0.2, 0.8]: A is better on this test set")
    assert P.verdict("AUROC", 0.5, [0.25, 0.75], unit="").startswith("AUROC: A − B = +0.5, 95% CI [0.2, 0.8]: ")
    assert P.verdict("x", 0.1, None) == "x: not available for both runs"
    assert P.verdict("x", None, [0.0, 0.1]) == "x: not available for both runs"


def test_paired_seeds_edges():
    two = P.paired_seeds([0.70, 0.64], [0.60, 0.62], level=0.9, name="top-1")
    assert two["ci"] is not None and "90% CI" in two["text"] and two["text"].startswith("top-1: ")
    assert two["std_diff"] == pytest.approx(np.std([0.10, 0.02], ddof=1))
    lower = P.paired_seeds([0.05, 0.06, 0.07], [0.01, 0.01, 0.02], higher_is_better=False)
    assert lower["text"].startswith("metric: ") and lower["text"].endswith(
        "B is better over these 3 seeds (lower is better)")
    same = P.paired_seeds([0.75, 0.5], [0.5, 0.25])         # every seed 0.25 better: a point
    assert same["ci"] == [0.25, 0.25] and same["p_value"] == 0.0
    none = P.paired_seeds([0.7, 0.8], [0.7, 0.8])
    assert none["ci"] == [0.0, 0.0] and none["p_value"] == 1.0
    one = P.paired_seeds([0.7], [0.6])
    assert one["mean_diff"] == pytest.approx(0.1) and one["std_diff"] is None and one["p_value"] is None
    assert one["text"] == "metric: n = 1 matched seed (< 2): no interval over seeds"
    zero = P.paired_seeds({0: 0.7}, {1: 0.6})
    assert zero["mean_diff"] is None and zero["text"] == "metric: n = 0 matched seeds (< 2): no interval over seeds"
    with pytest.raises(ValueError, match="^paired_seeds got a non-finite value$"):
        P.paired_seeds([0.7, 0.8], [0.6, np.nan])
    with pytest.raises(ValueError, match="^paired_seeds got a non-finite value$"):
        P.paired_seeds([np.inf, 0.8], [0.6, 0.5])
    with pytest.raises(ValueError, match=r"^give both runs' values as \{seed: value\} dicts or both as sequences$"):
        P.paired_seeds({0: 0.7}, [0.6])
    with pytest.raises(ValueError, match="^2 values for A and 1 for B: pair them by seed$"):
        P.paired_seeds([0.7, 0.8], [0.6])
