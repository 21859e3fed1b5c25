"""A list benchmark's data for a run (ImageNet-LT, Places-LT, iNaturalist 2018 or any list): the
split lists of ltlab.data.lists, decoded by worker processes into device batches (ltlab.data.list_loader).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ltlab.data.errors import DataError
from ltlab.data.list_loader import ListDataset, ListLoader, eval_transform, train_transform
from ltlab.data.lists import (
    BENCHMARKS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    SplitList,
    benchmark_lists,
    class_counts,
    shift_positions,
)
from ltlab.data.sharding import shard_bounds
from ltlab.io import core_share


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
    shards_by_sampler = True   # ltlab.training.distributed: each process loads only its share of an epoch

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
