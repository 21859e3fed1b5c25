"""Tables behind 04_test_shift's "how sure" sections: intervals on EM's estimated test prior, and
the uniform-test accuracy estimated from a label-shifted labelled sample, against the truth.

Arrays in, DataFrames out (the figures are ltlab.viz.label_shift): the notebook reads the run,
fits its calibration (widgets.em_calibration) and calls these. The statistics live in
ltlab.evaluation (prior_intervals, reweighting); this module only picks the subsets and the
truths a run's test set provides.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ltlab.evaluation import calibrated_em as CE
from ltlab.evaluation import metrics as M
from ltlab.evaluation import prior_intervals as PI
from ltlab.evaluation import reweighting as R
from ltlab.evaluation import shift
from ltlab.evaluation.intervals import format_ci

SHOWN_SHIFTS = ("forward50", "uniform", "backward50")


def subset_indices(labels, shift_name: str, seed: int = 0, subsets: dict | None = None) -> np.ndarray:
    """Indices of a named test distribution: from ``subsets`` (list-file benchmarks) or the
    CIFAR-style protocol (shift.shift_subset)."""
    if subsets is not None:
        if shift_name not in subsets:
            raise ValueError(f"test distribution {shift_name!r}: this run has {', '.join(subsets)}")
        return np.asarray(subsets[shift_name])
    y = np.asarray(labels).astype(np.int64).ravel()
    return shift.shift_subset(y, *shift.parse_shift(shift_name), seed=seed, num_classes=int(y.max() + 1))


def _val_arrays(val):
    return (None, None) if val is None else (val["logits"], val["labels"])


def prior_intervals(logits, labels, calibration: CE.Calibration, val=None, shift_name: str = "forward50",
                    seed: int = 0, subsets: dict | None = None, n_resamples: int = 500,
                    level: float = 0.95) -> PI.PriorIntervals:
    """Bootstrap intervals on EM's estimate of one test distribution's prior (labels give the
    true prior only). ``val``: the run's val predictions ({'logits', 'labels'}), resampled with
    the test images so the interval includes the calibration's noise; None: test images only."""
    y = np.asarray(labels).astype(np.int64).ravel()
    idx = subset_indices(y, shift_name, seed, subsets)
    zv, yv = _val_arrays(val)
    q = np.bincount(y[idx], minlength=np.shape(logits)[1]) / idx.size
    return PI.em_prior_intervals(np.asarray(logits)[idx], calibration, zv, yv, true_prior=q,
                                 n_resamples=n_resamples, seed=seed, level=level)


def prior_interval_table(logits, labels, calibration: CE.Calibration, val=None, shifts=SHOWN_SHIFTS,
                         seed: int = 0, subsets: dict | None = None, n_resamples: int = 500,
                         level: float = 0.95) -> pd.DataFrame:
    """One row per test distribution: n, EM's TV to the true prior with its interval, how many
    classes' intervals contain their true prior, and the resamples EM flagged."""
    rows = {}
    for name in shifts:
        if subsets is not None and name not in subsets:
            continue
        pi = prior_intervals(logits, labels, calibration, val, name, seed, subsets, n_resamples, level)
        t = pi.table()
        rows[name] = {"n": int(np.asarray(subset_indices(labels, name, seed, subsets)).size), "tv": pi.tv,
                      "tv_lo": pi.tv_ci[0], "tv_hi": pi.tv_ci[1],
                      "classes covered": f"{int(t['covered'].sum())} / {len(t)}",
                      "capped / collapsed": f"{pi.n_capped} / {pi.n_collapsed}"}
    df = pd.DataFrame.from_dict(rows, orient="index")
    df.index.name = "test distribution"
    df.attrs["method"] = (f"{level:.0%} percentile bootstrap over {pi.resampled}, {n_resamples} resamples, "
                          f"calibration {calibration.method}") if rows else ""
    return df


def calibration_comparison(logits, labels, calibrations: dict, val=None, shift_name: str = "forward50",
                           reference: str | None = None, seed: int = 0, subsets: dict | None = None,
                           n_resamples: int = 500, level: float = 0.95) -> pd.DataFrame:
    """EM's TV to the true prior of one distribution with each calibration ({name: Calibration}),
    its interval, and the paired difference to ``reference`` (default: the first) on the same
    test and val resamples (prior_intervals.tv_difference): an interval of the difference that
    covers 0 says this run's data cannot tell the two calibrations apart. A calibration equal to an
    earlier one (the 'auto' choice passed again under its method's name) is shown once."""
    ref = reference if reference is not None else next(iter(calibrations))
    seen, pis = set(), {}
    for name, cal in calibrations.items():
        key = (cal.method, cal.temperature, tuple(cal.bias))
        if key in seen:            # the chosen calibration again under its own name
            continue
        seen.add(key)
        pis[name] = prior_intervals(logits, labels, cal, val, shift_name, seed, subsets, n_resamples, level)
    rows = {}
    for name, pi in pis.items():
        d, ci = PI.tv_difference(pi, pis[ref], level)
        rows[name] = {"tv": pi.tv, "tv_lo": pi.tv_ci[0], "tv_hi": pi.tv_ci[1], f"tv - tv {ref}": d,
                      "diff_lo": ci[0], "diff_hi": ci[1]}
    df = pd.DataFrame.from_dict(rows, orient="index")
    df.index.name = "calibration"
    return df


