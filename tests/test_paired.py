"""ltlab.evaluation.paired: paired bootstrap of A - B, McNemar's exact test, paired seeds, verdicts."""
import numpy as np
import pytest
from conftest import synth_logits
from scipy import stats

from ltlab.evaluation import intervals as I
from ltlab.evaluation import paired as P


def correlated_correct(p_a, p_b, rng, share=0.7):
    """Correctness of two methods on the same images: P(A right) = p_a, P(B right) = p_b, and with
    probability ``share`` an image's difficulty (the uniform draw) is the same for both."""
    u = rng.random(p_a.size)
    v = np.where(rng.random(p_a.size) < share, u, rng.random(p_a.size))
    return u < p_a, v < p_b


# --------------------------------------------------------------------------- McNemar

@pytest.mark.parametrize("b,c", [(10, 2), (0, 0), (5, 0), (7, 7), (30, 18), (1, 40)])
def test_mcnemar_matches_the_binomial_test_and_statsmodels(b, c):
    both, neither = 50, 13
    a = np.array([1] * both + [1] * b + [0] * c + [0] * neither, bool)
    bb = np.array([1] * both + [0] * b + [1] * c + [0] * neither, bool)
    out = P.mcnemar_exact(a, bb)
    assert (out["b"], out["c"], out["n"]) == (b, c, a.size)
    want = 1.0 if b + c == 0 else stats.binomtest(b, b + c, 0.5).pvalue
    assert out["p_value"] == pytest.approx(want, abs=1e-15)
    ct = pytest.importorskip("statsmodels.stats.contingency_tables")
    table = [[both, b], [c, neither]]
    assert out["p_value"] == pytest.approx(min(1.0, ct.mcnemar(table, exact=True).pvalue), abs=1e-12)


def test_mcnemar_hand_cases_and_size():
    # b = 5, c = 0: two-sided exact p = 2 * 0.5^5
    assert P.mcnemar_exact([1] * 5, [0] * 5)["p_value"] == pytest.approx(0.0625)
    # b = 1, c = 1: the most balanced case, p = 1
    assert P.mcnemar_exact([1, 0], [0, 1])["p_value"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="same test images"):
        P.mcnemar_exact([1, 0, 1], [1, 0])
    # under H0 the exact test rejects at most 5% of the time (it is conservative)
    rng = np.random.default_rng(0)
    rejections = 0
    for _ in range(2000):
        a, b = correlated_correct(np.full(300, 0.7), np.full(300, 0.7), rng)
        rejections += P.mcnemar_exact(a, b)["p_value"] < 0.05
    assert rejections / 2000 <= 0.06


# --------------------------------------------------------------------------- verdicts

def test_verdict_sentences():
    assert (P.verdict("balanced accuracy", 0.012, [0.004, 0.020])
            == "balanced accuracy: A − B = +1.2 points, 95% CI [0.4, 2.0]: A is better on this test set")
    assert (P.verdict("top-1 accuracy", -0.003, [-0.011, 0.005])
            == "top-1 accuracy: A − B = -0.3 points, 95% CI [-1.1, 0.5]: the interval covers 0: "
               "no difference shown on this test set")
    assert P.verdict("few-shot accuracy", -0.05, [-0.08, -0.02]).endswith(": B is better on this test set")
    assert P.verdict("ECE", 0.02, [0.01, 0.03], higher_is_better=False).endswith(
        ": B is better on this test set (lower is better)")
    assert P.verdict("x", None, None) == "x: not available for both runs"


# --------------------------------------------------------------------------- paired bootstrap

@pytest.fixture
def two_runs():
    rng = np.random.default_rng(3)
    C = 10
    y = np.repeat(np.arange(C), 60)
    tc = np.round(400 * 0.02 ** (np.arange(C) / (C - 1))).astype(int)
    pa = np.linspace(0.9, 0.5, C)[y]
    ca, cb = correlated_correct(pa, pa - 0.1, rng)
    return synth_logits(ca, y, C, rng), synth_logits(cb, y, C, rng), y, tc


def test_paired_bootstrap_point_values_and_identical_runs(two_runs):
    za, zb, y, tc = two_runs
    out = P.paired_bootstrap(za, zb, y, tc, n_resamples=500, seed=1)
    pa, pb = I.point_estimates(za, y, tc), I.point_estimates(zb, y, tc)
    for k in P.PAIRED_METRICS:
        assert out[k]["a"] == pytest.approx(pa[k]) and out[k]["b"] == pytest.approx(pb[k])
        assert out[k]["diff"] == pytest.approx(pa[k] - pb[k])
        assert out[k]["text"] == P.verdict(P.NAMES[k], out[k]["diff"], out[k]["ci"],
                                           higher_is_better=k != "ece")
    # A is right on ~10 points more images per class: the paired interval excludes 0
    assert out["balanced_acc"]["ci"][0] > 0 and "A is better" in out["balanced_acc"]["text"]
    ca, cb = za.argmax(1) == y, zb.argmax(1) == y
    assert out["mcnemar"] == P.mcnemar_exact(ca, cb)
    assert out == P.paired_bootstrap(za, zb, y, tc, n_resamples=500, seed=1)        # seeded
    same = P.paired_bootstrap(za, za, y, tc, n_resamples=200)
    for k in P.PAIRED_METRICS:
        assert same[k]["diff"] == 0 and same[k]["ci"] == [0.0, 0.0]
        assert "no difference shown" in same[k]["text"]
    assert same["mcnemar"]["p_value"] == 1.0


