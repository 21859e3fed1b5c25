"""Shifted test subsets: which test images form a forwardR / uniform / backwardR test distribution.

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
the test split by relative path. What a model does on these subsets is ltlab.evaluation.shift.
"""
from __future__ import annotations

import gzip
import re
from pathlib import Path

import numpy as np

RATIOS = (50, 25, 10, 5, 2)
# forward (training-like head) first, the balanced test in the middle, reversed last: the x
# axis of viz.accuracy_across_shifts reads from "like training" to "opposite of training".
SHIFTS = [f"forward{r}" for r in RATIOS] + ["uniform"] + [f"backward{r}" for r in reversed(RATIOS)]
DIRECTIONS = ("forward", "backward", "uniform")

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
