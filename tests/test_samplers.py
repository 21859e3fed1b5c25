"""Samplers: structure of the class-balanced stream, class masses of the weighted samplers,
reproducibility from the loader's generator, and the GpuLoader call path."""
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from ltlab.data.gpu_loader import GpuLoader
from ltlab.methods.samplers import (
    SAMPLERS,
    ClassBalancedSampler,
    ProgressiveSampler,
    SqrtSampler,
    build_sampler,
    check_sampler_extra,
)


def _labels(counts, seed=0):
    """Labels in a shuffled order, so that sampled indices must be mapped back correctly."""
    lab = np.repeat(np.arange(len(counts)), counts)
    return np.random.RandomState(seed).permutation(lab), np.asarray(counts, dtype=np.int64)


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _cfg(epochs=10, **extra):
    return SimpleNamespace(epochs=epochs, extra=extra)


# --------------------------------------------------------------------- class-balanced
def test_class_balanced_runs_of_four_and_equal_frequencies():
    labels, counts = _labels([8, 3, 1])
    s = ClassBalancedSampler(labels, counts)
    assert len(s) == 8 * 3                           # max_c n_c * C (Decoupling)
    idx = s.indices(1, _gen(0), "cpu").numpy()
    assert idx.shape == (24,) and idx.dtype == np.int64
    blocks = labels[idx].reshape(-1, 4)
    assert (blocks == blocks[:, :1]).all()           # 4 consecutive samples of one class
    assert np.bincount(labels[idx], minlength=3).tolist() == [8, 8, 8]
    # classes are visited from a reshuffled class list: each round of 3 blocks holds every class once
    assert all(sorted(blocks[r:r + 3, 0]) == [0, 1, 2] for r in (0, 3))


def test_class_balanced_cycles_through_each_class():
    labels, counts = _labels([8, 3, 1])
    idx = ClassBalancedSampler(labels, counts).indices(3, _gen(1), "cpu").numpy()
    for c, n in enumerate(counts):
        stream = idx[labels[idx] == c]               # class c's draws, in order
        members = sorted(np.flatnonzero(labels == c))
        for s in range(0, len(stream) - n + 1, n):   # every full pass is a permutation of the class
            assert sorted(stream[s:s + n]) == members


def test_class_balanced_epoch_length_option_and_imperfect_split():
    labels, counts = _labels([10, 3, 1])
    s = SAMPLERS["class_balanced"](labels, counts, _cfg(cb_epoch="n"))
    assert len(s) == 14
    idx = s.indices(1, _gen(0), "cpu").numpy()
    assert len(idx) == 14 and (labels[idx][:12].reshape(-1, 4) == labels[idx][:12].reshape(-1, 4)[:, :1]).all()
    long = SAMPLERS["class_balanced"](labels, counts, _cfg()).indices(1, _gen(0), "cpu").numpy()
    freq = np.bincount(labels[long], minlength=3)
    assert len(long) == 30 and freq.max() - freq.min() <= 4      # equal up to one block of 4
    s2 = SAMPLERS["class_balanced"](labels, counts, _cfg(cb_per_class=1))
    assert np.bincount(labels[s2.indices(1, _gen(0), "cpu").numpy()], minlength=3).tolist() == [10, 10, 10]


def test_class_balanced_skips_empty_classes():
    labels = np.array([0, 0, 0, 2, 2])
    counts = np.array([3, 0, 2])
    idx = ClassBalancedSampler(labels, counts).indices(1, _gen(0), "cpu").numpy()
    assert len(idx) == 6 and set(labels[idx]) == {0, 2}


@pytest.mark.parametrize("name", ["class_balanced", "sqrt", "progressive"])
def test_reproducible_from_the_generator(name):
    labels, counts = _labels([50, 20, 5, 2])
    s = build_sampler(name, labels, counts, _cfg(epochs=5))
    torch.manual_seed(123)                                        # the global RNG plays no part
    a = s.indices(2, _gen(7), "cpu")
    torch.manual_seed(456)
    b = s.indices(2, _gen(7), "cpu")
    c = s.indices(2, _gen(8), "cpu")
    assert torch.equal(a, b) and not torch.equal(a, c)


