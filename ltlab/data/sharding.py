"""How a split is divided between processes: each one's share of a training epoch, and its
contiguous shard of an evaluation split. The process group itself is ltlab.training.distributed.
"""
from __future__ import annotations

import math

import torch


class ShardedSampler:
    """An ltlab sampler (``None`` = instance shuffling) split over processes.

    Every process draws the same global order for the epoch (same seeded generator), then
    keeps the positions rank, rank + world, ... of it; the order is padded by wrapping
    around to a multiple of world so that all processes run the same number of steps
    (training only; evaluation uses ``shard_bounds``). With per-process batch b = B / world,
    global batch k is then exactly positions [kB, (k+1)B) of the order, the batch one
    process would draw. Implements the sampler protocol itself (``indices``).
    """

    def __init__(self, sampler, num_samples: int, rank: int = 0, world: int = 1, pad: bool = True):
        self.sampler, self.n, self.rank, self.world, self.pad = sampler, int(num_samples), rank, world, pad

    def total(self) -> int:
        if self.sampler is None:
            return self.n
        return len(self.sampler)

    def __len__(self) -> int:
        t = self.total()
        return math.ceil(t / self.world) if self.pad else len(range(self.rank, t, self.world))

    def global_order(self, epoch, generator, device) -> torch.Tensor:
        if self.sampler is None:
            return torch.randperm(self.n, generator=generator, device=device)
        return torch.as_tensor(self.sampler.indices(epoch, generator, device), device=device).long()

    def share(self, epoch, generator, device) -> tuple[torch.Tensor, torch.Tensor]:
        """(dataset indices, their global positions in the epoch's order) of this process."""
        order = self.global_order(epoch, generator, device)
        t = len(order)
        stop = math.ceil(t / self.world) * self.world if self.pad else t
        pos = torch.arange(self.rank, stop, self.world, device=device)
        return order[pos % max(t, 1)], pos

    def indices(self, epoch, generator, device) -> torch.Tensor:
        return self.share(epoch, generator, device)[0]


def shard_bounds(n: int, rank: int, world: int) -> tuple[int, int]:
    """[start, stop) of this process's contiguous shard of n items: disjoint, covering, sizes
    differing by at most one, concatenating back to the original order."""
    return n * rank // world, n * (rank + 1) // world
