"""Split-list datasets: ImageNet-LT, Places-LT, iNaturalist 2018 and user-given lists.

A split list has one ``relative/path/to/image label`` line per image (the OLTR / Decoupling
format), plain or gzip'd, paths relative to ``data_root`` (the user's copy of the images).
Class counts, and with them many/medium/few, come from the training list. The images
themselves are read by ltlab.data.list_loader.
"""
from __future__ import annotations

import gzip
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ltlab.data.errors import DataError
from ltlab.data.shift_subsets import LIST_BENCHMARKS, list_shift_subsets
from ltlab.resources import data_dir

SPLITS_DIR = data_dir() / "splits"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# ---------------------------------------------------------------------------- list files
@dataclass(frozen=True)
class SplitList:
    # Fixed-width bytes rather than a list of str: forked workers read these pages without
    # touching Python refcounts, so they stay shared instead of being copied into every worker.
    paths: np.ndarray
    labels: np.ndarray        # int64
    source: str = ""

    def __len__(self) -> int:
        return len(self.labels)

    def path(self, i: int) -> str:
        return self.paths[i].decode()


def read_list(path) -> SplitList:
    """Read a ``path label`` list (gzip'd or plain, told apart by content, not by name)."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"split list '{p}' not found")
    with open(p, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    paths, labels = [], []
    for ln, line in enumerate(raw.decode("utf-8").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.rsplit(None, 1)    # the label is the last field; a path may hold spaces
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit() or int(parts[1]) < 0:
            raise DataError(f"split list '{p}', line {ln}: expected 'relative/path label' with a label >= 0, "
                            f"got {line.strip()[:80]!r}")
        paths.append(parts[0].strip().encode())
        labels.append(int(parts[1]))
    if not paths:
        raise DataError(f"split list '{p}' holds no 'path label' line")
    return SplitList(np.array(paths, dtype=np.bytes_), np.asarray(labels, dtype=np.int64), str(p))


def class_counts(labels, num_classes: int | None = None) -> np.ndarray:
    return np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes or 0).astype(np.int64)


# ---------------------------------------------------------------------------- benchmarks
@dataclass(frozen=True)
class Benchmark:
    folder: str               # under data/splits
    stem: str                 # file names: <stem>_<split>.txt.gz
    num_classes: int
    train_size: int
    train_shipped: bool
    val: str | None           # split name of the validation list, if the benchmark has one
    test: str                 # split name of the test list
    layout: str               # where data_root must hold the images (for messages)


BENCHMARKS = {
    "imagenet_lt": Benchmark("ImageNet_LT", "ImageNet_LT", 1000, 115_846, False, "val", "test",
                             "train/<wnid>/*.JPEG and val/<wnid>/ILSVRC2012_val_*.JPEG (ImageNet-2012, "
                             "validation images sorted into class folders)"),
    "places_lt": Benchmark("Places_LT", "Places_LT", 365, 62_500, True, "val", "test",
                           "train/<class>/*.jpg and val/<class>/*.jpg (Places365-Standard easyformat), "
                           "or data_256/ and val_256/ (the official small-image layout)"),
    "inat18": Benchmark("iNaturalist18", "iNaturalist18", 8142, 437_513, False, None, "val",
                        "train_val2018/<kingdom>/<class id>/*.jpg (iNaturalist 2018)"),
}


def _resolve(path: str, root: Path, key: str) -> Path:
    p = Path(path).expanduser()
    for cand in ([p] if p.is_absolute() else [root / p, p]):
        if cand.is_file():
            return cand
    raise DataError(f"config key '{key}' = '{path}': no such file (relative paths are taken from data_root "
                    f"'{root}' or the working directory)")


def _benchmark_folder(name: str, root: Path) -> str:
    # Places-LT comes in two spellings of the same images; the shipped v2 lists match the
    # official data_256/ + val_256/ layout, the v1 lists the easyformat train/ + val/ one.
    if name == "places_lt" and (root / "data_256").is_dir():
        return "Places_LT_v2"
    return BENCHMARKS[name].folder


def _train_list_path(name: str, root: Path) -> Path:
    b = BENCHMARKS[name]
    fname = f"{b.stem}_train.txt"
    folder = _benchmark_folder(name, root)
    cands = [d / f for d in (root, root / b.folder, SPLITS_DIR / folder) for f in (fname, fname + ".gz")]
    for c in cands:
        if c.is_file():
            return c
    raise DataError(f"dataset '{name}': training list '{fname}' not found (looked for {fname}[.gz] in "
                    f"{root}, {root / b.folder} and {SPLITS_DIR / folder}); it is not shipped with ltlab: put the "
                    f"standard {b.train_size:,}-line list ('relative/path label' lines, as released with "
                    f"OLTR / classifier-balancing) at {root / fname}, or set train_list=PATH; the images "
                    f"are read from data_root: {b.layout}")


def _shipped(name: str, root: Path, split: str) -> Path:
    return SPLITS_DIR / _benchmark_folder(name, root) / f"{BENCHMARKS[name].stem}_{split}.txt.gz"


def _read(given: str, root: Path, key: str, default: Path | None = None) -> SplitList | None:
    """The list the config key names, else ``default`` (None: no such split)."""
    if given:
        return read_list(_resolve(given, root, key))
    return None if default is None else read_list(default)


def benchmark_lists(name: str, data_root="", train_list: str = "", val_list: str = "", test_list: str = "") -> dict:
    """{'train', 'val' (or None), 'test': SplitList} of imagenet_lt, places_lt, inat18 or list.

    Named benchmarks read the lists shipped in data/splits, except the training lists of
    ImageNet-LT and iNaturalist 2018, which the user provides (``train_list``, or
    ``<data_root>/<Stem>_train.txt``). Any list can be overridden by the *_list keys.
    """
    root = Path(data_root).expanduser() if data_root else Path(".")
    if name == "list":
        if not (train_list and test_list):
            raise DataError("dataset 'list': set train_list and test_list (and optionally val_list) to "
                            "'relative/path label' list files; image paths are relative to data_root")
        return {"train": _read(train_list, root, "train_list"), "val": _read(val_list, root, "val_list"),
                "test": _read(test_list, root, "test_list")}
    if name not in BENCHMARKS:
        raise DataError(f"dataset {name!r}: expected one of {', '.join(BENCHMARKS)}, list")
    b = BENCHMARKS[name]
    train = _shipped(name, root, "train") if b.train_shipped else None if train_list else _train_list_path(name, root)
    lists = {"train": _read(train_list, root, "train_list", train),
             "val": _read(val_list, root, "val_list", b.val and _shipped(name, root, b.val)),
             "test": _read(test_list, root, "test_list", _shipped(name, root, b.test))}
    _check_benchmark(name, lists["train"])
    return lists


def shot_list(name: str = "imagenet_lt") -> np.ndarray | None:
    """The published (3, C) many/medium/few class mask (ImageNet-LT only), or None."""
    f = SPLITS_DIR / "ImageNet_LT" / "imagenet_lt_shot_list.npy"
    return np.load(f) if name == "imagenet_lt" and f.is_file() else None


def _check_benchmark(name: str, train: SplitList) -> None:
    """A user-supplied training list must be the benchmark's, or its numbers are not comparable."""
    b = BENCHMARKS[name]
    counts = class_counts(train.labels, b.num_classes)
    hint = "; for another list use dataset: list with train_list/test_list"
    if len(train) != b.train_size or len(counts) != b.num_classes:
        raise DataError(f"dataset '{name}': training list '{train.source}' has {len(train):,} images in "
                        f"{len(counts)} classes, expected {b.train_size:,} in {b.num_classes}{hint}")
    shots = shot_list(name)
    if shots is not None:
        mine = np.stack([counts > 100, (counts >= 20) & (counts <= 100), counts < 20])
        if not np.array_equal(mine, shots.astype(bool)):
            raise DataError(f"dataset '{name}': training list '{train.source}' gives many/medium/few classes "
                            f"{mine.sum(1).tolist()}, not the published shot list {shots.sum(1).tolist()}{hint}")


