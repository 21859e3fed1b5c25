"""Data layer: sources -> long-tailed subset -> device-resident splits -> GpuLoaders.

``build_data(cfg, device)`` is the one entry point the trainer needs; the pieces (counts,
sources, loader) are public for notebooks and tests.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ltlab.data.counts import carve_val, lt_counts, lt_subset, unused_val
from ltlab.data.errors import DataError
from ltlab.data.gpu_loader import CIFAR_MEAN, CIFAR_STD, GpuLoader, eval_batch_size
from ltlab.data.list_bundle import build_list_data
from ltlab.data.sources import CIFAR10_CLASSES, Source, load_cifar, load_demo, load_image_folder

__all__ = ["DataError", "DataBundle", "build_data", "GpuLoader", "CIFAR_MEAN", "CIFAR_STD", "CIFAR10_CLASSES",
           "lt_counts", "lt_subset", "carve_val", "unused_val", "resolve_val_split", "load_cifar", "load_image_folder", "load_demo", "Source"]

SMALL_DATASETS = ("demo", "cifar10_lt", "cifar100_lt", "folder")
LARGE_DATASETS = ("imagenet_lt", "places_lt", "inat18", "list")
DEMO_IMB_FACTOR = 100


@dataclass
class DataBundle:
    """A run's data on its device: uint8 images (N, 3, H, W), int64 labels; val may be None."""
    num_classes: int
    class_names: list
    train_counts: np.ndarray          # (C,) int64: images per class actually trained on
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor | None
    val_y: torch.Tensor | None
    test_x: torch.Tensor
    test_y: torch.Tensor
    mean: tuple
    std: tuple
    img_size: int | tuple             # H for square images, else (H, W)
    channels_last: bool = True
    train_indices: np.ndarray | None = None   # positions of the training images in the full train split
    val_indices: np.ndarray | None = None     # same, for a val split drawn from the train split (unused / carve)
    origin: str = ""
    extra: dict = field(default_factory=dict)

    def train_loader(self, batch_size: int, seed: int, sampler=None, drop_last: bool = False,
                     rotate: float = 0.0) -> GpuLoader:
        return GpuLoader(self.train_x, self.train_y, batch_size, train=True, mean=self.mean, std=self.std,
                         seed=seed, sampler=sampler, drop_last=drop_last, channels_last=self.channels_last,
                         rotate=rotate)

    def eval_loader(self, split: str, batch_size: int | None = None) -> GpuLoader:
        """Fixed-order, unaugmented batches of 'train', 'val' or 'test'."""
        if split not in ("train", "val", "test"):
            raise DataError(f"split {split!r}: expected one of train, val, test")
        x, y = getattr(self, f"{split}_x"), getattr(self, f"{split}_y")
        if x is None:
            raise DataError("split 'val' is absent for this dataset: set val_split=carve (val_per_class "
                            "images a class held out of training) or give the dataset a val split")
        return GpuLoader(x, y, batch_size or eval_batch_size(x.device), train=False, mean=self.mean, std=self.std,
                         channels_last=self.channels_last)


def _resolve_device(device) -> torch.device:
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _to_device(x: np.ndarray | None, y: np.ndarray | None, device: torch.device):
    if x is None:
        return None, None
    # copy the compact NHWC bytes over first, then reorder on the device (fast there)
    xt = torch.from_numpy(np.ascontiguousarray(x)).to(device).permute(0, 3, 1, 2).contiguous()
    yt = torch.from_numpy(np.asarray(y, dtype=np.int64)).to(device)
    return xt, yt


def _channel_stats(x: np.ndarray) -> tuple[tuple, tuple]:
    """Per-channel mean and std in [0, 1] units, in slices so a large uint8 array never turns float64."""
    n, total, sq = len(x), np.zeros(3), np.zeros(3)
    for s in range(0, n, 4096):
        part = x[s:s + 4096].reshape(-1, 3).astype(np.float64) / 255.0
        total += part.sum(0)
        sq += (part ** 2).sum(0)
    count = max(1, n * x.shape[1] * x.shape[2])
    mean = total / count
    std = np.sqrt(np.maximum(sq / count - mean ** 2, 1e-12))
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


# The validation split's seed is offset from the subset's so the two draws never share a stream.
VAL_SEED_OFFSET = 1


def resolve_val_split(cfg) -> str:
    """Where a run's validation split comes from: 'shipped' (the demo's val/, a folder's val/,
    a benchmark's val list), 'unused' (CIFAR training images outside the long-tailed subset),
    'carve' (held out of the training subset) or 'none'."""
    mode = getattr(cfg, "val_split", "auto")
    if getattr(cfg, "val_per_class", 20) == 0:
        return "none"                 # configs written before val_split existed: 0 meant no split
    if mode != "auto":
        return mode
    if cfg.dataset in ("cifar10_lt", "cifar100_lt"):
        return "unused"
    return "shipped"                  # demo, folder (its val/ when present), list datasets


