"""Samplers for the GPU loader: objects with indices(epoch, generator, device) -> LongTensor.

None means instance-balanced shuffling (the loader's own permutation). Every draw comes from
the generator the loader passes in (seeded from (seed, epoch)), never from a global RNG, so an
epoch's indices are a pure function of (seed, epoch) and a resumed run replays them.

The three rebalancing samplers of Decoupling (Kang et al., ICLR 2020, sec. 3 and the
classifier-balancing code) with p_c ∝ n_c^q: class-balanced (q = 0), square-root (q = 1/2),
and progressively-balanced (a per-epoch mix of q = 1 and q = 0). Classes with no training
image are left out of the class-level draws (they have nothing to sample).
"""
from __future__ import annotations

import math

import numpy as np
import torch

# Shared sampler knobs, read from cfg.extra by the factories below. A recipe that lets its
# user set them lists these among its extra_keys.
SAMPLER_EXTRA_KEYS = {
    "cb_epoch": (str, "max", "class_balanced epoch length: 'max' = max_c n_c * C samples (Decoupling), "
                             "'n' = N samples, the training-set size (MiSLAS truncates its stage 2 so)"),
    "cb_per_class": (int, 4, "class_balanced: consecutive samples drawn per visited class (Decoupling: 4)"),
}
CB_EPOCH = ("max", "n")


def _extra(cfg, key):
    extra = getattr(cfg, "extra", None) or {}
    return extra.get(key, SAMPLER_EXTRA_KEYS[key][1])


def check_sampler_extra(cfg) -> None:
    """Value checks of the shared sampler knobs (ValueError; recipes turn it into ConfigError)."""
    if _extra(cfg, "cb_epoch") not in CB_EPOCH:
        raise ValueError(f"extra key 'cb_epoch' = {_extra(cfg, 'cb_epoch')!r}: allowed values are {', '.join(CB_EPOCH)}")
    if _extra(cfg, "cb_per_class") < 1:
        raise ValueError(f"extra key 'cb_per_class' = {_extra(cfg, 'cb_per_class')!r}: must be >= 1")


class _ClassIndex:
    """Training indices grouped by class: the sorted-by-label order and each class's slice."""

    def __init__(self, labels, counts):
        labels = np.asarray(labels, dtype=np.int64).ravel()
        self.counts = np.asarray(counts, dtype=np.int64).ravel()
        if labels.size == 0:
            raise ValueError("a sampler needs at least one training image")
        if not np.array_equal(np.bincount(labels, minlength=self.counts.size)[:self.counts.size], self.counts) \
                or labels.max() >= self.counts.size:
            raise ValueError("sampler: train_counts do not match the training labels")
        self.labels = torch.from_numpy(labels)
        self.n = labels.size
        self.by_class = torch.from_numpy(np.argsort(labels, kind="stable"))
        self.start = np.concatenate([[0], np.cumsum(self.counts)[:-1]])
        self.present = np.flatnonzero(self.counts > 0)
        self._dev = {}

    def on(self, name, tensor, device):
        key = (name, str(device))
        if key not in self._dev:
            self._dev[key] = tensor.to(device)
        return self._dev[key]


class ClassBalancedSampler:
    """Decoupling's ClassAwareSampler with num_samples_cls = ``per_class``.

    Walk a class list that is reshuffled each time it is used up; for every class visited,
    emit ``per_class`` consecutive images from that class's own cyclic iterator, which is
    reshuffled each time it wraps around. Epoch length: max_c n_c * C (``epoch='max'``, the
    Decoupling default) or N (``epoch='n'``), cut mid-run if it does not divide.

    Difference from the original: its iterators carry their position across epochs; here every
    epoch starts fresh cycles, so an epoch depends on (seed, epoch) only. Over one epoch each
    class is then visited floor or ceil of (blocks / C) times: equal frequencies up to one block.
    """

    def __init__(self, labels, counts, per_class: int = 4, epoch: str = "max"):
        self.idx = _ClassIndex(labels, counts)
        self.per_class = int(per_class)
        if epoch not in CB_EPOCH:
            raise ValueError(f"class-balanced epoch {epoch!r}: expected one of {', '.join(CB_EPOCH)}")
        present = self.idx.counts[self.idx.present]
        self.length = int(present.max()) * len(present) if epoch == "max" else self.idx.n

    def __len__(self):
        return self.length

    def indices(self, epoch, generator, device) -> torch.Tensor:
        k = self.per_class
        classes = torch.from_numpy(self.idx.present).to(device)
        n_cls = len(classes)
        blocks = math.ceil(self.length / k)
        rounds = math.ceil(blocks / n_cls)
        order = torch.rand(rounds, n_cls, generator=generator, device=device, dtype=torch.float64).argsort(dim=1)
        seq = classes[order].reshape(-1)[:blocks]              # class of each block
        out = torch.empty(blocks, k, dtype=torch.long, device=device)
        by_class = self.idx.on("by_class", self.idx.by_class, device)
        grouped = seq.argsort(stable=True)                     # block positions, grouped by class
        visits = torch.bincount(seq, minlength=len(self.idx.counts)).cpu().numpy()   # one host sync
        first = np.concatenate([[0], np.cumsum(visits)[:-1]])
        for c in self.idx.present:   # one loop over classes, vectorised within a class
            need = int(visits[c]) * k
            if need == 0:
                continue
            n_c = int(self.idx.counts[c])
            reps = math.ceil(need / n_c)
            # float64 keys: ties (which would bias the order slightly) are practically impossible
            perms = torch.rand(reps, n_c, generator=generator, device=device, dtype=torch.float64)
            stream = perms.argsort(dim=1).reshape(-1)[:need]
            where = grouped[int(first[c]):int(first[c]) + int(visits[c])]
            out[where] = by_class[int(self.idx.start[c]) + stream].view(-1, k)
        return out.reshape(-1)[:self.length]


