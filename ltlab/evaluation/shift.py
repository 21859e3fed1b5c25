"""Test-time label shift: accuracy on shifted test subsets with and without the test prior.

The subsets themselves (which images, and the protocol that picks them) are ltlab.data.shift_subsets.

EM estimates the prior from calibrated posteriors (ltlab.evaluation.calibrated_em; :func:`run_calibration`
fits one on a run's val split, by default 'auto': ts, bcts or a regularised bcts, whichever has the
lowest cross-validated NLL there); an estimate that hit the iteration cap or collapsed is flagged in
``em_status`` and its accuracy columns are left empty rather than shown as a result.

Everything here is numpy on saved logits, so one run gives the whole table in seconds.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ltlab.data.lists import subsets_for_run  # noqa: F401 (re-exported for the notebooks)
from ltlab.data.shift_subsets import (  # noqa: F401 (re-exported)
    DIRECTIONS,
    LIST_BENCHMARKS,
    RATIOS,
    SHIFTS,
    list_shift_subsets,
    parse_shift,
    read_split_list,
    shift_counts,
    shift_subset,
    shift_subsets,
)
from ltlab.evaluation import calibrated_em as CE
from ltlab.evaluation import calibration_fit as CF
from ltlab.evaluation import metrics as M
from ltlab.evaluation import posthoc

VARIANTS = ("none", "known", "em")   # the accuracy columns of shift_table

# Methods whose logits already target the balanced prior: their posterior carries no log pi,
# so a known test prior q is corrected with log q - log(1/C), not log q - log pi.
BALANCED_METHODS = ("balanced_softmax", "enmos")


# ------------------------------------------------------------------- model prior

def model_prior_power(config: dict, pred: dict | None = None) -> float:
    """gamma of the prior pi^gamma a run's logits encode by its training objective (pi the training prior).

    A plain CE model's softmax estimates p_train(y|x), prior pi. Training with the logit
    adjustment CE(z + tau log pi) leaves pi^(1 - tau) in the raw logits (balanced softmax:
    tau = 1, uniform), and so does post-hoc adjustment by tau (``la_tau`` in the predictions;
    stage one taken as CE); BalPoE's ensemble targets pi^(1 - mean tau) (``balpoe_taus`` in the
    predictions); class-balanced sampling (cRT, LWS, MiSLAS stage two) trains on the
    uniform prior. Everything else is taken at the training prior. :func:`source_prior` says
    when the val split's evidence is used instead.
    """
    method = config.get("method", "ce")
    extra = config.get("extra") or {}
    if method == "logit_adjust":
        return 1.0 - float(extra.get("la_tau", 1.0))
    if method == "la_posthoc":   # its logits are stage one's minus tau log pi
        tau = None if pred is None else pred.get("la_tau")
        return 1.0 - (1.0 if tau is None else float(np.asarray(tau)))
    if method == "balpoe":
        taus = None if pred is None else pred.get("balpoe_taus")
        return 0.0 if taus is None else 1.0 - float(np.mean(taus))
    if method in BALANCED_METHODS or config.get("sampler") == "class_balanced":
        return 0.0
    return 1.0


def model_prior_counts(config: dict, train_counts, pred: dict | None = None) -> np.ndarray:
    """Counts proportional to pi^gamma, gamma = :func:`model_prior_power` (the rule by objective)."""
    n = np.asarray(train_counts, dtype=np.float64).ravel()
    power = model_prior_power(config, pred)
    if power == 1.0:
        return n.copy()
    return np.maximum(n, 1.0) ** power   # a zero count would make pi^power undefined for power < 0


SOURCES = ("auto", "val", "method", "train", "uniform")


def source_prior(config: dict, test_pred: dict, val_pred: dict | None = None,
                 source: str = "auto") -> tuple[np.ndarray, str]:
    """(counts proportional to the prior the run's raw logits encode, how it was found).

    ``source``: 'val' fits it on the run's val split (an error without one); 'method' is the rule by
    training objective (:func:`model_prior_counts`); 'train' / 'uniform' are fixed; 'auto' is 'val'
    when the run has a val split and 'method' otherwise.

    The val fit (calibration_fit.fit_prior_power) finds T and gamma with softmax(z / T) the
    posteriors under pi^gamma. On the raw logits z = T (z / T) that prior appears as pi^(T gamma),
    which is what the known-prior correction and logit adjustment of raw logits must divide out;
    a calibration divides its own posteriors by pi^gamma (:func:`calibrated_source_prior`). The rule
    by objective is right only for a calibrated model that met its objective: on the archived
    CIFAR-10-LT runs the fit gives T gamma = 1.92 for CE (rule: 1), 0.23 for TDE (rule: 1), 1.25
    for cRT (rule: 0), and dividing it out beats the rule on the uniform test set for all ten
    (docs/notebooks.md, "Which prior the logits encode").
    """
    counts = np.asarray(test_pred["train_counts"], dtype=np.float64).ravel()
    if source not in SOURCES:
        raise ValueError(f"source prior {source!r}: expected one of {', '.join(SOURCES)}")
    if source == "auto":
        source = "method" if val_pred is None else "val"
    if source == "train":
        return counts.copy(), "the training prior"
    if source == "uniform":
        return np.ones_like(counts), "uniform"
    if source == "method":
        power = model_prior_power(config, test_pred)
        why = "; no val split to fit it" if val_pred is None else ""
        return model_prior_counts(config, counts, test_pred), f"pi^{power:.2f}, by the method's objective{why}"
    t, gamma = _val_fit(counts, val_pred)
    return np.maximum(counts, 1.0) ** (t * gamma), \
        f"pi^{t * gamma:.2f} on the raw logits (pi^{gamma:.2f} under T = {t:.2f}, fitted on the val split)"


def calibrated_source_prior(test_pred: dict, val_pred: dict | None) -> np.ndarray:
    """pi^gamma of the val fit: the source prior of the posteriors softmax(z / T) (for a
    calibration's own posteriors; :func:`source_prior` for the raw logits)."""
    counts = np.asarray(test_pred["train_counts"], dtype=np.float64).ravel()
    return np.maximum(counts, 1.0) ** _val_fit(counts, val_pred)[1]


def _val_fit(counts, val_pred) -> tuple[float, float]:
    if val_pred is None:
        raise ValueError("source prior 'val' needs the run's val split and it has none: "
                         "choose 'method', 'train' or 'uniform'")
    t, gamma, _ = CF.fit_prior_power(val_pred["logits"], val_pred["labels"], counts)
    return t, gamma


def run_calibration(config: dict, test_pred: dict, val_pred: dict | None = None, method: str = "auto",
                    source_counts=None) -> CE.Calibration:
    """The calibration EM works on for one run: ``method`` (calibrated_em.CALIBRATIONS; default
    auto) fitted on the run's val predictions, with the prior its logits encode
    (:func:`source_prior`'s 'auto', or ``source_counts``). Without a val split only 'none' is
    possible, and asking for another is an error, never a silent 'none'."""
    if method == "none":   # EM on the raw logits: their own scale's prior
        src = source_prior(config, test_pred, val_pred)[0] if source_counts is None else source_counts
        return CE.fit_calibration("none", model_prior=np.asarray(src, dtype=np.float64))
    if val_pred is None:
        raise ValueError(f"EM calibration {method!r} needs the run's val split and it has none: "
                         "choose calibration 'none' (EM on the raw logits)")
    if source_counts is not None:
        return CE.fit_calibration(method, val_pred["logits"], val_pred["labels"],
                                  np.asarray(source_counts, dtype=np.float64))
    # source 'auto' with a val split is the val fit: the calibrated posteriors' pi^gamma, and
    # interval refits on val resamples redo the fit
    counts = np.asarray(test_pred["train_counts"], dtype=np.float64).ravel()
    fold_fit = {"source_fit": counts} if method == "auto" else {}   # each CV fold refits gamma
    cal = CE.fit_calibration(method, val_pred["logits"], val_pred["labels"],
                             calibrated_source_prior(test_pred, val_pred), **fold_fit)
    return CE.with_fitted_source(cal, counts)


# -------------------------------------------------------------------------- table

def _accuracy_row(pred, y, c, train_counts, prefix: str) -> dict:
    row = {prefix: M.top1(pred, y)}
    groups = M.group_accuracy(M.per_class_accuracy(pred, y, c), train_counts)
    for g in M.GROUPS:
        row[f"{prefix}_{g}"] = np.nan if groups[g] is None else groups[g]
    return row


def shift_row(logits, labels, train_counts, source_counts=None, calibration: CE.Calibration | None = None,
              em: bool = True) -> dict:
    """Accuracy of one test subset: 'none' (argmax of the logits), 'known' (Bayes' rule with
    q = the subset's class frequencies), 'em' (the EM estimate of q from the subset's
    calibrated posteriors, no label used), each with its many/medium/few class means by
    training counts; plus the EM columns of :func:`em_columns` (with ``em``).

    'known' and 'em' reweight the same posteriors: ``calibration``'s, divided by its source
    prior (without one: the raw logits and ``source_counts``, calibration 'none'). So em - known is
    what not knowing q costs, nothing else. On raw logits with temperature T far from 1, adding
    log q to z under-weights q by the factor T that Bayes' rule on softmax(z / T) applies; on the
    ten archived CIFAR-10-LT runs the correction of the auto-calibrated posteriors moves forward50
    by -0.3 to +8.1 points and backward50 by +0.2 to +6.3 against the raw-logit one
    (docs/notebooks.md, "Which prior the logits encode")."""
    f = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels).astype(np.int64).ravel()
    n, c = f.shape
    src = np.asarray(train_counts if source_counts is None else source_counts, dtype=np.float64)
    cal = calibration if calibration is not None else CE.fit_calibration("none", model_prior=src)
    q = np.bincount(y, minlength=c) / max(n, 1)
    row = {"n": int(n)}
    row.update(_accuracy_row(f.argmax(1), y, c, train_counts, "none"))
    known = posthoc.prior_correct(cal.scaled(f), cal.source_prior, q)
    row.update(_accuracy_row(known.argmax(1), y, c, train_counts, "known"))
    if em:
        row.update(em_columns(f, y, train_counts, cal)[0])
    return row


def em_columns(logits, labels, train_counts, calibration: CE.Calibration):
    """({em, em_many.., em_tv, em_iter, em_status, em_calibration}, EMResult).

    EM (calibrated_em.estimate_prior) on the calibrated posteriors of the subset; labels only
    score it. em_tv: total variation between the estimate and the subset's true prior, kept
    whatever the status (it shows how wrong a flagged estimate is). The accuracy columns are
    NaN unless em_status is 'ok'."""
    f = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels).astype(np.int64).ravel()
    c = f.shape[1]
    res = CE.estimate_prior(f, calibration)
    cols = _accuracy_row(res.probs.argmax(1), y, c, train_counts, "em")
    if res.status != CE.STATUS_OK:
        cols = {k: np.nan for k in cols}
    cols["em_tv"] = CE.total_variation(res.prior, np.bincount(y, minlength=c) / max(len(y), 1))
    cols["em_iter"] = res.n_iter
    cols["em_status"] = res.status
    cols["em_calibration"] = calibration.label
    return cols, res


