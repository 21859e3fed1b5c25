"""Test-time label shift: long-tailed test subsets and accuracy with/without the test prior.

Protocol (methods.md §4; BalPoE ``test_all_cifar.py``, which reuses SADE's
``IMBALANCECIFAR100(train=False, imb_factor=1/R, reverse=...)``): the balanced test set is
subsampled with the training set's exponential profile. 'forwardR' keeps
n_i = int(n (1/R)^(i/(C-1))) images of class i (head = class 0, as in training),
'backwardR' uses the exponent (C-1-i)/(C-1) (the order reversed), 'uniform' keeps all.
Which images are kept follows the LDAM/SADE code: one RandomState(seed), and for each class
in label order a shuffle of its indices, the first n_i kept. CIFAR-100 forward50 keeps
2,486 images, forward2 7,166.

The large benchmarks ship the subsets as list files instead (``../shared/data/splits``:
``ImageNet_LT_forward50.txt.gz`` ...); :func:`list_shift_subsets` maps them to positions in
the test split by relative path.

EM estimates the prior from calibrated posteriors (ltlab.calibrated_em: BCTS on the val split by
default); an estimate that hit the iteration cap or collapsed is flagged in ``em_status`` and its
accuracy columns are left empty rather than shown as a result.

Everything here is numpy on saved logits, so one run gives the whole table in seconds.
"""
from __future__ import annotations

import gzip
import re
from pathlib import Path

import numpy as np
import pandas as pd

from ltlab import calibrated_em as CE
from ltlab import metrics as M
from ltlab import posthoc

RATIOS = (50, 25, 10, 5, 2)
# forward (training-like head) first, the balanced test in the middle, reversed last: the x
# axis of viz.accuracy_across_shifts reads from "like training" to "opposite of training".
SHIFTS = [f"forward{r}" for r in RATIOS] + ["uniform"] + [f"backward{r}" for r in reversed(RATIOS)]
DIRECTIONS = ("forward", "backward", "uniform")
VARIANTS = ("none", "known", "em")   # the accuracy columns of shift_table

# Methods whose logits already target the balanced prior: their posterior carries no log pi,
# so a known test prior q is corrected with log q - log(1/C), not log q - log pi.
BALANCED_METHODS = ("balanced_softmax", "enmos")

# The large benchmarks: folder under splits/, file stem, and the shift lists that exist.
LIST_BENCHMARKS = {
    "imagenet_lt": ("ImageNet_LT", "ImageNet_LT", RATIOS),
    "places_lt": ("Places_LT_v2", "Places_LT", RATIOS),
    "inat18": ("iNaturalist18", "iNaturalist18", (3, 2)),
}


# ------------------------------------------------------------------------- subsets

def parse_shift(name: str) -> tuple[str, float]:
    """'forward50' -> ('forward', 50.0); 'uniform' -> ('uniform', 1.0)."""
    if name == "uniform":
        return "uniform", 1.0
    m = re.fullmatch(r"(forward|backward)(\d+(?:\.\d+)?)", str(name))
    if not m:
        raise ValueError(f"test distribution {name!r}: expected 'uniform', 'forwardR' or 'backwardR' "
                         "(R the head/tail ratio, e.g. forward50)")
    return m.group(1), float(m.group(2))


def shift_counts(num_per_class: int, num_classes: int, ratio: float, direction: str) -> list[int]:
    """Test images kept per class (class 0 first) for a forward/backward/uniform profile.

    ``ratio`` R is head/tail (50 keeps 100 ... 2 of a 100-per-class test set). 1/R is the
    same double as SADE's literal 0.02, 0.04, ... (division is correctly rounded), so the
    counts match the published subsets bit for bit.
    """
    if direction not in DIRECTIONS:
        raise ValueError(f"direction {direction!r}: expected one of {', '.join(DIRECTIONS)}")
    if num_classes < 1 or num_per_class < 1:
        raise ValueError(f"need num_classes >= 1 and num_per_class >= 1, got {num_classes}, {num_per_class}")
    if direction == "uniform" or num_classes == 1:
        return [int(num_per_class)] * num_classes
    if not ratio >= 1:
        raise ValueError(f"ratio = {ratio!r}: expected head/tail >= 1")
    imb = 1.0 / ratio
    last = num_classes - 1.0
    if direction == "forward":
        return [int(num_per_class * imb ** (i / last)) for i in range(num_classes)]
    return [int(num_per_class * imb ** ((num_classes - 1 - i) / last)) for i in range(num_classes)]


