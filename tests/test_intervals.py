"""ltlab.evaluation.intervals: stratified resampling, exact weighted metrics, percentile intervals
that cover, and the spread over seeds."""
import itertools

import numpy as np
import pytest
from conftest import softmax, synth_logits
from scipy import stats

from ltlab.evaluation import intervals as I


def ece_by_hand(probs, labels, n_bins=15):
    conf, pred = probs.max(axis=1), probs.argmax(axis=1)
    ok = (pred == labels).astype(float)
    total = 0.0
    for m in range(n_bins):
        lo, hi = m / n_bins, (m + 1) / n_bins
        in_bin = (conf > lo) & (conf <= hi) if m else (conf <= hi)
        if in_bin.any():
            total += in_bin.sum() / conf.size * abs(ok[in_bin].mean() - conf[in_bin].mean())
    return total


def aurc_by_hand(conf, ok):
    """(1/N) sum_k errors among the k most confident / k, no ties."""
    err = ~ok[np.argsort(-conf, kind="stable")]
    k = np.arange(1, conf.size + 1)
    return float(np.mean(np.cumsum(err) / k))


@pytest.fixture
def run():
    rng = np.random.default_rng(1)
    C = 12
    labels = np.repeat(np.arange(C), np.linspace(40, 8, C).astype(int))
    p = np.linspace(0.9, 0.4, C)[labels]
    z = synth_logits(rng.random(labels.size) < p, labels, C, rng)
    train_counts = np.round(400 * 0.02 ** (np.arange(C) / (C - 1))).astype(int)   # 400 .. 8
    return z, labels, train_counts


# --------------------------------------------------------------------------- resampling

def test_stratified_indices_keep_each_class_count_and_are_seeded(run):
    _, y, _ = run
    idx = I.stratified_bootstrap_indices(y, n_resamples=300, seed=3)
    assert idx.shape == (300, y.size) and idx.dtype == np.int32
    assert (y[idx] == y[None, :]).all()                       # column i always draws labels[i]'s class
    assert all((np.bincount(y[row], minlength=12) == np.bincount(y, minlength=12)).all() for row in idx)
    assert np.array_equal(idx, I.stratified_bootstrap_indices(y, n_resamples=300, seed=3))
    assert not np.array_equal(idx, I.stratified_bootstrap_indices(y, n_resamples=300, seed=4))
    # within a class every member is drawn about equally often
    members = np.flatnonzero(y == 0)
    freq = np.bincount(idx[:, y == 0].ravel(), minlength=y.size)[members] / (300 * members.size)
    assert np.allclose(freq, 1 / members.size, atol=0.35 / members.size)


def test_indices_are_the_resamples_bootstrap_cis_uses(run):
    z, y, tc = run
    idx = I.stratified_bootstrap_indices(y, n_resamples=400, seed=5)
    ok = softmax(z).argmax(axis=1) == y
    lo, hi = np.quantile(ok[idx].mean(axis=1), [0.025, 0.975])
    ci = I.bootstrap_cis(z, y, tc, n_resamples=400, seed=5)["top1"]
    assert ci == pytest.approx([lo, hi], abs=1e-12)


# --------------------------------------------------------------------------- point estimates

def test_point_estimates_match_the_plain_definitions(run):
    skm = pytest.importorskip("sklearn.metrics")
    z, y, tc = run
    p = softmax(z)
    pred, conf = p.argmax(axis=1), p.max(axis=1)
    ok = pred == y
    pe = I.point_estimates(z, y, tc, temperature=2.0)
    assert pe["top1"] == pytest.approx(ok.mean(), abs=1e-12)
    assert pe["balanced_acc"] == pytest.approx(skm.balanced_accuracy_score(y, pred), abs=1e-12)
    acc = np.array([ok[y == k].mean() for k in range(12)])
    groups = I.shot_groups(tc)
    for gi, g in enumerate(I.GROUPS):
        assert pe[g] == pytest.approx(acc[groups == gi].mean(), abs=1e-12)
    assert pe["ece"] == pytest.approx(ece_by_hand(p, y), abs=1e-12)
    assert pe["ece_ts"] == pytest.approx(ece_by_hand(softmax(z / 2.0), y), abs=1e-12)
    assert pe["auroc"] == pytest.approx(skm.roc_auc_score(ok, conf), abs=1e-12)
    assert pe["aurc"] == pytest.approx(aurc_by_hand(conf, ok), abs=1e-12)


