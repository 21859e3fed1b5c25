"""Metrics, failure prediction and confidence scores (evaluation.metrics, .failure, .scores):
cases that `make mutants` showed untested. Empty and one-sample inputs, one-class splits, integer
and boolean inputs as a caller may pass them, ties against a brute-force expectation over all tie
orders, the documented default of 15 bins (torchmetrics), messages of the input checks, and
NaN results that come without numpy warnings."""
import itertools
import math
import warnings

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve
from torchmetrics.functional.classification import multiclass_calibration_error

from ltlab.evaluation import failure as F
from ltlab.evaluation import metrics as M
from ltlab.evaluation import scores as S


def _probs(seed=0, n=400, c=5):
    rng = np.random.default_rng(seed)
    return rng.dirichlet(np.full(c, 0.7), size=n), rng.integers(0, c, n)


def _underconfident(seed=1, n=400, c=5):
    """Labels drawn from the sharpened probabilities p^2: the model is under-confident in some bins
    and over-confident in others, so the binning changes the calibration errors."""
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.full(c, 0.7), size=n)
    q = p ** 2 / (p ** 2).sum(axis=1, keepdims=True)
    y = np.minimum((rng.random(n)[:, None] > np.cumsum(q, axis=1)).sum(axis=1), c - 1)
    return p, y


def _tm(p, y, n_bins, norm):
    return float(multiclass_calibration_error(torch.tensor(p), torch.tensor(y), num_classes=p.shape[1],
                                              n_bins=n_bins, norm=norm))


# ------------------------------------------------------------------------ metrics.py

def test_softmax_family_on_integer_logits():
    # ints, as a hand-written case passes them: (0, 1) -> (1, e) / (1 + e)
    e = math.e
    np.testing.assert_allclose(M.softmax([[0, 1]]), [[1 / (1 + e), e / (1 + e)]], rtol=1e-15)
    np.testing.assert_allclose(M.logsumexp([[0, 1]]), [math.log(1 + e)], rtol=1e-15)
    np.testing.assert_allclose(M.log_softmax([[0, 1]]), [[-math.log(1 + e), 1 - math.log(1 + e)]], rtol=1e-15)
    assert M.softmax(np.array([[0, 1]], dtype=np.float32)).dtype == np.float64


def test_default_binning_is_15_bins_as_torchmetrics():
    p, y = _underconfident(3)
    # this data's errors depend on the binning (5, 15 and 16 bins all differ)
    assert min(abs(M.ece(p, y, 5) - M.ece(p, y, 15)), abs(M.ece(p, y, 16) - M.ece(p, y, 15)),
               abs(M.mce(p, y, 16) - M.mce(p, y, 15))) > 1e-3
    assert M.ece(p, y) == pytest.approx(_tm(p, y, 15, "l1"), abs=1e-6)
    assert M.mce(p, y) == pytest.approx(_tm(p, y, 15, "max"), abs=1e-6)
    assert M.rmsce(p, y) == pytest.approx(_tm(p, y, 15, "l2"), abs=1e-6)
    assert M.ece(p, y, n_bins=5) == pytest.approx(_tm(p, y, 5, "l1"), abs=1e-6)
    assert M.mce(p, y, n_bins=5) == pytest.approx(_tm(p, y, 5, "max"), abs=1e-6)
    assert M.rmsce(p, y, n_bins=5) == pytest.approx(_tm(p, y, 5, "l2"), abs=1e-6)
    f = np.log(p)
    assert M.ece_from_logits(f, y) == pytest.approx(_tm(p, y, 15, "l1"), abs=1e-6)
    assert M.ece_from_logits(f, y, n_bins=5) == pytest.approx(_tm(p, y, 5, "l1"), abs=1e-6)
    b = M.calibration_bins(p.max(1), p.argmax(1) == y)
    assert len(b["count"]) == 15 and b["count"].dtype == np.int64 and b["count"].sum() == 400
    # classwise and adaptive: 15 by default too (equal to the explicit call, unequal to 16)
    assert M.classwise_ece(p, y) == M.classwise_ece(p, y, 15) != M.classwise_ece(p, y, 16)
    assert M.adaptive_ece(p, y) == M.adaptive_ece(p, y, 15) != M.adaptive_ece(p, y, 16)


def test_confidence_a_rounding_step_above_one_is_in_the_last_bin():
    # a softmax row can sum to 1 + 1 ulp; its confidence belongs to the top bin (0.8, 1]
    above = np.nextafter(1.0, 2.0)
    b = M.calibration_bins([above, 0.5], [1, 0], n_bins=5)
    assert b["count"].tolist() == [0, 0, 1, 0, 1]
    assert M._bin_index(np.array([above, 1.0, 0.0, -0.1]), 5).tolist() == [4, 4, 0, 0]