def shift_subset(labels, direction: str, ratio: float = 1.0, seed: int = 0,
                 num_classes: int | None = None) -> np.ndarray:
    """Indices of a forward/backward/uniform test subset, class by class in label order.

    img_max is the per-class test count (100 for CIFAR). For an unbalanced test split the
    smallest class count is used, so every class can supply its quota.
    """
    y = np.asarray(labels).astype(np.int64).ravel()
    c = int(num_classes if num_classes is not None else y.max() + 1)
    have = np.bincount(y, minlength=c)
    if have.shape[0] > c:
        raise ValueError(f"a label is >= num_classes = {c}")
    if have.min() < 1:
        raise ValueError(f"classes {np.flatnonzero(have == 0).tolist()} have no test image: "
                         "a shifted subset needs every class")
    counts = shift_counts(int(have.min()), c, ratio, direction)
    rng = np.random.RandomState(seed)      # SADE: np.random.seed(0), then shuffle per class
    parts = []
    for k, n in enumerate(counts):
        idx = np.flatnonzero(y == k)
        rng.shuffle(idx)
        parts.append(idx[:n])
    return np.concatenate(parts).astype(np.int64)


def shift_subsets(labels, shifts=SHIFTS, seed: int = 0, num_classes: int | None = None) -> dict:
    """{name: indices} for each CIFAR-style test distribution in ``shifts``."""
    return {name: shift_subset(labels, *parse_shift(name), seed=seed, num_classes=num_classes)
            for name in shifts}


# ----------------------------------------------------------------------- list files

def read_split_list(path) -> tuple[list[str], np.ndarray]:
    """(relative paths, int64 labels) of a 'path label' list, gzip'd (.gz) or plain."""
    p = Path(path)
    opener = gzip.open if p.suffix == ".gz" else open
    paths, labels = [], []
    with opener(p, "rt") as f:
        for ln, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 2:
                raise ValueError(f"{p}:{ln}: expected 'relative/path label', got {line.strip()!r}")
            paths.append(parts[0])
            labels.append(int(parts[1]))
    return paths, np.asarray(labels, dtype=np.int64)


def list_shift_files(splits_dir, benchmark: str) -> dict:
    """{distribution name: list file} of a benchmark, ordered like SHIFTS; absent files are left out."""
    if benchmark not in LIST_BENCHMARKS:
        raise ValueError(f"benchmark {benchmark!r}: expected one of {', '.join(LIST_BENCHMARKS)}")
    folder, stem, ratios = LIST_BENCHMARKS[benchmark]
    names = [f"forward{r}" for r in ratios] + ["uniform"] + [f"backward{r}" for r in reversed(ratios)]
    out = {}
    for name in names:
        f = Path(splits_dir) / folder / f"{stem}_{name}.txt.gz"
        if f.is_file():
            out[name] = f
    return out


def _match(test_paths: list[str], wanted: list[str], key) -> np.ndarray | None:
    pos = {}
    for i, p in enumerate(test_paths):
        pos.setdefault(key(p), []).append(i)
    if any(len(v) > 1 for v in pos.values()):
        return None                               # the key is ambiguous in the test split
    try:
        return np.asarray([pos[key(p)][0] for p in wanted], dtype=np.int64)
    except KeyError:
        return None


def list_shift_subsets(test_paths, splits_dir, benchmark: str, test_labels=None) -> dict:
    """{distribution: indices into the test split} from a benchmark's shift lists.

    ``test_paths`` are the relative paths of the test split in prediction order (a list, or
    a list file read with read_split_list). Matching is by relative path; when the lists
    spell paths differently from the test list (Places-LT v1 'val/airfield/x.jpg' vs v2
    'val_256/x.jpg') it falls back to the file name, if that is unique. With
    ``test_labels`` the lists' labels are checked against the test labels.
    """
    if isinstance(test_paths, (str, Path)):
        test_paths, file_labels = read_split_list(test_paths)
        test_labels = file_labels if test_labels is None else test_labels
    test_paths = list(test_paths)
    out = {}
    for name, f in list_shift_files(splits_dir, benchmark).items():
        paths, labels = read_split_list(f)
        idx = _match(test_paths, paths, str)
        if idx is None:
            idx = _match(test_paths, paths, lambda p: p.rsplit("/", 1)[-1])
        if idx is None:
            raise ValueError(f"{f}: its images are not all in the test split (matched neither by "
                             "relative path nor by unique file name)")
        if test_labels is not None and not np.array_equal(np.asarray(test_labels)[idx], labels):
            raise ValueError(f"{f}: labels disagree with the test split's labels")
        out[name] = idx
    return out