def test_paired_interval_uses_the_same_images_for_both(two_runs):
    # the percentile interval of the difference equals the one from explicit shared resamples
    za, zb, y, tc = two_runs
    idx = I.stratified_bootstrap_indices(y, n_resamples=300, seed=7)
    ca, cb = za.argmax(1) == y, zb.argmax(1) == y
    want = np.quantile(ca[idx].mean(1) - cb[idx].mean(1), [0.025, 0.975])
    got = P.paired_bootstrap(za, zb, y, tc, n_resamples=300, seed=7)["top1"]["ci"]
    assert got == pytest.approx(want, abs=1e-12)
    # and it is narrower than what two separate intervals would suggest
    ia, ib = (I.bootstrap_cis(z, y, n_resamples=300, seed=7)["top1"] for z in (za, zb))
    assert got[1] - got[0] < (ia[1] - ia[0]) + (ib[1] - ib[0])


def test_paired_bootstrap_rejects_different_test_sets(two_runs):
    za, zb, y, tc = two_runs
    with pytest.raises(ValueError, match="same test images"):
        P.paired_bootstrap(za, zb[:-5], y, tc)
    with pytest.raises(ValueError, match="classes"):
        P.paired_bootstrap(za, zb[:, :-1], y, tc)
    no_groups = P.paired_bootstrap(za, zb, y, n_resamples=20)
    assert no_groups["few"]["diff"] is None and no_groups["few"]["ci"] is None


# --------------------------------------------------------------------------- seeds

def test_paired_seeds_matches_scipys_paired_t_test():
    a = [0.652, 0.661, 0.648, 0.657]
    b = [0.640, 0.650, 0.640, 0.644]
    out = P.paired_seeds(a, b, name="balanced accuracy")
    res = stats.ttest_rel(a, b)
    ci = res.confidence_interval(0.95)
    assert out["ci"] == pytest.approx([ci.low, ci.high])
    assert out["p_value"] == pytest.approx(res.pvalue)
    assert out["mean_diff"] == pytest.approx(np.mean(np.subtract(a, b)))
    assert out["text"].startswith("balanced accuracy: A − B = +1.1 points, 95% CI [")
    assert out["text"].endswith("A is better over these 4 seeds")


def test_paired_seeds_matches_by_seed_and_refuses_one_seed():
    out = P.paired_seeds({0: 0.60, 1: 0.62, 2: 0.61, 5: 0.9}, {1: 0.61, 0: 0.60, 2: 0.60, 7: 0.1})
    assert out["seeds"] == [0, 1, 2] and out["unmatched"] == [5, 7]
    assert out["mean_diff"] == pytest.approx((0.0 + 0.01 + 0.01) / 3)
    one = P.paired_seeds([0.6], [0.5])
    assert one["n"] == 1 and one["ci"] is None and "no interval over seeds" in one["text"]
    with pytest.raises(ValueError):
        P.paired_seeds([0.6, 0.7], [0.5])


# --------------------------------------------------------------------------- coverage (item 3)

def test_paired_intervals_cover_the_true_difference(capsys):
    """300 test sets of two correlated methods with known per-class accuracies; the paired 95%
    interval of A - B (400 resamples) should contain the true difference ~95% of the time."""
    rng = np.random.default_rng(77)
    C, per_class, reps = 20, 100, 300
    y = np.repeat(np.arange(C), per_class)
    tc = np.round(500 * 0.01 ** (np.arange(C) / (C - 1))).astype(int)
    pa = np.linspace(0.85, 0.45, C)
    pb = pa - np.linspace(0.0, 0.06, C)            # B loses most on the tail
    few = I.shot_groups(tc) == 2
    truth = {"balanced_acc": (pa - pb).mean(), "top1": (pa - pb).mean(), "few": (pa - pb)[few].mean()}
    hits = {k: 0 for k in truth}
    for _ in range(reps):
        ca, cb = correlated_correct(pa[y], pb[y], rng)
        out = P.paired_bootstrap(synth_logits(ca, y, C, rng), synth_logits(cb, y, C, rng), y, tc,
                                 n_resamples=400, seed=int(rng.integers(2**31)))
        for k, v in truth.items():
            hits[k] += out[k]["ci"][0] <= v <= out[k]["ci"][1]
    cover = {k: h / reps for k, h in hits.items()}
    with capsys.disabled():
        print(f"\n[item 3] coverage of nominal 95% paired intervals of A - B over {reps} test sets: "
              + ", ".join(f"{k} {v:.3f}" for k, v in cover.items()))
    for k, v in cover.items():
        assert 0.90 <= v <= 0.98, (k, v)