def test_one_sample_and_empty_inputs():
    # one sample, conf 0.7 and correct: ECE = MCE = RMSCE = |1 - 0.7| = 0.3
    p1 = np.array([[0.7, 0.3]])
    assert M.ece(p1, [0]) == pytest.approx(0.3) and M.mce(p1, [0]) == pytest.approx(0.3)
    assert M.rmsce(p1, [0]) == pytest.approx(0.3) and M.adaptive_ece(p1, [0]) == pytest.approx(0.3)
    # classwise: (|1 - 0.7| + |0 - 0.3|) / 2 = 0.3
    assert M.classwise_ece(p1, [0]) == pytest.approx(0.3)
    assert M.top1([1], [1]) == 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")            # NaN for no data, without numpy's warnings
        empty = np.zeros((0, 3))
        for fn in (M.ece, M.mce, M.rmsce, M.classwise_ece, M.adaptive_ece):
            assert math.isnan(fn(empty, np.zeros(0, dtype=int))), fn.__name__
        assert math.isnan(M.top1([], []))
        assert math.isnan(M.balanced_accuracy([], [], 3))
        assert np.isnan(M.per_class_accuracy([0], [0], 3)[1:]).all()


def test_label_length_checks_name_the_lengths():
    p = np.full((3, 2), 0.5)
    for fn in (M.ece, M.classwise_ece, M.brier, M.nll):
        with pytest.raises(ValueError, match="labels has 2 entries, expected 3"):
            fn(p, [0, 1])
    with pytest.raises(ValueError, match="labels has 2 entries, expected 3"):
        M.top1([0, 1], [0, 1, 1])
    with pytest.raises(ValueError, match="labels has 2 entries, expected 3"):
        M.per_class_accuracy([0, 1], [0, 1, 1], 2)
    with pytest.raises(ValueError, match=r"expected an \(N, C\) array, got shape \(3,\)"):
        M.ece([0.1, 0.2, 0.3], [0, 1, 1])
    with pytest.raises(ValueError, match="a label is >= num_classes=2"):
        M.per_class_accuracy([0, 2], [0, 2], 2)
    with pytest.raises(ValueError, match="^per_class_acc and train_counts have different lengths$"):
        M.group_accuracy([0.5, 0.5], [10, 10, 10])


def test_shot_groups_are_integer_indices():
    g = M.shot_groups([150, 50, 5])
    assert g.dtype == np.int64 and g.tolist() == [0, 1, 2]


# ------------------------------------------------------------------------ failure.py

def _expected_risk_brute(score, correct):
    """Selective risk at k = 1..N averaged over every order of the tied samples (definition)."""
    score = np.asarray(score, dtype=float)
    err = ~np.asarray(correct, dtype=bool)
    levels = sorted(set(score.tolist()), reverse=True)
    groups = [np.flatnonzero(score == v) for v in levels]
    total = np.zeros(len(score))
    orders = list(itertools.product(*[list(itertools.permutations(g)) for g in groups]))
    for parts in orders:
        seq = np.concatenate([np.asarray(p) for p in parts])
        total += np.cumsum(err[seq])
    return total / len(orders) / np.arange(1, len(score) + 1)


@pytest.mark.parametrize("score,correct", [
    ([0.9, 0.5, 0.5], [False, True, False]),
    ([0.9, 0.5, 0.5, 0.5, 0.1], [False, True, False, False, True]),
    ([0.8, 0.8, 0.3, 0.3, 0.3, 0.1], [True, False, False, True, False, True]),
])
def test_risk_coverage_with_ties_is_the_expectation_over_tie_orders(score, correct):
    want = _expected_risk_brute(score, correct)
    cov, risk = F.risk_coverage(score, correct)
    np.testing.assert_allclose(risk, want, atol=1e-12)
    np.testing.assert_allclose(cov, np.arange(1, len(score) + 1) / len(score))
    assert F.aurc(score, correct) == pytest.approx(want.mean(), abs=1e-12)


def _balanced_aurc_brute(score, correct, labels):
    """No ties: at each k, the mean over present classes of their error rate among the top k."""
    order = np.argsort(-np.asarray(score, dtype=float))
    err = ~np.asarray(correct, dtype=bool)[order]
    y = np.asarray(labels)[order]
    risks = []
    for k in range(1, len(order) + 1):
        rates = [err[:k][y[:k] == c].mean() for c in np.unique(y[:k])]
        risks.append(np.mean(rates))
    return float(np.mean(risks))


@pytest.mark.parametrize("seed", range(4))
def test_balanced_aurc_matches_its_definition(seed):
    rng = np.random.default_rng(seed)
    n = 12
    score = rng.permutation(n) / n
    labels = np.array([0] + list(rng.integers(1, 4, n - 1)))      # class 0: a single sample
    correct = rng.random(n) < 0.5
    correct[labels == 0] = False
    assert F.balanced_aurc(score, correct, labels) == pytest.approx(_balanced_aurc_brute(score, correct, labels),
                                                                    abs=1e-12)