def test_ties_auroc_is_sklearns_and_aurc_is_the_mean_over_tie_orders():
    skm = pytest.importorskip("sklearn.metrics")
    # 7 images, 3 classes; logits repeat so MSP has ties between right and wrong images
    z = np.array([[3, 0, 0], [3, 0, 0], [0, 2, 0], [0, 2, 0], [0, 0, 1], [1, 0, 0], [0, 2, 0.0]])
    y = np.array([0, 1, 1, 0, 2, 0, 2])
    conf = softmax(z).max(axis=1)
    ok = z.argmax(axis=1) == y
    pe = I.point_estimates(z, y)
    assert pe["auroc"] == pytest.approx(skm.roc_auc_score(ok, conf), abs=1e-12)
    # AURC with ties is its expectation over a random order of each tie run: enumerate them all
    areas = [aurc_by_hand(conf[list(perm)], ok[list(perm)])
             for perm in itertools.permutations(range(7))]   # stable sort: ties keep the permuted order
    assert pe["aurc"] == pytest.approx(np.mean(areas), abs=1e-12)


def test_metrics_of_a_resample_equal_the_metrics_of_the_resampled_test_set(run):
    z, y, tc = run
    idx = I.stratified_bootstrap_indices(y, n_resamples=4, seed=9)
    lay = I._Layout(y)
    r = I._Run(z, lay, I.shot_groups(tc), temperature=1.7)
    W = I.resample_counts(next(lay.position_chunks(4, 9)), lay.n)
    got = r.metrics(W)
    for b in range(4):
        # duplicated images are tied in MSP: this also checks the tie handling of AUROC/AURC
        want = I.point_estimates(z[idx[b]], y[idx[b]], tc, temperature=1.7)
        for k in I.METRICS:
            assert got[k][b] == pytest.approx(want[k], abs=1e-6 if k.startswith("ece") else 1e-12), k


# --------------------------------------------------------------------------- intervals

def test_all_correct_gives_a_degenerate_interval():
    y = np.repeat(np.arange(4), 25)
    z = np.eye(4)[y] * 3.0 + np.random.default_rng(0).normal(scale=0.1, size=(100, 4))
    ci = I.bootstrap_cis(z, y, np.array([500, 50, 50, 5]), n_resamples=200)
    for k in ("top1", "balanced_acc", "many", "medium", "few"):
        assert ci[k] == [1.0, 1.0]
    assert ci["aurc"] == [0.0, 0.0]
    assert ci["auroc"] is None                    # no wrong prediction: AUROC does not exist
    assert ci["ece_ts"] is None                   # no temperature given


def test_interval_contains_the_estimate_and_is_seeded(run):
    z, y, tc = run
    pe = I.point_estimates(z, y, tc, temperature=1.5)
    ci = I.bootstrap_cis(z, y, tc, n_resamples=500, seed=2, temperature=1.5)
    assert set(ci) == set(I.METRICS)
    for k in ("top1", "balanced_acc", "many", "medium", "few", "auroc", "aurc"):
        assert ci[k][0] <= pe[k] <= ci[k][1], k
        assert ci[k][1] - ci[k][0] > 0
    assert ci == I.bootstrap_cis(z, y, tc, n_resamples=500, seed=2, temperature=1.5)
    assert ci != I.bootstrap_cis(z, y, tc, n_resamples=500, seed=3, temperature=1.5)
    wide = I.bootstrap_cis(z, y, tc, n_resamples=500, seed=2, level=0.99)["top1"]
    assert wide[0] <= ci["top1"][0] and ci["top1"][1] <= wide[1]


