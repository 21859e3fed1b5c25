"""ltlab.evaluation.metrics: hand-computed cases, trusted-library comparisons and identities."""
import inspect
import math
import warnings

import numpy as np
import pytest
import torch
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    balanced_accuracy_score,
    brier_score_loss,
    log_loss,
    mean_squared_error,
    roc_auc_score,
    roc_curve,
)
from sklearn.preprocessing import label_binarize
from torchmetrics.functional.classification import binary_calibration_error, multiclass_calibration_error

from ltlab.evaluation import metrics as M
from ltlab.evaluation import scores as S


def _random_probs(rng, n, c, conc=0.5):
    return rng.dirichlet(np.full(c, conc), size=n)


def _random_logits(rng, n=3000, c=10, signal=2.0):
    y = rng.integers(0, c, n)
    f = rng.normal(size=(n, c))
    f[np.arange(n), y] += signal
    return f, y


# ------------------------------------------------------------------ groups, softmax

def test_shot_groups_thresholds():
    # > 100 many; 20..100 inclusive medium; < 20 few
    assert M.shot_groups([150, 100, 20, 19]).tolist() == [0, 1, 1, 2]
    assert M.shot_groups([101, 0]).tolist() == [0, 2]
    assert M.shot_groups([11, 10, 9], many=10, few=10).tolist() == [0, 1, 2]


def test_softmax_hand_and_stable():
    # logits (0, ln 3): e^0 = 1, e^{ln 3} = 3 -> (1/4, 3/4)
    np.testing.assert_allclose(M.softmax([[0.0, math.log(3)]]), [[0.25, 0.75]], rtol=1e-15)
    np.testing.assert_allclose(M.log_softmax([[0.0, math.log(3)]]),
                               [[math.log(0.25), math.log(0.75)]], rtol=1e-14)
    big = M.softmax([[1000.0, 1000.0, -1000.0]])
    np.testing.assert_allclose(big, [[0.5, 0.5, 0.0]])
    assert np.isfinite(M.log_softmax([[1000.0, -1000.0]])).all()
    f = np.random.default_rng(0).normal(size=(50, 7)) * 10
    np.testing.assert_allclose(M.log_softmax(f), torch.log_softmax(torch.tensor(f), 1).numpy(),
                               atol=1e-12)
    np.testing.assert_allclose(M.logsumexp(f), torch.logsumexp(torch.tensor(f), 1).numpy(),
                               atol=1e-12)


# ------------------------------------------------------------------------- accuracy

def test_accuracy_hand():
    pred, y = [0, 1, 1, 2], [0, 1, 2, 2]
    # class 0: 1/1, class 1: 1/1, class 2: 1/2, class 3 absent -> NaN
    acc = M.per_class_accuracy(pred, y, 4)
    np.testing.assert_allclose(acc[:3], [1.0, 1.0, 0.5])
    assert np.isnan(acc[3])
    assert M.top1(pred, y) == 0.75  # 3 of 4
    assert M.balanced_accuracy(pred, y, 4) == pytest.approx((1 + 1 + 0.5) / 3)


def test_accuracy_vs_sklearn():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 8, 500)  # classes 8, 9 absent from the labels
    pred = np.where(rng.random(500) < 0.6, y, rng.integers(0, 10, 500))
    assert M.top1(pred, y) == pytest.approx(accuracy_score(y, pred), abs=1e-15)
    with warnings.catch_warnings():  # sklearn warns about classes only in y_pred
        warnings.simplefilter("ignore")
        ref = balanced_accuracy_score(y, pred)
    assert M.balanced_accuracy(pred, y, 10) == pytest.approx(ref, abs=1e-14)


def test_group_accuracy_hand():
    counts = [150, 50, 30, 10]
    # many: class 0 -> 1.0; medium: classes 1 (0.5) and 2 (absent) -> 0.5; few: class 3
    out = M.group_accuracy([1.0, 0.5, np.nan, 0.2], counts)
    assert out == {"many": 1.0, "medium": 0.5, "few": 0.2}
    out = M.group_accuracy([1.0, 0.5, 0.0], [150, 50, 30])  # no few class at all
    assert out["few"] is None and out["medium"] == 0.25


# ---------------------------------------------------------------------- calibration

