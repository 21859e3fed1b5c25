"""ltlab.evaluation.summary.summarize: exact keys, JSON-safe values, every number recomputable."""
import json

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, balanced_accuracy_score, log_loss, roc_auc_score

from ltlab.evaluation import metrics as M
from ltlab.evaluation import posthoc as P
from ltlab.evaluation import scores as S
from ltlab.evaluation.summary import SUMMARY_KEYS, summarize

KEYS = {"top1", "balanced_acc", "many", "medium", "few", "ece", "nll", "num_classes",
        "auroc_msp", "auroc_energy", "auroc_residual_energy", "aurc_msp", "eaurc_msp",
        "fpr95_msp", "mce", "brier", "temperature", "ece_ts",
        "ece_many", "ece_medium", "ece_few", "auroc_msp_many", "auroc_msp_medium",
        "auroc_msp_few"}


def _data(seed=0, n=3000, c=10, signal=2.0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    f = rng.normal(size=(n, c)) * 1.5
    f[np.arange(n), y] += signal
    counts = np.array([500, 300, 150, 100, 60, 40, 20, 15, 8, 5])[:c]
    return f.astype(np.float32), y, counts


def test_keys_and_json():
    f, y, counts = _data()
    s = summarize(f, y, counts)
    assert set(s) == KEYS and set(SUMMARY_KEYS) == KEYS
    json.dumps(s, allow_nan=False)
    assert s["temperature"] is None and s["ece_ts"] is None
    assert isinstance(s["num_classes"], int) and s["num_classes"] == 10
    for k, v in s.items():
        assert v is None or type(v) in (float, int), k


def test_values_recomputable():
    f, y, counts = _data(1)
    fv, yv, _ = _data(2, n=1000)
    s = summarize(f, y, counts, val_logits=fv, val_labels=yv)
    f64 = f.astype(np.float64)
    p = M.softmax(f64)
    pred = f64.argmax(1)
    ok = pred == y
    assert s["top1"] == accuracy_score(y, pred)
    assert s["balanced_acc"] == pytest.approx(balanced_accuracy_score(y, pred), abs=1e-14)
    pca = M.per_class_accuracy(pred, y, 10)
    assert s["many"] == pytest.approx(pca[[0, 1, 2]].mean(), abs=1e-15)     # > 100 images
    assert s["medium"] == pytest.approx(pca[[3, 4, 5, 6]].mean(), abs=1e-15)  # 20..100
    assert s["few"] == pytest.approx(pca[[7, 8, 9]].mean(), abs=1e-15)      # < 20
    assert s["ece"] == M.ece(p, y) and s["mce"] == M.mce(p, y)
    assert s["nll"] == pytest.approx(log_loss(y, p, labels=np.arange(10)), abs=1e-12)
    assert s["nll"] == M.nll(f, y)
    assert s["brier"] == M.brier(p, y)
    assert s["auroc_msp"] == pytest.approx(roc_auc_score(ok, p.max(1)), abs=1e-12)
    assert s["auroc_energy"] == M.auroc(S.neg_energy(f), ok)
    assert s["auroc_residual_energy"] == M.auroc(S.residual_energy(f), ok)
    assert s["aurc_msp"] == M.aurc(S.msp(f), ok)
    assert s["eaurc_msp"] == M.eaurc(S.msp(f), ok)
    assert s["fpr95_msp"] == M.fpr_at_tpr(S.msp(f), ok)
    t = P.fit_temperature(fv, yv)
    assert s["temperature"] == t
    assert s["ece_ts"] == M.ece(M.softmax(f64 / t), y)
    g = M.by_group(M.ece, counts, y, p, y)
    assert (s["ece_many"], s["ece_medium"], s["ece_few"]) == (g["many"], g["medium"], g["few"])
    g = M.by_group(M.auroc, counts, y, S.msp(f), ok)
    assert s["auroc_msp_few"] == g["few"]
    # sanity of the numbers themselves
    assert 0.4 < s["top1"] < 0.9 and s["auroc_msp"] > 0.6 and 0 < s["eaurc_msp"] < s["aurc_msp"]


def test_missing_group_and_undefined_auroc_are_none():
    f, y, counts = _data(3, c=10)
    keep = y < 7  # no test sample of the few classes 7, 8, 9
    s = summarize(f[keep], y[keep], counts)
    assert s["few"] is None and s["ece_few"] is None and s["auroc_msp_few"] is None
    assert s["many"] is not None
    # every prediction correct: AUROC undefined -> None rather than NaN
    f2 = np.eye(3)[[0, 1, 2, 0]] * 10
    s = summarize(f2, [0, 1, 2, 0], [200, 50, 5])
    assert s["top1"] == 1.0 and s["auroc_msp"] is None and s["fpr95_msp"] is None
    assert s["eaurc_msp"] == 0.0
    json.dumps(s, allow_nan=False)


def test_rejects_mismatched_counts():
    f, y, counts = _data()
    with pytest.raises(ValueError):
        summarize(f, y, counts[:5])