def subsets_for_run(config: dict, test_labels, splits_dir="", test_list=""):
    """The test distributions of a run: None for a balanced small-image test split (the
    CIFAR-style subsets are drawn by shift_table), {name: indices} for ImageNet-LT,
    Places-LT and iNat from their shift lists. ``test_list`` (the test list in prediction
    order) and ``splits_dir`` default to the run's own test list and the shipped lists
    (ltlab.data.lists)."""
    name = config.get("dataset")
    if name not in LIST_BENCHMARKS:
        return None
    if test_list:
        if not splits_dir:
            from ltlab.data.lists import SPLITS_DIR as splits_dir
        subs = list_shift_subsets(test_list, splits_dir, name, test_labels=test_labels)
    else:
        from ltlab.data.lists import shift_subsets_for_run
        subs = shift_subsets_for_run(config)
    if not subs:
        raise ValueError(f"dataset {name}: no shift list matches the run's test split; set test_list "
                         "(the test list in prediction order) and splits_dir (the folder of the shift lists)")
    return subs


# ------------------------------------------------------------------- model prior

def model_prior_counts(config: dict, train_counts, pred: dict | None = None) -> np.ndarray:
    """Counts proportional to the label prior the run's logits encode (the 'source' prior).

    A plain CE model's softmax estimates p_train(y|x), prior pi. Training with the logit
    adjustment CE(z + tau log pi) leaves pi^(1 - tau) in the raw logits (balanced softmax:
    tau = 1, uniform); BalPoE's ensemble targets pi^(1 - mean tau) (``balpoe_taus`` in the
    predictions); class-balanced sampling (cRT, LWS, MiSLAS stage two) trains on the
    uniform prior. Everything else is taken at the training prior. This is what the
    known-prior correction and EM divide out; pass explicit counts to override.
    """
    n = np.asarray(train_counts, dtype=np.float64).ravel()
    method = config.get("method", "ce")
    extra = config.get("extra") or {}
    if method == "logit_adjust":
        power = 1.0 - float(extra.get("la_tau", 1.0))
    elif method == "balpoe":
        taus = None if pred is None else pred.get("balpoe_taus")
        power = 0.0 if taus is None else 1.0 - float(np.mean(taus))
    elif method in BALANCED_METHODS or config.get("sampler") == "class_balanced":
        power = 0.0
    else:
        power = 1.0
    if power == 1.0:
        return n.copy()
    return np.maximum(n, 1.0) ** power   # a zero count would make pi^power undefined for power < 0


# -------------------------------------------------------------------------- table

def _accuracy_row(pred, y, c, train_counts, prefix: str) -> dict:
    row = {prefix: M.top1(pred, y)}
    groups = M.group_accuracy(M.per_class_accuracy(pred, y, c), train_counts)
    for g in M.GROUPS:
        row[f"{prefix}_{g}"] = np.nan if groups[g] is None else groups[g]
    return row


def shift_row(logits, labels, train_counts, source_counts=None, calibration: CE.Calibration | None = None,
              em: bool = True) -> dict:
    """Accuracy of one test subset: 'none' (argmax of the logits), 'known' (prior_correct
    with q = the subset's class frequencies), 'em' (the EM estimate of q from the subset's
    calibrated posteriors, no label used), each with its many/medium/few class means by
    training counts; plus the EM columns of :func:`em_columns`."""
    f = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels).astype(np.int64).ravel()
    n, c = f.shape
    src = np.asarray(train_counts if source_counts is None else source_counts, dtype=np.float64)
    q = np.bincount(y, minlength=c) / max(n, 1)
    row = {"n": int(n)}
    row.update(_accuracy_row(f.argmax(1), y, c, train_counts, "none"))
    row.update(_accuracy_row(posthoc.prior_correct(f, src, q).argmax(1), y, c, train_counts, "known"))
    if em:
        cal = calibration if calibration is not None else CE.fit_calibration("none", model_prior=src)
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
    cols["em_calibration"] = calibration.method
    return cols, res


def shift_table(logits, labels, train_counts, shifts=SHIFTS, seed: int = 0, source_counts=None,
                calibration: CE.Calibration | None = None, subsets: dict | None = None,
                em: bool = True) -> pd.DataFrame:
    """One row per test distribution (index 'test distribution', in ``shifts`` order).

    Columns: n, none, known, em (micro top-1 on the subset), {variant}_{many,medium,few}
    (per-class mean by training counts, NaN where the group is absent), em_tv, em_iter,
    em_status, em_calibration. ``subsets`` ({name: indices}, e.g. from list_shift_subsets)
    replaces the CIFAR-style subsets; ``source_counts`` is the prior the logits encode
    (default: train_counts; see model_prior_counts); ``calibration`` (calibrated_em.fit_calibration
    on the val split) gives the posteriors EM works on and leaves the other columns unchanged;
    without it EM runs on the raw logits and em_calibration says 'none'.
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
