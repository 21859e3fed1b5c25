"""A loader for small images that live on the training device as one uint8 tensor.

For CIFAR-sized data the cost of a PIL/DataLoader pipeline (worker processes, per-image Python,
host-to-device copies) exceeds the cost of the model step. Here a batch is a gather from the
resident tensor with the crop offsets and flips folded into the gather indices: a handful of
kernels per batch, no worker processes and no host synchronisation.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from ltlab.data.errors import DataError

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.2010)


def eval_batch_size(device) -> int:
    """Images per evaluation batch. 1,024 keeps a GPU busy; on a CPU a ResNet-32 batch of 1,024
    (64 MB per activation tensor) spills out of the caches: `ltlab bench` evaluated 641 img/s at
    1,024 against 1,439 at 128 on the 2-core AVX-512 machine we measured."""
    return 1024 if torch.device(device).type == "cuda" else 128


def epoch_seed(seed: int, epoch: int) -> int:
    """A well-mixed 63-bit seed for (seed, epoch): neighbouring epochs get unrelated streams, and
    epoch e is reproducible after a resume with no saved RNG state."""
    words = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(epoch) & 0xFFFFFFFF]).generate_state(2, np.uint32)
    return int((int(words[0]) << 31) ^ int(words[1]))


def rotate_batch(x: torch.Tensor, degrees: torch.Tensor) -> torch.Tensor:
    """Images (B, C, H, W) rotated counter-clockwise by ``degrees`` (B,) about their centre,
    nearest neighbour, zero outside: torchvision's ``rotate(img, angle)`` with NEAREST, fill 0
    and expand=False. One affine_grid + grid_sample call; returns float32 holding the input
    values (nearest copies them, so uint8 pixels stay integers until Normalize).

    The grid maps each output pixel to its source: the inverse rotation, in grid_sample's
    normalised coordinates (align_corners=False puts the centre where torchvision puts it, at
    (W/2, H/2) in pixel-edge coordinates); h/w rescale it so the rotation is rigid in pixels.
    """
    b, _, h, w = x.shape
    a = torch.deg2rad(degrees.to(torch.float32))
    cos, sin = torch.cos(a), torch.sin(a)
    zero = torch.zeros_like(a)
    theta = torch.stack([torch.stack([cos, -sin * (h / w), zero], 1),
                         torch.stack([sin * (w / h), cos, zero], 1)], 1)
    grid = F.affine_grid(theta, [b, x.shape[1], h, w], align_corners=False)
    return F.grid_sample(x.float(), grid, mode="nearest", padding_mode="zeros", align_corners=False)


class GpuLoader:
    """Batches ``(x, y)`` from a device-resident uint8 (N, 3, H, W) tensor and int64 labels.

    train=True: each epoch's order (a random permutation, or ``sampler.indices(epoch, generator,
    device)``), crop offsets and flips come from a generator on the data's device seeded from
    (seed, epoch); call ``set_epoch`` before iterating. Augmentation is torchvision's
    RandomCrop(H, padding=pad, fill 0) then RandomHorizontalFlip, then (``rotate`` > 0, BalPoE's
    CIFAR pipeline) RandomRotation(rotate) with nearest interpolation and zero fill, then
    Normalize(mean, std). The angles are drawn after the flips from the same generator, so a
    loader without rotation draws exactly the streams it drew before rotation existed.
    train=False: the stored order, no augmentation.
    """

    def __init__(self, x_uint8: torch.Tensor, y: torch.Tensor, batch_size: int, *, train: bool,
                 mean, std, pad: int = 4, flip: bool = True, seed: int = 0, sampler=None,
                 drop_last: bool = False, channels_last: bool = True, rotate: float = 0.0):
        if not isinstance(x_uint8, torch.Tensor) or x_uint8.dtype != torch.uint8 or x_uint8.dim() != 4 \
                or x_uint8.shape[1] != 3:
            desc = f"{tuple(x_uint8.shape)} {x_uint8.dtype}" if isinstance(x_uint8, torch.Tensor) else type(x_uint8).__name__
            raise DataError(f"GpuLoader images {desc}: expected a uint8 tensor of shape (N, 3, H, W)")
        if not isinstance(y, torch.Tensor) or y.dim() != 1 or len(y) != len(x_uint8):
            raise DataError(f"GpuLoader labels of shape {tuple(getattr(y, 'shape', ()))}: expected a 1-d tensor "
                            f"with one label per image ({len(x_uint8)})")
        if y.device != x_uint8.device:
            raise DataError(f"GpuLoader labels on {y.device} but images on {x_uint8.device}: expected one device")
        if not (isinstance(batch_size, int) and batch_size > 0):
            raise DataError(f"batch_size = {batch_size!r}: expected a positive integer")
        if pad < 0:
            raise DataError(f"pad = {pad!r}: expected an integer >= 0")
        if not 0 <= rotate <= 180:
            raise DataError(f"rotate = {rotate!r}: expected degrees in [0, 180]")
        self.x = x_uint8
        self.y = y.long()
        self.device = x_uint8.device
        self.batch_size = batch_size
        self.train = bool(train)
        self.pad = int(pad)
        self.flip = bool(flip)
        self.rotate = float(rotate)
        self.seed = int(seed)
        self.sampler = sampler
        self.drop_last = bool(drop_last)
        self.channels_last = bool(channels_last)
        self.epoch = 0
        # Normalize as one multiply and one add on the uint8 values: (x/255 - mean)/std = x*scale + shift
        std_t = torch.tensor(std, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        mean_t = torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self._scale = 1.0 / (255.0 * std_t)
        self._shift = -mean_t / std_t
        _, c, h, w = x_uint8.shape
        self._ar_c = torch.arange(c, device=self.device)
        self._ar_h = torch.arange(h, device=self.device)
        self._ar_w = torch.arange(w, device=self.device)
        self._plan_cache = None

    # -----------------------------------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def generator(self, epoch: int) -> torch.Generator:
        g = torch.Generator(device=self.device)
        g.manual_seed(epoch_seed(self.seed, epoch))
        return g

    def _plan(self, epoch: int):
        """(order, offsets, flips, angles, rows, cols, inside) of a training epoch (angles None
        without rotation), drawn on the device in
        one go, so a batch costs only slices of these and one gather (~0.13 ms a batch on an H100)."""
        if self._plan_cache is not None and self._plan_cache[0] == epoch:
            return self._plan_cache[1]
        g = self.generator(epoch)
        n_data = len(self.x)
        if self.sampler is None:
            order = torch.randperm(n_data, generator=g, device=self.device)
        else:
            order = torch.as_tensor(self.sampler.indices(epoch, g, self.device), device=self.device).long()
            if order.dim() != 1:
                raise DataError(f"sampler.indices returned shape {tuple(order.shape)}: expected a 1-d index tensor")
        n = len(order)
        offsets = torch.randint(0, 2 * self.pad + 1, (n, 2), generator=g, device=self.device)
        flips = (torch.rand(n, generator=g, device=self.device) < 0.5) if self.flip \
            else torch.zeros(n, dtype=torch.bool, device=self.device)
        angles = None
        if self.rotate > 0:   # torchvision RandomRotation: uniform in [-degrees, degrees]
            angles = (torch.rand(n, generator=g, device=self.device) * 2 - 1) * self.rotate
        plan = (order, offsets, flips, angles) + self._crop_indices(offsets, flips)
        self._plan_cache = (epoch, plan)
        return plan

    def num_samples(self) -> int:
        """Samples in the current epoch (the sampler's length for a custom sampler)."""
        if not self.train:
            return len(self.x)
        return len(self._plan(self.epoch)[0])

    def __len__(self) -> int:
        n = self.num_samples()
        if self.train and self.drop_last:
            return n // self.batch_size
        return math.ceil(n / self.batch_size)

    # -----------------------------------------------------------------------------------------
    def _normalize(self, xb: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            xb = xb.contiguous(memory_format=torch.channels_last)     # a no-op after _gather; cheap on uint8
        return xb.float().mul_(self._scale).add_(self._shift)      # in place keeps the memory format

    def _crop_indices(self, offsets: torch.Tensor, flips: torch.Tensor):
        """Source rows (B, H) and columns (B, W), clamped into the image, and the uint8 mask
        (B, H, W) of output pixels that fall inside it (the rest are the zero padding).

        Output pixel (i, j) is padded pixel (dy + i, dx + j') with j' = W-1-j when flipped, i.e.
        source pixel (dy - pad + i, dx - pad + j').
        """
        _, _, h, w = self.x.shape
        rows = offsets[:, :1] - self.pad + self._ar_h
        cols = offsets[:, 1:] - self.pad + torch.where(flips[:, None], self._ar_w.flip(0), self._ar_w)
        inside = ((rows >= 0) & (rows < h))[:, :, None] & ((cols >= 0) & (cols < w))[:, None, :]
        return rows.clamp(0, h - 1), cols.clamp(0, w - 1), inside.to(torch.uint8)

    def _gather(self, idx, rows, cols, inside) -> torch.Tensor:
        if self.channels_last:
            # indices broadcast to (B, H, W, C): the permuted result is channels_last with no extra copy
            out = self.x[idx[:, None, None, None], self._ar_c[None, None, None, :], rows[:, :, None, None],
                         cols[:, None, :, None]] * inside[..., None]
            return out.permute(0, 3, 1, 2)
        out = self.x[idx[:, None, None, None], self._ar_c[None, :, None, None], rows[:, None, :, None],
                     cols[:, None, None, :]]
        return out * inside[:, None]

    def augment(self, idx: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
        """uint8 (B, 3, H, W): images ``idx`` cropped at ``offsets`` (dy, dx in [0, 2*pad]) from the
        zero-padded image, then mirrored where ``flips``: torchvision's RandomCrop + HorizontalFlip."""
        return self._gather(idx, *self._crop_indices(offsets, flips))

    def __iter__(self):
        bs = self.batch_size
        if not self.train:
            for s in range(0, len(self.x), bs):
                yield self._normalize(self.x[s:s + bs]), self.y[s:s + bs]
            return
        order, _, _, angles, rows, cols, inside = self._plan(self.epoch)
        self._plan_cache = None     # a plan is used once; the next epoch draws its own
        n = len(order)
        stop = n - n % bs if self.drop_last else n
        for s in range(0, stop, bs):
            idx = order[s:s + bs]
            xb = self._gather(idx, rows[s:s + bs], cols[s:s + bs], inside[s:s + bs])
            if angles is not None:
                xb = rotate_batch(xb, angles[s:s + bs])
            yield self._normalize(xb), self.y[idx]
