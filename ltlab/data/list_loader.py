"""Images of a split list, decoded and augmented in DataLoader workers, batched onto the device.

PIL decoding and the Decoupling augmentation (RandomResizedCrop + flip + ColorJitter(0.4, 0.4,
0.4, 0); test Resize(img_size*256/224) + CenterCrop) run in the workers, which return uint8;
ListLoader copies to the device and normalises there, so the training loop sees the same
``(x, y)`` batches as from the GPU-resident loader. Augmentation is seeded per image from
(seed, epoch, position in the epoch's order): reproducible for any number of workers or
processes, and after a resume.
"""
from __future__ import annotations

import math
import os

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, get_worker_info

from ltlab.data.errors import DataError
from ltlab.data.gpu_loader import epoch_seed
from ltlab.data.sharding import ShardedSampler


def train_transform(size: int):
    from torchvision import transforms as T

    return T.Compose([T.RandomResizedCrop(size), T.RandomHorizontalFlip(), T.ColorJitter(0.4, 0.4, 0.4, 0.0),
                      T.PILToTensor()])


def eval_transform(size: int):
    from torchvision import transforms as T

    return T.Compose([T.Resize(round(size * 256 / 224)), T.CenterCrop(size), T.PILToTensor()])


class ListDataset(Dataset):
    """(uint8 (3, S, S) tensor, label) per list entry. An item is an index, or (index, seed):
    the seed fixes that image's random crop, flip and jitter."""

    def __init__(self, root, split, transform):   # split: ltlab.data.lists.SplitList
        self.root, self.split, self.transform = str(root), split, transform

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, item):
        i, seed = item if isinstance(item, tuple) else (item, None)
        path = os.path.join(self.root, self.split.path(i))
        try:
            from PIL import Image

            with Image.open(path) as im:
                img = im.convert("RGB")
        except OSError as e:
            raise DataError(f"image '{path}' unreadable ({type(e).__name__}: {e})") from None
        if seed is None:
            return self.transform(img), int(self.split.labels[i])
        # torchvision draws from the global torch RNG; in the main process (no workers) leave it as it was
        with torch.random.fork_rng(devices=[], enabled=get_worker_info() is None):
            torch.manual_seed(seed)
            return self.transform(img), int(self.split.labels[i])


_MIX = np.uint64(0x9E3779B97F4A7C15)   # odd 64-bit constant: spreads neighbouring positions apart


def sample_seeds(seed: int, epoch: int, positions) -> np.ndarray:
    """One 63-bit augmentation seed per global position of an epoch's order."""
    base = np.uint64(epoch_seed(seed, epoch))
    with np.errstate(over="ignore"):
        s = base + np.asarray(positions, dtype=np.uint64) * _MIX
    return (s & np.uint64(2 ** 63 - 1)).astype(np.int64)


class _Items(Sampler):
    """What the DataLoader hands its workers, drawn anew at each iteration."""

    def __init__(self, owner):
        self.owner = owner

    def __iter__(self):
        return iter(self.owner.items())

    def __len__(self):
        return self.owner.num_samples()


class ListLoader:
    """Batches ``(x, y)`` on ``device``: x float, normalised, channels_last when asked.

    train=True: this process's share of each epoch (ltlab.data.sharding.ShardedSampler over
    ``sampler``, or shuffling), augmented; call ``set_epoch`` first. train=False: the items
    ``positions`` (default all) in order, unaugmented.
    """

    def __init__(self, dataset: ListDataset, batch_size: int, *, device, mean, std, train: bool, seed: int = 0,
                 sampler=None, rank: int = 0, world: int = 1, positions=None, num_workers: int = 0,
                 channels_last: bool = True, drop_last: bool = False):
        self.dataset, self.batch_size, self.train, self.seed = dataset, int(batch_size), bool(train), int(seed)
        self.device = torch.device(device)
        self.channels_last, self.drop_last, self.epoch = bool(channels_last), bool(drop_last), 0
        self.order = ShardedSampler(sampler, len(dataset), rank, world) if train else None
        self.positions = np.arange(len(dataset)) if positions is None else np.asarray(positions, dtype=np.int64)
        std_t = torch.tensor(std, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        mean_t = torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self._scale, self._shift = 1.0 / (255.0 * std_t), -mean_t / std_t   # ToTensor + Normalize as x*a + b
        workers = int(num_workers)
        self.loader = DataLoader(dataset, batch_size=self.batch_size, sampler=_Items(self), num_workers=workers,
                                 pin_memory=self.device.type == "cuda", drop_last=self.drop_last,
                                 persistent_workers=self.train and workers > 0,
                                 prefetch_factor=4 if workers > 0 else None)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def num_samples(self) -> int:
        return len(self.order) if self.train else len(self.positions)

    def __len__(self) -> int:
        n = self.num_samples()
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def items(self) -> list:
        if not self.train:
            return self.positions.tolist()
        g = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))   # the GpuLoader's stream, on the CPU
        idx, pos = self.order.share(self.epoch, g, "cpu")
        return list(zip(idx.tolist(), sample_seeds(self.seed, self.epoch, pos.numpy()).tolist()))

    def __iter__(self):
        try:
            yield from self._batches()
        except DataError as e:   # raised in a worker, re-raised here wrapped in its traceback
            raise DataError(_worker_message(str(e))) from None

    def _batches(self):
        for xb, yb in self.loader:
            xb = xb.to(self.device, non_blocking=True)
            if self.channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            yield xb.float().mul_(self._scale).add_(self._shift), yb.to(self.device, non_blocking=True)


def _worker_message(msg: str) -> str:
    """The DataError's own one-line message from torch's "Caught DataError in DataLoader worker
    process N. Original Traceback ..." text, whose last line is "<module>.DataError: <message>"."""
    last = msg.rstrip().splitlines()[-1] if msg.strip() else msg
    head, sep, rest = last.partition("DataError: ")
    return rest if sep and msg.startswith("Caught ") else msg