# --------------------------------------------------------------------- sqrt / progressive
def test_sqrt_class_mass_is_proportional_to_sqrt_n():
    labels, counts = _labels([400, 100, 25])                      # sqrt: 20, 10, 5
    s = SqrtSampler(labels, counts)
    assert s.class_mass(1) == pytest.approx([4 / 7, 2 / 7, 1 / 7])
    draws = torch.cat([s.indices(e, _gen(e), "cpu") for e in range(20)]).numpy()
    assert len(draws) == 20 * 525                                 # N per epoch, with replacement
    freq = np.bincount(labels[draws], minlength=3) / len(draws)
    # binomial sd <= 0.005 for 10,500 draws; 0.02 is 4 sd
    assert freq == pytest.approx([4 / 7, 2 / 7, 1 / 7], abs=0.02)
    # uniform within a class: the tail's 25 images are all drawn about equally
    tail = np.bincount(draws[labels[draws] == 2], minlength=len(labels))[labels == 2]
    assert tail.min() > 0.4 * tail.mean()


def test_progressive_goes_from_instance_to_class_balanced():
    labels, counts = _labels([300, 60, 20, 20])
    T = 5
    s = ProgressiveSampler(labels, counts, total_epochs=T)
    inst = counts / counts.sum()
    assert s.lam(1) == 0.0 and s.lam(T) == 1.0 and s.lam(3) == 0.5
    assert s.class_mass(1) == pytest.approx(inst)
    assert s.class_mass(T) == pytest.approx([0.25] * 4)
    assert s.class_mass(3) == pytest.approx(0.5 * inst + 0.5 * 0.25)
    assert float(s.instance_probs(2).sum()) == pytest.approx(1.0)
    assert ProgressiveSampler(labels, counts, total_epochs=1).lam(1) == 0.0
    last = torch.cat([s.indices(T, _gen(e), "cpu") for e in range(10)]).numpy()
    assert np.bincount(labels[last], minlength=4) / len(last) == pytest.approx([0.25] * 4, abs=0.03)
    first = torch.cat([s.indices(1, _gen(e), "cpu") for e in range(10)]).numpy()
    assert np.bincount(labels[first], minlength=4) / len(first) == pytest.approx(inst, abs=0.03)


# --------------------------------------------------------------------- contract
def test_factories_and_checks():
    labels, counts = _labels([5, 2])
    assert SAMPLERS["instance"](labels, counts, _cfg()) is None
    assert SAMPLERS["progressive"](labels, counts, _cfg(epochs=7)).total == 7
    with pytest.raises(ValueError, match="cb_epoch"):
        check_sampler_extra(_cfg(cb_epoch="min"))
    with pytest.raises(ValueError, match="cb_per_class"):
        check_sampler_extra(_cfg(cb_per_class=0))
    with pytest.raises(ValueError, match="do not match"):
        ClassBalancedSampler(labels, np.array([4, 3]))


def test_gpu_loader_uses_the_sampler():
    labels, counts = _labels([8, 3, 1])
    x = torch.arange(12, dtype=torch.uint8).view(12, 1, 1, 1).expand(12, 3, 4, 4).contiguous()
    y = torch.from_numpy(labels)
    sampler = ClassBalancedSampler(labels, counts)
    loader = GpuLoader(x, y, 8, train=True, mean=(0, 0, 0), std=(1, 1, 1), pad=0, flip=False, seed=3,
                       sampler=sampler, channels_last=False)
    loader.set_epoch(2)
    ys = torch.cat([yb for _, yb in loader]).numpy()
    assert len(ys) == 24 and np.bincount(ys, minlength=3).tolist() == [8, 8, 8]
    assert (ys.reshape(-1, 4) == ys.reshape(-1, 4)[:, :1]).all()