def true_accuracies(logits, labels, train_counts) -> dict:
    """Balanced accuracy and many / medium / few (class means) of the whole test set: the truth
    of the uniform test distribution when the test set is taken as the population."""
    z = np.asarray(logits)
    y = np.asarray(labels).astype(np.int64).ravel()
    per_class = M.per_class_accuracy(z.argmax(1), y, z.shape[1])
    out = {"balanced_acc": float(np.nanmean(per_class))}
    out.update({g: v for g, v in M.group_accuracy(per_class, train_counts).items() if v is not None})
    return out


def biased_sample_table(logits, labels, train_counts, calibration: CE.Calibration, shift_name: str = "forward50",
                        n: int | None = None, seed: int = 0, subsets: dict | None = None,
                        n_resamples: int = 1000, level: float = 0.95, val=None) -> pd.DataFrame:
    """Uniform-test accuracy estimated from a labelled sample drawn with a label shift, against
    the truth.

    The sample: ``n`` images (default: as many as the named subset holds) drawn at random from
    the test set with the class distribution s of the named shifted subset
    (reweighting.draw_shifted_sample). Each estimator of reweighting.estimate_target_accuracy
    (naive, ipw, snipw, dr; labels drawn at random, so i.i.d. resampling) is run three times:
    with the known s ("known prior"), with s estimated by the sample's own label frequencies
    ("label frequencies": ipw = snipw = dr, the post-stratified estimate), and with s estimated
    by EM from the sample's logits alone
    ("EM-estimated prior", estimated again on each resample, so its interval carries the
    estimate's noise; with ``val``, the run's val predictions, the calibration is refitted on val
    resamples too, so it carries the calibration's noise). dr's outcome model uses the
    calibration's temperature. Truth: the
    full test set's balanced and per-group accuracy (:func:`true_accuracies`).

    Rows: weights, estimator, target, estimate, ci_lo, ci_hi, truth, error, covered.
    ``df.attrs``: the sample's size, the seed and the TV of the EM-estimated prior to s.
    """
    z = np.asarray(logits)
    y = np.asarray(labels).astype(np.int64).ravel()
    C = z.shape[1]
    sub = subset_indices(y, shift_name, seed, subsets)
    s = np.bincount(y[sub], minlength=C) / sub.size
    idx = R.draw_shifted_sample(y, s, sub.size if n is None else n, seed=seed)
    em = CE.estimate_prior(z[idx], calibration)
    truth = true_accuracies(z, y, train_counts)
    zv, yv = _val_arrays(val)
    rows = []
    for weights, prior, em_cal in (("known prior", s, None), ("label frequencies", "empirical", None),
                                   ("EM-estimated prior", None, calibration)):
        val_kw = dict(val_logits=zv, val_labels=yv) if em_cal is not None and zv is not None else {}
        for r in R.estimate_target_accuracy(z[idx], y[idx], prior, temperature=calibration.temperature,
                                            train_counts=train_counts, n_resamples=n_resamples, seed=seed,
                                            level=level, stratified=False, em_calibration=em_cal, **val_kw):
            t = truth.get(r["target"])
            est, lo, hi = r["estimate"], r["ci_lo"], r["ci_hi"]
            rows.append({"weights": weights, **r, "truth": t,
                         "error": None if est is None or t is None else est - t,
                         "covered": None if lo is None or t is None else bool(lo <= t <= hi)})
    df = pd.DataFrame(rows)
    df.attrs.update(sample=f"{idx.size} images drawn at random with the class distribution of {shift_name} "
                           f"(seed {seed})", em_tv=CE.total_variation(em.prior, s), em_status=em.status,
                    calibration=calibration.method)
    return df


def format_sample_table(table: pd.DataFrame) -> pd.DataFrame:
    """:func:`biased_sample_table` for reading: one row per (weights, estimator), one column per
    target, 'estimate [lo, hi]' in percent, a '*' where the interval misses the truth, and the
    truth as the last row."""
    cells = {}
    for r in table.itertuples(index=False):
        text = format_ci(r.estimate, None if r.ci_lo is None else [r.ci_lo, r.ci_hi])
        cells.setdefault((r.weights, r.estimator), {})[r.target] = text + (" *" if r.covered is False else "")
    out = pd.DataFrame.from_dict(cells, orient="index")
    truth = table.drop_duplicates("target").set_index("target")["truth"]
    out.loc[("truth", "full test set"), :] = [format_ci(truth.get(t), None) for t in out.columns]
    out.index = pd.MultiIndex.from_tuples(out.index, names=["weights", "estimator"])
    return out