def shift_table(logits, labels, train_counts, shifts=SHIFTS, seed: int = 0, source_counts=None,
                calibration: CE.Calibration | None = None, subsets: dict | None = None,
                em: bool = True) -> pd.DataFrame:
    """One row per test distribution (index 'test distribution', in ``shifts`` order).

    Columns: n, none, known, em (micro top-1 on the subset), {variant}_{many,medium,few}
    (per-class mean by training counts, NaN where the group is absent), em_tv, em_iter,
    em_status, em_calibration. ``subsets`` ({name: indices}, e.g. from list_shift_subsets)
    replaces the CIFAR-style subsets; ``source_counts`` is the prior the logits encode
    (default: train_counts; see :func:`source_prior`); ``calibration`` (:func:`run_calibration`, or
    calibrated_em.fit_calibration on the val split) gives the posteriors the known prior and EM
    reweight (:func:`shift_row`); without it (the table needs no val split) both work on the raw
    logits and em_calibration says 'none'.
    """
    f = np.asarray(logits)
    y = np.asarray(labels).astype(np.int64).ravel()
    c = f.shape[1]
    if subsets is None:
        subsets = shift_subsets(y, shifts, seed=seed, num_classes=c)
    rows = {name: shift_row(f[idx], y[idx], train_counts, source_counts, calibration, em)
            for name, idx in subsets.items()}
    df = pd.DataFrame.from_dict(rows, orient="index")
    df.index.name = "test distribution"
    return df


def em_tv_table(logits, labels, calibrations: dict, shifts=SHIFTS, seed: int = 0,
                subsets: dict | None = None) -> pd.DataFrame:
    """EM's total variation to the true prior and its status, one column pair per calibration
    ({name: Calibration}), one row per test distribution."""
    f = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels).astype(np.int64).ravel()
    c = f.shape[1]
    if subsets is None:
        subsets = shift_subsets(y, shifts, seed=seed, num_classes=c)
    rows = {}
    for name, idx in subsets.items():
        q = np.bincount(y[idx], minlength=c) / len(idx)
        row = {}
        for label, cal in calibrations.items():
            res = CE.estimate_prior(f[idx], cal)
            row[f"tv {label}"] = CE.total_variation(res.prior, q)
            row[f"status {label}"] = res.status
        rows[name] = row
    df = pd.DataFrame.from_dict(rows, orient="index")
    df.index.name = "test distribution"
    return df