def shift_positions(name: str, test: SplitList) -> dict:
    """{distribution: positions in the test split} from the shipped test-agnostic lists
    (forwardR / uniform / backwardR; ltlab.data.shift_subsets.list_shift_subsets); {} for a plain list."""
    if name not in LIST_BENCHMARKS:
        return {}
    try:
        return list_shift_subsets([p.decode() for p in test.paths], SPLITS_DIR, name, test_labels=test.labels)
    except ValueError as e:   # a user-given test list the shipped shift lists do not index
        warnings.warn(f"dataset '{name}': no test-shift subsets ({e})", stacklevel=2)
        return {}


def shift_subsets_for_run(config: dict) -> dict:
    """The shift subsets of a run, from its config.yaml (its predictions are in test-list order)."""
    name = config.get("dataset")
    if name not in BENCHMARKS:
        return {}
    root = Path(config.get("data_root") or ".").expanduser()
    test = _read(config.get("test_list") or "", root, "test_list", _shipped(name, root, BENCHMARKS[name].test))
    return shift_positions(name, test)


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
        subs = list_shift_subsets(test_list, splits_dir or SPLITS_DIR, name, test_labels=test_labels)
    else:
        subs = shift_subsets_for_run(config)
    if not subs:
        raise ValueError(f"dataset {name}: no shift list matches the run's test split; set test_list "
                         "(the test list in prediction order) and splits_dir (the folder of the shift lists)")
    return subs


# ---------------------------------------------------------------------------- the bundle
