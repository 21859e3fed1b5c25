"""Split-list datasets: ImageNet-LT, Places-LT, iNaturalist 2018 and user-given lists.

A split list has one ``relative/path/to/image label`` line per image (the OLTR / Decoupling
format), plain or gzip'd, paths relative to ``data_root`` (the user's copy of the images).
Class counts, and with them many/medium/few, come from the training list. The images
themselves are read by ltlab.data.list_loader.
"""
from __future__ import annotations

import gzip
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ltlab.data.errors import DataError
from ltlab.data.list_loader import ListDataset, ListLoader, eval_transform, train_transform
from ltlab.io import core_share
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
    (forwardR / uniform / backwardR; ltlab.shift.list_shift_subsets); {} for a plain list."""
    from ltlab import shift

    if name not in shift.LIST_BENCHMARKS:
        return {}
    try:
        return shift.list_shift_subsets([p.decode() for p in test.paths], SPLITS_DIR, name, test_labels=test.labels)
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


# ---------------------------------------------------------------------------- the bundle
@dataclass
class ListBundle:
    """DataBundle for split lists: the same fields and loaders the trainer and the methods use,
    with images read from disk instead of held on the device."""
    num_classes: int
    class_names: list
    train_counts: np.ndarray
    root: str
    train: SplitList
    val: SplitList | None
    test: SplitList
    device: torch.device
    img_size: int = 224
    num_workers: int = 8
    mean: tuple = IMAGENET_MEAN
    std: tuple = IMAGENET_STD
    channels_last: bool = True
    origin: str = ""
    test_shifts: dict = field(default_factory=dict)   # distribution -> positions in the test split
    extra: dict = field(default_factory=dict)
    train_indices = None
    shards_by_sampler = True   # ltlab.distributed: each process loads only its share of an epoch

    # the label / presence fields the methods read from a DataBundle (val_x: finish_run's test for a val split)
    train_y = property(lambda self: torch.from_numpy(self.train.labels))
    test_y = property(lambda self: torch.from_numpy(self.test.labels))
    val_y = property(lambda self: None if self.val is None else torch.from_numpy(self.val.labels))
    val_x = property(lambda self: self.val)

    def train_loader(self, batch_size: int, seed: int, sampler=None, drop_last: bool = False, *,
                     rank: int = 0, world: int = 1) -> ListLoader:
        """batch_size images per process; with world > 1 this process's share of each epoch."""
        ds = ListDataset(self.root, self.train, train_transform(self.img_size))
        return ListLoader(ds, batch_size, device=self.device, mean=self.mean, std=self.std, train=True, seed=seed,
                          sampler=sampler, rank=rank, world=world, num_workers=self.num_workers,
                          channels_last=self.channels_last, drop_last=drop_last)

    def eval_loader(self, split: str, batch_size: int = 256, *, shard=None) -> ListLoader:
        """Fixed-order, unaugmented batches of 'train', 'val', 'test' or a test-shift subset
        ('forward50', ...); ``shard=(rank, world)`` keeps a contiguous part of it."""
        from ltlab.distributed import shard_bounds

        if split in self.test_shifts:
            lst, pos = self.test, np.asarray(self.test_shifts[split])
        elif split in ("train", "val", "test"):
            lst = getattr(self, split)
            if lst is None:
                raise DataError("split 'val' is absent for this dataset: set val_list to a list file")
            pos = np.arange(len(lst))
        else:
            names = ", ".join(["train", "val", "test", *self.test_shifts])
            raise DataError(f"split {split!r}: expected one of {names}")
        if shard is not None:
            s, e = shard_bounds(len(pos), *shard)
            pos = pos[s:e]
        ds = ListDataset(self.root, lst, eval_transform(self.img_size))
        return ListLoader(ds, batch_size, device=self.device, mean=self.mean, std=self.std, train=False,
                          positions=pos, num_workers=min(self.num_workers, math.ceil(len(pos) / batch_size)),
                          channels_last=self.channels_last)


def _class_names(train: SplitList, num_classes: int) -> list:
    """Each class's name: the folder of its first training image (wnid, scene, species id)."""
    classes, first = np.unique(train.labels, return_index=True)
    names = [str(c) for c in range(num_classes)]
    for c, i in zip(classes.tolist(), first.tolist()):
        names[c] = os.path.basename(os.path.dirname(train.path(i))) or names[c]
    return names


def _workers(requested: int) -> int:
    """Workers per process: as asked, but not more than this process's share of the cores."""
    return max(0, min(int(requested), core_share(int(os.environ.get("LOCAL_WORLD_SIZE", "1")))))


def build_list_data(cfg, device) -> ListBundle:
    """imagenet_lt | places_lt | inat18 | list -> ListBundle (lists read, images checked)."""
    name = cfg.dataset
    if not cfg.data_root:
        layout = BENCHMARKS[name].layout if name in BENCHMARKS else "the images named by the lists"
        raise DataError(f"dataset '{name}' with data_root = '': set data_root=FOLDER holding {layout}")
    root = Path(cfg.data_root).expanduser()
    if not root.is_dir():
        raise DataError(f"config key 'data_root' = '{cfg.data_root}': no such folder")
    lists = benchmark_lists(name, root, cfg.train_list, cfg.val_list, cfg.test_list)
    for split in ("train", "test"):
        first = root / lists[split].path(0)
        if not first.is_file():
            where = BENCHMARKS[name].layout if name in BENCHMARKS else "the paths of the list files"
            raise DataError(f"dataset '{name}': image '{first}' (first of the {split} list) not found: "
                            f"data_root must hold {where}")
    labels = [lists[s].labels for s in ("train", "val", "test") if lists[s] is not None]
    num_classes = BENCHMARKS[name].num_classes if name in BENCHMARKS else int(max(int(y.max()) for y in labels)) + 1
    if any(int(y.max()) >= num_classes for y in labels):
        raise DataError(f"dataset '{name}': a list holds a label >= {num_classes}, the number of classes")
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu") if str(device) == "auto" \
        else torch.device(device)
    return ListBundle(num_classes=num_classes, class_names=_class_names(lists["train"], num_classes),
                      train_counts=class_counts(lists["train"].labels, num_classes), root=str(root),
                      train=lists["train"], val=lists["val"], test=lists["test"], device=dev,
                      img_size=int(cfg.img_size), num_workers=_workers(cfg.num_workers),
                      channels_last=bool(cfg.channels_last), origin=f"{name} lists under {root}",
                      test_shifts=shift_positions(name, lists["test"]))