class WeightedSampler:
    """N draws with replacement from per-instance probabilities p_i(epoch)."""

    def __init__(self, labels, counts):
        self.idx = _ClassIndex(labels, counts)
        self.length = self.idx.n

    def __len__(self):
        return self.length

    def class_mass(self, epoch: int) -> np.ndarray:
        """Probability that one draw falls in class c, (C,)."""
        raise NotImplementedError

    def instance_probs(self, epoch: int) -> torch.Tensor:
        mass = np.asarray(self.class_mass(epoch), dtype=np.float64)
        per = np.divide(mass, self.idx.counts, out=np.zeros_like(mass), where=self.idx.counts > 0)
        return torch.as_tensor(per, dtype=torch.float64)[self.idx.labels]

    def indices(self, epoch, generator, device) -> torch.Tensor:
        p = self.instance_probs(epoch).to(device)
        return torch.multinomial(p, self.length, replacement=True, generator=generator)


class SqrtSampler(WeightedSampler):
    """Square-root sampling (Decoupling's MixedPrioritizedSampler, nroot = 2): p_c ∝ sqrt(n_c),
    uniform within a class, N draws with replacement per epoch (Mahajan et al. 2018)."""

    def class_mass(self, epoch):
        r = np.sqrt(self.idx.counts.astype(np.float64))
        return r / r.sum()


class ProgressiveSampler(WeightedSampler):
    """Progressively-balanced sampling (Decoupling's ClassPrioritySampler, lam = None, cycle = 0):
    p(t) = (1 - lam_t) * instance-balanced + lam_t * class-balanced, N draws with replacement.

    Decoupling takes lam_t = linspace(0, 1, T)[t] with t counted from 0. Our epochs count from
    1, so lam_e = (e - 1) / (T - 1): the first epoch is instance-balanced, the last (e = T)
    class-balanced, linear in between; T = 1 gives lam = 0 (linspace(0, 1, 1) = [0]).
    """

    def __init__(self, labels, counts, total_epochs: int):
        super().__init__(labels, counts)
        self.total = int(total_epochs)

    def lam(self, epoch: int) -> float:
        if self.total <= 1:
            return 0.0
        return min(max((epoch - 1) / (self.total - 1), 0.0), 1.0)

    def class_mass(self, epoch):
        counts = self.idx.counts.astype(np.float64)
        instance = counts / counts.sum()
        balanced = (counts > 0) / float((counts > 0).sum())
        lam = self.lam(epoch)
        return (1.0 - lam) * instance + lam * balanced


# name -> factory(labels: np.ndarray, counts: np.ndarray, cfg) -> sampler or None
SAMPLERS = {
    "instance": lambda labels, counts, cfg: None,
    "class_balanced": lambda labels, counts, cfg: ClassBalancedSampler(
        labels, counts, per_class=_extra(cfg, "cb_per_class"), epoch=_extra(cfg, "cb_epoch")),
    "sqrt": lambda labels, counts, cfg: SqrtSampler(labels, counts),
    "progressive": lambda labels, counts, cfg: ProgressiveSampler(labels, counts, total_epochs=cfg.epochs),
}


def build_sampler(name, labels, counts, cfg):
    return SAMPLERS[name](labels, counts, cfg)