def test_calibration_bins_hand_right_closed():
    # 5 bins, edges 0, .2, .4, .6, .8, 1 (right-closed; 0 goes to bin 0)
    conf = [0.0, 0.2, 0.3, 0.4, 0.9, 1.0]
    ok = [1, 0, 1, 0, 1, 0]
    b = M.calibration_bins(conf, ok, n_bins=5)
    # bin0 {0.0, 0.2}: acc 1/2, conf 0.1; bin1 {0.3, 0.4}: acc 1/2, conf .35;
    # bins 2, 3 empty; bin4 {0.9, 1.0}: acc 1/2, conf .95
    assert b["count"].tolist() == [2, 2, 0, 0, 2]
    np.testing.assert_allclose(b["acc"][[0, 1, 4]], [0.5, 0.5, 0.5])
    np.testing.assert_allclose(b["conf"][[0, 1, 4]], [0.1, 0.35, 0.95])
    assert np.isnan(b["acc"][2:4]).all() and np.isnan(b["conf"][2:4]).all()
    np.testing.assert_allclose(b["edges"], [0, 0.2, 0.4, 0.6, 0.8, 1.0])


HAND_P = np.array([[0.95, 0.05], [0.62, 0.38], [0.29, 0.71], [0.83, 0.17], [0.66, 0.34]])
HAND_Y = np.array([0, 1, 1, 0, 0])


def test_ece_mce_rmsce_hand():
    # conf .95 .62 .71 .83 .66, correct 1 0 1 1 1; 10 bins:
    # (.9,1]: {.95} gap .05 | (.6,.7]: {.62,.66} acc .5 conf .64 gap .14
    # (.7,.8]: {.71} gap .29 | (.8,.9]: {.83} gap .17
    # ECE = (.05 + 2*.14 + .29 + .17)/5 = .158 ; MCE = .29
    # RMSCE = sqrt((.05^2 + 2*.14^2 + .29^2 + .17^2)/5) = sqrt(.1547/5)
    assert M.ece(HAND_P, HAND_Y, n_bins=10) == pytest.approx(0.158, abs=1e-12)
    assert M.mce(HAND_P, HAND_Y, n_bins=10) == pytest.approx(0.29, abs=1e-12)
    assert M.rmsce(HAND_P, HAND_Y, n_bins=10) == pytest.approx(math.sqrt(0.1547 / 5), abs=1e-12)
    logits = np.log(HAND_P)
    assert M.ece_from_logits(logits, HAND_Y, n_bins=10) == pytest.approx(0.158, abs=1e-12)


@pytest.mark.parametrize("norm,fn", [("l1", M.ece), ("max", M.mce), ("l2", M.rmsce)])
def test_calibration_vs_torchmetrics(norm, fn):
    rng = np.random.default_rng(2)
    p = _random_probs(rng, 4000, 10)
    y = np.array([rng.choice(10, p=row ** 1.5 / (row ** 1.5).sum()) for row in p])
    ref = multiclass_calibration_error(torch.tensor(p), torch.tensor(y), num_classes=10,
                                       n_bins=15, norm=norm).item()
    assert fn(p, y, n_bins=15) == pytest.approx(ref, abs=1e-6)
    assert fn(p, y) > 0.01  # a real miscalibration, not a trivially small number


def test_ece_perfectly_calibrated_small():
    rng = np.random.default_rng(3)
    p = _random_probs(rng, 40000, 5, conc=1.0)
    u = rng.random(40000)[:, None]
    y = (u > np.cumsum(p, axis=1)).sum(axis=1)  # y ~ Categorical(p): calibrated by design
    assert M.ece(p, y) < 0.015
    assert M.classwise_ece(p, y) < 0.01
    assert M.adaptive_ece(p, y) < 0.015
    # the same data with a sharpened (over-confident) model is clearly worse
    sharp = p ** 3 / (p ** 3).sum(axis=1, keepdims=True)
    assert M.ece(sharp, y) > 0.1


def test_classwise_ece_hand():
    # 2 bins (0,.5], (.5,1]; labels both 0
    # class 0 column (.8, .3) vs (1, 1): |1-.8| + |1-.3| = .9, /N=2 -> .45
    # class 1 column (.2, .7) vs (0, 0): |0-.2| + |0-.7| = .9, /2 -> .45 ; mean .45
    p = [[0.8, 0.2], [0.3, 0.7]]
    assert M.classwise_ece(p, [0, 0], n_bins=2) == pytest.approx(0.45, abs=1e-15)
    # C comes from probs, not labels: a 3rd all-zero column adds a 0 term -> .9 / 3 = .3
    p3 = [[0.8, 0.2, 0.0], [0.3, 0.7, 0.0]]
    assert M.classwise_ece(p3, [0, 0], n_bins=2) == pytest.approx(0.3, abs=1e-15)