def test_empty_groups_and_bad_input(run):
    z, y, _ = run
    ci = I.bootstrap_cis(z, y, np.full(12, 500), n_resamples=50)
    assert ci["medium"] is None and ci["few"] is None and ci["many"] is not None
    assert I.bootstrap_cis(z, y, n_resamples=50)["few"] is None      # no train counts: no groups
    with pytest.raises(ValueError, match="labels"):
        I.bootstrap_cis(z, y[:-1], n_resamples=10)
    with pytest.raises(ValueError, match="12 classes"):
        I.bootstrap_cis(z, y, np.full(11, 5), n_resamples=10)
    with pytest.raises(ValueError, match="level"):
        I.bootstrap_cis(z, y, level=95)
    fields = I.summary_fields(z, y, n_resamples=50)
    assert fields["top1_ci"] == I.bootstrap_cis(z, y, n_resamples=50)["top1"] and fields["ci_level"] == 0.95


# --------------------------------------------------------------------------- seeds and formatting

def test_seed_summary():
    with pytest.raises(ValueError):
        I.seed_summary([])
    one = I.seed_summary([0.657])
    assert one == dict(n=1, mean=0.657, std=None, ci=None, text="n = 1 (one seed: no spread)")
    v = [0.651, 0.662, 0.659]
    s = I.seed_summary(v)
    m, sd = np.mean(v), np.std(v, ddof=1)
    half = stats.t.ppf(0.975, df=2) * sd / np.sqrt(3)
    assert s["n"] == 3 and s["mean"] == pytest.approx(m) and s["std"] == pytest.approx(sd)
    assert s["ci"] == pytest.approx([m - half, m + half])
    assert s["text"].startswith("65.7 ± 0.6 (n = 3 seeds, 95% t-interval [")
    sm = pytest.importorskip("statsmodels.stats.weightstats")
    assert s["ci"] == pytest.approx(list(sm.DescrStatsW(np.array(v)).tconfint_mean(alpha=0.05)))


def test_format_ci():
    assert I.format_ci(0.659, [0.648, 0.670]) == "65.9 [64.8, 67.0]"
    assert I.format_ci(0.0123, [0.01, 0.015], percent=False, digits=3) == "0.012 [0.010, 0.015]"
    assert I.format_ci(0.5, None) == "50.0"
    assert I.format_ci(None, None) == "n/a"


# --------------------------------------------------------------------------- coverage (item 1)

def test_intervals_cover_the_truth_in_repeated_test_sets(capsys):
    """Draw 300 test sets (100 images per class, per-class accuracy known), compute 95% intervals
    with 400 resamples each, count how often they contain the true value."""
    rng = np.random.default_rng(2024)
    C, per_class, reps = 20, 100, 300
    labels = np.repeat(np.arange(C), per_class)
    p = np.linspace(0.85, 0.45, C)
    tc = np.round(500 * 0.01 ** (np.arange(C) / (C - 1))).astype(int)          # 500 .. 5: all groups
    few = I.shot_groups(tc) == 2
    truth = {"top1": p.mean(), "balanced_acc": p.mean(), "few": p[few].mean()}
    # AUROC / ECE have no closed form here: their population values from one very large test set
    big_y = np.repeat(np.arange(C), 10_000)
    big = I.point_estimates(synth_logits(rng.random(big_y.size) < p[big_y], big_y, C, rng), big_y)
    truth["auroc"], truth["ece"] = big["auroc"], big["ece"]
    hits = {k: 0 for k in truth}
    for _ in range(reps):
        z = synth_logits(rng.random(labels.size) < p[labels], labels, C, rng)
        ci = I.bootstrap_cis(z, labels, tc, n_resamples=400, seed=int(rng.integers(2**31)))
        for k, v in truth.items():
            hits[k] += ci[k][0] <= v <= ci[k][1]
    cover = {k: h / reps for k, h in hits.items()}
    with capsys.disabled():
        print(f"\n[item 1] coverage of nominal 95% intervals over {reps} test sets: "
              + ", ".join(f"{k} {v:.3f}" for k, v in cover.items()))
    for k in ("top1", "balanced_acc", "few", "auroc"):
        assert 0.90 <= cover[k] <= 0.98, (k, cover[k])
    # binned ECE is biased upwards on a finite test set, so its percentile interval is not
    # expected to cover (reported above, not asserted)


def test_seed_summary_of_equal_values_is_a_point_not_nan():
    from ltlab.evaluation.intervals import seed_summary
    s = seed_summary([0.0, 0.0, 0.0])
    assert s["std"] == 0 and s["ci"] == [0.0, 0.0]
