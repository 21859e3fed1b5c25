"""The numbers of a run's summary.json, all recomputable from saved logits and labels.

Every value is a plain Python float / int / None. Non-finite results (e.g. an AUROC on a
group where every prediction is correct) become None, because NaN is not valid JSON.
"""
from __future__ import annotations

import math

import numpy as np

from . import metrics as M
from . import posthoc, scores

SUMMARY_KEYS = (
    "top1", "balanced_acc", "many", "medium", "few", "ece", "nll", "num_classes",
    "auroc_msp", "auroc_energy", "auroc_residual_energy", "aurc_msp", "eaurc_msp",
    "fpr95_msp", "mce", "brier", "temperature", "ece_ts",
    "ece_many", "ece_medium", "ece_few",
    "auroc_msp_many", "auroc_msp_medium", "auroc_msp_few",
)


def _num(x):
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def summarize(logits, labels, train_counts, val_logits=None, val_labels=None) -> dict:
    """Accuracy, calibration and failure-prediction summary of one evaluation split.

    - accuracy: ``top1``, ``balanced_acc`` (mean recall over classes present in
      ``labels``), ``many``/``medium``/``few`` (mean per-class accuracy of each shot
      group, None where the group has no class in the test labels);
    - calibration: ``ece``/``mce`` (15 equal-width right-closed bins, top-label),
      ``nll``, ``brier``, and ``ece_many``/``ece_medium``/``ece_few`` over the samples
      whose true class is in the group;
    - failure prediction (correct = 1[argmax logits == label]): AUROC of MSP, free
      energy and residual energy; AURC, E-AURC and FPR@95%TPR of MSP; AUROC of MSP per
      group;
    - temperature scaling: ``temperature`` fitted on (val_logits, val_labels) and
      ``ece_ts`` of logits / temperature, both None without a validation split.
    """
    f = np.asarray(logits, dtype=np.float64)
    if f.ndim != 2:
        raise ValueError(f"expected (N, C) logits, got shape {f.shape}")
    n, c = f.shape
    y = np.asarray(labels).astype(np.int64).ravel()
    if y.shape[0] != n:
        raise ValueError(f"{y.shape[0]} labels for {n} logit rows")
    counts = np.asarray(train_counts).ravel()
    if counts.shape[0] != c:
        raise ValueError(f"train_counts has {counts.shape[0]} classes, logits have {c}")

    # One exp pass shared by softmax, log-likelihood, MSP and energy, with the exact
    # operations of M.softmax / M.log_softmax / scores.msp / scores.neg_energy, so the
    # numbers equal those of the public functions bit for bit.
    m, e, s = M._exp_parts(f)
    lse = m + np.log(s)
    e /= s[:, None]
    probs = e
    rows = np.arange(n)
    pred = f.argmax(axis=1)
    correct = pred == y
    # calibration uses the top label of the probabilities, exactly as M.ece(probs) does
    pred_p = probs.argmax(axis=1)
    conf = probs[rows, pred_p]
    correct_p = pred_p == y
    msp = np.exp(m - lse)
    nll = float(-(f[rows, y] - lse).mean())

    pca = M.per_class_accuracy(pred, y, c)
    groups = M.group_accuracy(pca, counts)
    ece_, mce_, _ = M._calibration_errors(conf, correct_p, 15)

    out = {
        "top1": M.top1(pred, y),
        "balanced_acc": M.balanced_accuracy(pred, y, c),
        **groups,
        "ece": ece_,
        "nll": nll,
        "num_classes": int(c),
        "auroc_msp": M.auroc(msp, correct),
        "auroc_energy": M.auroc(lse, correct),
        "auroc_residual_energy": M.auroc(scores.residual_energy(f), correct),
        "aurc_msp": M.aurc(msp, correct),
        "eaurc_msp": M.eaurc(msp, correct),
        "fpr95_msp": M.fpr_at_tpr(msp, correct, 0.95),
        "mce": mce_,
        "brier": M.brier(probs, y),
        "temperature": None,
        "ece_ts": None,
    }
    if val_logits is not None and val_labels is not None:
        t = posthoc.fit_temperature(val_logits, val_labels)
        out["temperature"] = t
        out["ece_ts"] = M.ece(M.softmax(f / t), y)

    g_ece = M.by_group(lambda k, ok: M._calibration_errors(k, ok, 15)[0],
                       counts, y, conf, correct_p)
    g_auc = M.by_group(M.auroc, counts, y, msp, correct)
    for g in M.GROUPS:
        out[f"ece_{g}"] = g_ece[g]
        out[f"auroc_msp_{g}"] = g_auc[g]

    res = {k: (out[k] if k == "num_classes" else _num(out[k])) for k in SUMMARY_KEYS}
    return res
