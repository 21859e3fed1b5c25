"""Samplers (methods.samplers): cases that `make mutants` showed untested: classes visited
never or once in an epoch, one-image and empty classes, the exact class and instance masses
(hand values), the progressive mix's ends, and the messages of the checks."""
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from ltlab.methods.samplers import (
    SAMPLERS,
    ClassBalancedSampler,
    ProgressiveSampler,
    SqrtSampler,
    build_sampler,
    check_sampler_extra,
)


def _gen(seed):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("seed", range(6))
def test_class_balanced_fewer_blocks_than_classes(seed):
    # 4 one-image classes, per_class 2, epoch 'n' = 4 samples: 2 blocks, so 2 classes are not
    # visited; each visited class emits its only image twice (its cyclic iterator wraps)
    labels = np.array([3, 0, 2, 1])
    s = ClassBalancedSampler(labels, [1, 1, 1, 1], per_class=2, epoch="n")
    idx = s.indices(1, _gen(seed), "cpu").numpy()
    assert idx.shape == (4,) and ((0 <= idx) & (idx < 4)).all()
    assert idx[0] == idx[1] and idx[2] == idx[3] and idx[0] != idx[2]


@pytest.mark.parametrize("seed", range(6))
def test_class_balanced_one_sample_blocks_and_a_class_visited_once(seed):
    # counts (2, 1), per_class 1, epoch 'n': 3 blocks over 2 classes, one class is visited once
    labels = np.array([1, 0, 0])
    idx = ClassBalancedSampler(labels, [2, 1], per_class=1, epoch="n").indices(1, _gen(seed), "cpu").numpy()
    assert idx.shape == (3,) and ((0 <= idx) & (idx < 3)).all()
    assert sorted(np.bincount(labels[idx], minlength=2).tolist()) == [1, 2]
    # class 0's draws come from its own cycle: never the same image twice in its first 2 draws
    zeros = idx[labels[idx] == 0]
    assert len(set(zeros[:2].tolist())) == len(zeros[:2])


def test_class_balanced_epoch_check_message():
    with pytest.raises(ValueError, match=r"^class-balanced epoch 'min': expected one of max, n$"):
        ClassBalancedSampler([0, 1], [1, 1], epoch="min")


def test_sampler_extra_checks_messages_and_the_smallest_run():
    cfg = SimpleNamespace(epochs=2, extra={"cb_epoch": "min"})
    with pytest.raises(ValueError, match=r"^extra key 'cb_epoch' = 'min': allowed values are max, n$"):
        check_sampler_extra(cfg)
    cfg = SimpleNamespace(epochs=2, extra={"cb_per_class": 0})
    with pytest.raises(ValueError, match=r"^extra key 'cb_per_class' = 0: must be >= 1$"):
        check_sampler_extra(cfg)
    check_sampler_extra(SimpleNamespace(epochs=2, extra={"cb_per_class": 1}))    # one per visit is allowed


def test_factories_read_defaults_from_a_config_without_extra():
    # a config object without any 'extra' attribute: Decoupling's defaults (4 per class, 'max')
    s = build_sampler("class_balanced", np.array([0, 0, 1]), np.array([2, 1]), SimpleNamespace(epochs=3))
    assert s.per_class == 4 and len(s) == 4
    assert SAMPLERS["class_balanced"]([0, 1], [1, 1], SimpleNamespace(epochs=1, extra=None)).per_class == 4


def test_class_index_checks():
    with pytest.raises(ValueError, match="^a sampler needs at least one training image$"):
        SqrtSampler(np.array([], dtype=np.int64), [0, 0])
    # a single training image is a valid (if degenerate) set
    assert SqrtSampler([0], [1]).indices(1, _gen(0), "cpu").tolist() == [0]
    # a trailing class without images is fine
    assert len(SqrtSampler([0, 0, 1], [2, 1, 0])) == 3
    # a label equal to the number of classes does not match the counts
    with pytest.raises(ValueError, match="^sampler: train_counts do not match the training labels$"):
        SqrtSampler([0, 1, 2], [1, 1])


def test_sqrt_instance_probs_hand_values():
    # counts (4, 1, 0): class mass sqrt(n) / 3 = (2/3, 1/3, 0); per image (1/6, 1/6, 1/6, 1/6, 1/3)
    labels = np.array([0, 0, 1, 0, 0])
    s = SqrtSampler(labels, [4, 1, 0])
    np.testing.assert_allclose(s.class_mass(1), [2 / 3, 1 / 3, 0.0], rtol=1e-15)
    np.testing.assert_allclose(s.instance_probs(1).numpy(), [1 / 6, 1 / 6, 1 / 3, 1 / 6, 1 / 6], rtol=1e-15)


def test_progressive_with_one_image_and_empty_classes():
    # counts (3, 1, 0): instance (3/4, 1/4, 0); class-balanced over the two present classes (1/2, 1/2, 0)
    labels = np.array([0, 1, 0, 0])
    s = ProgressiveSampler(labels, [3, 1, 0], total_epochs=2)
    assert (s.lam(1), s.lam(2), s.lam(9)) == (0.0, 1.0, 1.0)
    np.testing.assert_allclose(s.class_mass(1), [0.75, 0.25, 0.0], rtol=1e-15)
    np.testing.assert_allclose(s.class_mass(2), [0.5, 0.5, 0.0], rtol=1e-15)
    np.testing.assert_allclose(s.class_mass(9), [0.5, 0.5, 0.0], rtol=1e-15)     # after the last epoch
    np.testing.assert_allclose(s.instance_probs(2).numpy(), [1 / 6, 1 / 2, 1 / 6, 1 / 6], rtol=1e-15)
    assert ProgressiveSampler(labels, [3, 1, 0], total_epochs=3).lam(2) == 0.5