def test_balanced_aurc_hand_case():
    # by descending score: (class 0 wrong), (class 1 right), (class 1 wrong), (class 0 right)
    # k=1: {0: 1} -> 1; k=2: {0: 1, 1: 0} -> 1/2; k=3: {0: 1, 1: 1/2} -> 3/4; k=4: {0: 1/2, 1: 1/2} -> 1/2
    got = F.balanced_aurc([0.9, 0.8, 0.7, 0.6], [False, True, False, True], [0, 1, 1, 0])
    assert got == pytest.approx((1 + 0.5 + 0.75 + 0.5) / 4)


def test_failure_metrics_with_one_sample_or_one_error():
    # one sample: AURC = its risk; E-AURC = 0 (it is its own oracle)
    assert F.aurc([0.3], [True]) == 0.0 and F.aurc([0.3], [False]) == 1.0
    assert F.eaurc([0.3], [False]) == 0.0
    # a single error / a single correct prediction: sklearn's values
    s = np.array([0.9, 0.8, 0.4, 0.3])
    ok = np.array([True, True, False, True])
    assert F.aupr_error(s, ok) == pytest.approx(average_precision_score(~ok, -s))
    assert F.auroc(s, ok) == pytest.approx(roc_auc_score(ok, s))
    assert F.auroc(s, ~ok) == pytest.approx(roc_auc_score(~ok, s))
    fpr, tpr, _ = roc_curve(ok, s)
    assert F.fpr_at_tpr(s, ok, 0.95) == pytest.approx(fpr[np.searchsorted(tpr, 0.95)])
    fpr, tpr, _ = roc_curve(~ok, s)
    assert F.fpr_at_tpr(s, ~ok, 0.95) == pytest.approx(fpr[np.searchsorted(tpr, 0.95)])


def test_one_class_and_empty_give_nan_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for ok in ([True, True], [False, False]):
            assert math.isnan(F.auroc([0.2, 0.4], ok))
            assert math.isnan(F.fpr_at_tpr([0.2, 0.4], ok))
        assert math.isnan(F.aupr_error([0.2, 0.4], [True, True]))
        for fn in (F.aurc, F.eaurc):
            assert math.isnan(fn([], []))
        assert math.isnan(F.balanced_aurc([], [], []))


def test_boolean_scores_are_accepted():
    # a 0/1 score (e.g. "predicted a head class") ranks as 0.0 / 1.0
    b = np.array([True, False, True, False, True])
    ok = np.array([True, False, False, True, True])
    f = b.astype(float)
    assert F.auroc(b, ok) == F.auroc(f, ok) == pytest.approx(roc_auc_score(ok, f))
    assert F.aurc(b, ok) == F.aurc(f, ok)
    assert F.aupr_error(b, ok) == F.aupr_error(f, ok) == pytest.approx(average_precision_score(~ok, -f))
    assert F.balanced_aurc(b, ok, [0, 1, 0, 1, 0]) == F.balanced_aurc(f, ok, [0, 1, 0, 1, 0])


def test_failure_input_checks_messages():
    with pytest.raises(ValueError, match="^score and correct must have the same length$"):
        F.auroc([0.1, 0.2], [True])
    with pytest.raises(ValueError, match="^score contains NaN$"):
        F.auroc([0.1, float("nan")], [True, False])
    with pytest.raises(ValueError, match="labels has 1 entries, expected 2"):
        F.balanced_aurc([0.1, 0.2], [True, False], [0])


# ------------------------------------------------------------------------- scores.py

def test_scores_on_integer_logits_are_float64():
    f = [[0, 1, 3], [2, 2, 0]]
    z = np.asarray(f, dtype=np.float64)
    for name, fn in S.SCORES.items():
        got = fn(f)
        assert got.dtype == np.float64, name
        np.testing.assert_allclose(got, fn(z), rtol=1e-15, err_msg=name)
    np.testing.assert_allclose(S.max_logit(f), [3.0, 2.0])
    np.testing.assert_allclose(S.msp(f), [math.exp(3) / (1 + math.e + math.exp(3)), 0.5 / (1 + 0.5 * math.exp(-2))])


def test_residual_energy_when_every_other_logit_is_minus_inf():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = S.residual_energy([[0.0, -np.inf, -np.inf], [1.0, 0.0, -np.inf]])
    assert got[0] == np.inf and got[1] == pytest.approx(0.0)


def test_score_input_checks_messages():
    with pytest.raises(ValueError, match="temperature must be > 0, got 0"):
        S.msp([[0.0, 1.0]], T=0)
    with pytest.raises(ValueError, match=r"expected \(N, C\) logits, got shape \(2,\)"):
        S.msp([0.0, 1.0])