def test_classwise_ece_vs_torchmetrics_binary():
    # Kull et al.: the per-class ECE is the binary calibration error of column k vs 1[y=k]
    rng = np.random.default_rng(4)
    p = _random_probs(rng, 3000, 6)
    y = rng.integers(0, 6, 3000)
    ref = np.mean([binary_calibration_error(torch.tensor(p[:, k]), torch.tensor((y == k) * 1),
                                            n_bins=15).item() for k in range(6)])
    assert M.classwise_ece(p, y) == pytest.approx(ref, abs=1e-6)


def test_adaptive_ece_hand_and_bruteforce():
    # 2 equal-mass bins over sorted conf (.6, .7 | .8, .9), correct (0, 1 | 1, 1)
    # |1 - 1.3| + |2 - 1.7| = .6, / 4 = .15
    p = [[0.6, 0.4], [0.3, 0.7], [0.8, 0.2], [0.1, 0.9]]
    assert M.adaptive_ece(p, [1, 1, 0, 1], n_bins=2) == pytest.approx(0.15, abs=1e-12)
    rng = np.random.default_rng(5)
    p = _random_probs(rng, 1003, 7)
    y = rng.integers(0, 7, 1003)
    conf, ok = p.max(1), p.argmax(1) == y
    order = np.argsort(conf)
    n, nb, tot = 1003, 15, 0.0
    for b in range(nb):
        idx = order[math.ceil(b * n / nb): math.ceil((b + 1) * n / nb)]
        tot += abs(ok[idx].sum() - conf[idx].sum())
    assert M.adaptive_ece(p, y) == pytest.approx(tot / n, abs=1e-12)


def test_nll_hand_and_vs_sklearn():
    # p(y=1) = 3/4 -> -ln .75
    assert M.nll([[0.0, math.log(3)]], [1]) == pytest.approx(-math.log(0.75), abs=1e-15)
    rng = np.random.default_rng(6)
    f, y = _random_logits(rng, 2000, 12)
    y[y == 11] = 0  # class 11 absent: C must still come from the logits
    ref = log_loss(y, M.softmax(f), labels=np.arange(12))
    assert M.nll(f, y) == pytest.approx(ref, abs=1e-12)
    assert np.isfinite(M.nll([[1000.0, -1000.0]], [1]))  # saturated, still finite: 2000


def test_brier_hand_and_vs_sklearn():
    # (.8-1)^2 + (.2-0)^2 = .08 ; (.3-1)^2 + (.7-0)^2 = .98 ; mean .53
    assert M.brier([[0.8, 0.2], [0.3, 0.7]], [0, 0]) == pytest.approx(0.53, abs=1e-15)
    rng = np.random.default_rng(7)
    p = _random_probs(rng, 1000, 5)
    y = rng.integers(0, 5, 1000)
    onehot = label_binarize(y, classes=np.arange(5))
    assert M.brier(p, y) == pytest.approx(5 * mean_squared_error(onehot, p), abs=1e-12)
    if "scale_by_half" in inspect.signature(brier_score_loss).parameters:  # sklearn >= 1.7
        ref = brier_score_loss(y, p, labels=np.arange(5), scale_by_half=False)
        assert M.brier(p, y) == pytest.approx(ref, abs=1e-12)


# --------------------------------------------------------------- failure prediction

def test_auroc_hand_ties():
    # pos .9, .8 ; neg .8, .3 : (.9>.8) 1 + (.9>.3) 1 + (.8=.8) 1/2 + (.8>.3) 1 = 3.5 / 4
    assert M.auroc([0.9, 0.8, 0.8, 0.3], [1, 0, 1, 0]) == 0.875
    assert math.isnan(M.auroc([0.1, 0.2], [1, 1]))
    assert math.isnan(M.auroc([0.1, 0.2], [0, 0]))
    assert M.auroc([np.inf, np.inf, -np.inf], [1, 0, 0]) == 0.75  # +inf run is a tie


def test_auroc_vs_sklearn_with_ties():
    rng = np.random.default_rng(8)
    s = np.round(rng.random(5000), 2)  # many ties
    ok = rng.random(5000) < 0.3 + 0.5 * s
    assert M.auroc(s, ok) == pytest.approx(roc_auc_score(ok, s), abs=1e-12)