def _select(cfg, src: Source):
    """(train_idx, val (x, y) or None, val_idx or None) from the source's full train split."""
    n_train = len(src.train_y)
    mode = resolve_val_split(cfg)
    if cfg.dataset in ("demo", "folder"):
        idx = np.arange(n_train)       # the demo and an image folder are taken as already long-tailed
    else:
        c = src.num_classes
        img_max = n_train // c          # LDAM: len(train) / C, 5,000 for CIFAR-10 and 500 for CIFAR-100
        counts = lt_counts(img_max, c, cfg.imb_factor, cfg.imb_profile)
        idx = lt_subset(src.train_y, counts, seed=cfg.lt_seed)
    if mode == "shipped":
        return idx, (src.val_x, src.val_y), None
    if mode == "unused":
        idx, val_idx = unused_val(src.train_y, idx, cfg.val_per_class, seed=cfg.lt_seed + VAL_SEED_OFFSET)
        return idx, (src.train_x[val_idx], src.train_y[val_idx]), val_idx
    if mode == "carve":
        idx, val_idx = carve_val(idx, src.train_y, cfg.val_per_class, seed=cfg.lt_seed)
        return idx, (src.train_x[val_idx], src.train_y[val_idx]), val_idx
    return idx, (None, None), None


def build_data(cfg, device) -> DataBundle:
    """Load ``cfg.dataset``, draw its long-tailed subset and put every split on ``device``.

    demo: the shipped set (data/demo), its val split, imb_factor must be 100; data_root ignored.
    cifar10_lt / cifar100_lt: LDAM-DRW subset (lt_counts + lt_subset(lt_seed)) of the full train
    split; val (val_split auto = unused): val_per_class images a class drawn (seed lt_seed + 1)
    from the training images outside the subset, or carved out of it with val_split=carve.
    folder: data_root as given (already long-tailed); val from val/, or carved with val_split=carve.
    """
    name = cfg.dataset
    if name in LARGE_DATASETS:
        # split lists of image files, decoded by DataLoader workers (ltlab.data.lists)

        return build_list_data(cfg, device)
    if name not in SMALL_DATASETS:
        raise DataError(f"dataset {name!r}: expected one of {', '.join(SMALL_DATASETS + LARGE_DATASETS)}")
    if name == "demo":
        if float(cfg.imb_factor) != DEMO_IMB_FACTOR or cfg.imb_profile != "exp":
            raise DataError(f"imb_factor = {cfg.imb_factor:g} (profile {cfg.imb_profile!r}) with dataset 'demo': "
                            f"the demo set is fixed at imb_factor = {DEMO_IMB_FACTOR} (exp); use cifar10_lt for other values")
        src = load_demo()
    elif name == "folder":
        if not cfg.data_root:
            raise DataError("dataset 'folder' with data_root = '': expected data_root=FOLDER holding "
                            "train/<class>/*.jpg and test/<class>/*.jpg")
        src = load_image_folder(cfg.data_root)
    else:
        src = load_cifar(name.replace("_lt", ""), cfg.data_root)
    train_idx, (val_x, val_y), val_idx = _select(cfg, src)

    train_x_np = src.train_x[train_idx]
    train_y_np = src.train_y[train_idx]
    if name == "folder":
        mean, std = _channel_stats(train_x_np)
    else:
        mean, std = CIFAR_MEAN, CIFAR_STD
    dev = _resolve_device(device)
    train_x, train_y = _to_device(train_x_np, train_y_np, dev)
    val_x_t, val_y_t = _to_device(val_x, val_y, dev)
    test_x, test_y = _to_device(src.test_x, src.test_y, dev)
    h, w = src.train_x.shape[1:3]
    return DataBundle(
        num_classes=src.num_classes, class_names=list(src.class_names),
        train_counts=np.bincount(train_y_np, minlength=src.num_classes).astype(np.int64),
        train_x=train_x, train_y=train_y, val_x=val_x_t, val_y=val_y_t, test_x=test_x, test_y=test_y,
        mean=tuple(mean), std=tuple(std), img_size=int(h) if h == w else (int(h), int(w)),
        channels_last=bool(getattr(cfg, "channels_last", True)),
        train_indices=np.asarray(train_idx, dtype=np.int64),
        val_indices=None if val_idx is None else np.asarray(val_idx, dtype=np.int64),
        origin=src.origin)