def test_risk_coverage_and_aurc_hand():
    cov, risk = M.risk_coverage([0.9, 0.8, 0.7, 0.6], [1, 0, 1, 0])
    np.testing.assert_allclose(cov, [0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(risk, [0, 1 / 2, 1 / 3, 2 / 4])
    # AURC = (0 + .5 + 1/3 + .5) / 4 = 1/3
    assert M.aurc([0.9, 0.8, 0.7, 0.6], [1, 0, 1, 0]) == pytest.approx(1 / 3, abs=1e-15)
    # oracle (correct first): risks 0, 0, 1/3, 1/2 -> 5/24 ; E-AURC = 1/3 - 5/24 = 1/8
    assert M.eaurc([0.9, 0.8, 0.7, 0.6], [1, 0, 1, 0]) == pytest.approx(0.125, abs=1e-15)


def test_risk_coverage_ties_expectation():
    # tied run {.5, .5} with one error: expected errors after 2 = 0 + 1 * (1/2)
    _, risk = M.risk_coverage([0.9, 0.5, 0.5, 0.1], [1, 1, 0, 0])
    np.testing.assert_allclose(risk, [0, 0.25, 1 / 3, 0.5])
    # expectation over tie orders == mean of the two orderings' AURC
    a = np.mean([0, 0, 1 / 3, 0.5])      # correct one first
    b = np.mean([0, 0.5, 1 / 3, 0.5])    # wrong one first
    assert M.aurc([0.9, 0.5, 0.5, 0.1], [1, 1, 0, 0]) == pytest.approx((a + b) / 2, abs=1e-15)
    rng = np.random.default_rng(9)
    s = np.round(rng.random(300), 1)
    ok = rng.random(300) < 0.7
    perm = rng.permutation(300)
    assert M.aurc(s, ok) == pytest.approx(M.aurc(s[perm], ok[perm]), abs=1e-15)


def test_aurc_vs_crl_loop_and_continuous_formula():
    # CRL (Moon et al. 2020) coverage_risk: sort by confidence, risk at every prefix
    rng = np.random.default_rng(10)
    s = rng.random(4000)
    ok = rng.random(4000) < 0.2 + 0.7 * s
    order = np.argsort(-s)
    errs, risks = 0, []
    for i in order:
        errs += not ok[i]
        risks.append(errs / (len(risks) + 1))
    assert M.aurc(s, ok) == pytest.approx(np.mean(risks), abs=1e-12)
    r = 1 - ok.mean()
    opt = r + (1 - r) * math.log(1 - r)  # Geifman's continuous approximation of AURC*
    assert M.aurc(s, ok) - M.eaurc(s, ok) == pytest.approx(opt, abs=2e-3)


def test_eaurc_perfect_ranking_exactly_zero():
    rng = np.random.default_rng(11)
    ok = rng.random(1001) < 0.83
    s = np.where(ok, 1.0 + rng.random(1001), rng.random(1001))
    assert M.eaurc(s, ok) == 0.0
    # ties inside the correct block and inside the error block keep it exactly 0
    assert M.eaurc(np.where(ok, 1.0, 0.0), ok) == 0.0
    assert M.eaurc(-s, ok) > 0.1  # the reversed ranking is bad


def test_fpr_at_tpr_hand():
    s, ok = [0.9, 0.8, 0.7, 0.6, 0.5], [1, 0, 1, 1, 0]
    # 95% of 3 correct needs all 3 -> accept >= .6 -> errors accepted {.8}: 1/2
    assert M.fpr_at_tpr(s, ok) == 0.5
    assert M.fpr_at_tpr(s, ok, tpr=0.6) == 0.5  # needs 2 -> accept >= .7 -> {.8}
    assert M.fpr_at_tpr(s, ok, tpr=0.3) == 0.0  # needs 1 -> accept >= .9
    assert math.isnan(M.fpr_at_tpr(s, [1] * 5))
    # TPR reached exactly counts (>=): 3 of 4 correct at >= .6 is 75% -> errors {.7}: 1/2
    s2, ok2 = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4], [1, 1, 0, 1, 0, 1]
    assert M.fpr_at_tpr(s2, ok2, tpr=0.75) == 0.5
    # 19 of 20 correct is exactly 95%: the 20th correct one (below both errors) is dropped
    s3 = np.arange(22.0)[::-1]
    ok3 = np.r_[np.ones(19, bool), False, False, True]
    assert M.fpr_at_tpr(s3, ok3) == 0.0


def test_fpr_at_tpr_vs_sklearn_roc_curve():
    rng = np.random.default_rng(12)
    for ties in (None, 2):
        s = rng.random(3000)
        if ties:
            s = np.round(s, ties)
        ok = rng.random(3000) < 0.2 + 0.7 * s
        fpr, tpr, _ = roc_curve(ok, s, drop_intermediate=False)
        ref = fpr[np.searchsorted(tpr, 0.95, side="left")]
        assert M.fpr_at_tpr(s, ok) == pytest.approx(ref, abs=1e-15)


def test_aupr_error_hand_and_vs_sklearn():
    # errors ranked by -score: .6 (err) P=1 R=.5 ; .7 (ok) ; .8 (err) P=2/3 R=1
    # AP = .5 * 1 + .5 * 2/3 = 5/6
    assert M.aupr_error([0.9, 0.8, 0.7, 0.6], [1, 0, 1, 0]) == pytest.approx(5 / 6, abs=1e-15)
    rng = np.random.default_rng(13)
    s = np.round(rng.random(3000), 2)
    ok = rng.random(3000) < 0.2 + 0.7 * s
    ref = average_precision_score(~ok, -s)
    assert M.aupr_error(s, ok) == pytest.approx(ref, abs=1e-12)


def test_balanced_aurc_hand():
    s, ok, y = [0.9, 0.8, 0.7, 0.6], [1, 0, 1, 0], [0, 0, 1, 1]
    # k=1: cls0 0/1 -> 0 ; k=2: cls0 1/2 -> .5 ; k=3: (1/2 + 0/1)/2 = .25
    # k=4: (1/2 + 1/2)/2 = .5 ; mean = 1.25 / 4 = .3125
    assert M.balanced_aurc(s, ok, y) == pytest.approx(0.3125, abs=1e-15)


def test_balanced_aurc_vs_loop_and_single_class():
    rng = np.random.default_rng(14)
    n = 600
    s = rng.random(n)
    y = rng.integers(0, 9, n)
    ok = rng.random(n) < 0.3 + 0.6 * s
    order = np.argsort(-s)
    risks = []
    for k in range(1, n + 1):
        kept = order[:k]
        rates = [np.mean(~ok[kept][y[kept] == c]) for c in np.unique(y[kept])]
        risks.append(np.mean(rates))
    assert M.balanced_aurc(s, ok, y) == pytest.approx(np.mean(risks), abs=1e-12)
    assert M.balanced_aurc(s, ok, np.zeros(n, int)) == pytest.approx(M.aurc(s, ok), abs=1e-12)
    st = np.round(s, 1)  # ties: order-invariant
    perm = rng.permutation(n)
    assert M.balanced_aurc(st, ok, y) == pytest.approx(
        M.balanced_aurc(st[perm], ok[perm], y[perm]), abs=1e-14)


def test_msp_monotone_score_same_auroc_and_aurc():
    # BE(x, ŷ) - E(x, ŷ) = log(MSP / (1 - MSP)): monotone in MSP (reference doc §1.3)
    rng = np.random.default_rng(15)
    f, y = _random_logits(rng, 5000, 10, signal=1.5)
    ok = f.argmax(1) == y
    m = S.msp(f)
    logit_msp = S.residual_energy(f) + f.max(1)
    np.testing.assert_allclose(logit_msp, np.log(m / (1 - m)), atol=1e-9)
    assert M.auroc(logit_msp, ok) == pytest.approx(M.auroc(m, ok), abs=1e-12)
    assert M.aurc(logit_msp, ok) == pytest.approx(M.aurc(m, ok), abs=1e-12)
    # while the absolute residual energy ranks differently
    assert abs(M.auroc(S.residual_energy(f), ok) - M.auroc(m, ok)) > 1e-3


# ---------------------------------------------------------------------------- groups

def test_by_group():
    counts = [150, 50, 5]  # class 0 many, 1 medium, 2 few
    y = np.array([0, 0, 1, 2, 2])
    pred = np.array([0, 1, 1, 2, 0])
    out = M.by_group(M.top1, counts, y, pred, y)
    # many: samples 0, 1 -> 1/2 ; medium: sample 2 -> 1 ; few: samples 3, 4 -> 1/2
    assert out == {"many": 0.5, "medium": 1.0, "few": 0.5}
    out = M.by_group(M.top1, [150, 50, 5], np.array([0, 1]), np.array([0, 0]), np.array([0, 1]))
    assert out["few"] is None and out["medium"] == 0.0
