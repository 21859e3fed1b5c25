"""Learning-rate schedule (training.schedule) and epoch scaling (config.epochs): cases that
`make mutants` showed untested. Hand values of the cosine schedule, the per-step ramp's
post-warm-up lr, its length for odd step counts, the staircase/ramp boundary, the logged change
points, the saved schedule, and which keys follow a shortened run."""
import math
from types import SimpleNamespace

import pytest

from ltlab.config.epochs import follow_epochs, scale_milestones
from ltlab.training import schedule as S


def _cfg(**kw):
    base = dict(epochs=10, lr=0.1, schedule="multistep", milestones=[], lr_gamma=0.1, warmup_epochs=0,
                warmup_min_steps=0)
    base.update(kw)
    return SimpleNamespace(**base)


# ------------------------------------------------------------------------- schedule.py

def test_cosine_hand_values_after_a_warm_up():
    cfg = _cfg(schedule="cosine", epochs=10, warmup_epochs=2)
    assert S.lr_at(cfg, 1) == pytest.approx(0.05)
    assert S.lr_at(cfg, 2) == pytest.approx(0.1)             # the last warm-up epoch reaches lr
    # after the warm-up: t = (e - 1 - W) / (epochs - W), lr/2 (1 + cos(pi t))
    for e in (3, 6, 10):
        t = (e - 3) / 8
        assert S.lr_at(cfg, e) == pytest.approx(0.05 * (1 + math.cos(math.pi * t)), rel=1e-12)
    nowarm = _cfg(schedule="cosine", epochs=4)
    assert [S.lr_at(nowarm, e) for e in (1, 2, 3, 4)] == pytest.approx(
        [0.1, 0.05 * (1 + math.cos(math.pi / 4)), 0.05, 0.05 * (1 + math.cos(3 * math.pi / 4))], rel=1e-12)


def test_per_step_ramp_scales_the_post_warm_up_lr():
    # W = 2 epochs of 2 steps = 4 < 10 steps: ramp over max(4, min(10, 6 * 2 // 2)) = 6 steps,
    # lr of epoch W + 1 = 3 (before the milestone after epoch 3) times t / 6
    cfg = _cfg(epochs=6, warmup_epochs=2, warmup_min_steps=10, milestones=[3])
    assert S.warmup_steps(cfg, 2) == 6
    assert S.lr_at_step(cfg, 1, 0, 2) == pytest.approx(0.1 / 6)
    assert S.lr_at_step(cfg, 2, 1, 2) == pytest.approx(0.1 * 4 / 6)
    assert S.lr_at_step(cfg, 4, 0, 2) == pytest.approx(0.01)     # ramp over, after the milestone


def test_warmup_steps_boundaries():
    # odd run length: half of 3 * 3 = 9 steps is 4 (whole steps)
    assert S.warmup_steps(_cfg(epochs=3, warmup_epochs=1, warmup_min_steps=100), 3) == 4
    # a warm-up of exactly warmup_min_steps steps is the papers' staircase
    assert S.warmup_steps(_cfg(epochs=20, warmup_epochs=2, warmup_min_steps=10), 5) == 0
    assert S.warmup_steps(_cfg(epochs=20, warmup_epochs=2, warmup_min_steps=11), 5) == 11


def test_lr_points_without_warm_up_and_near_the_end():
    cfg = _cfg(epochs=6, milestones=[2, 5], lr_gamma=0.5)
    assert S.lr_points(cfg) == [(1, 0.1), (3, 0.05), (6, 0.025)]
    # a per-step ramp exactly as long as the warm-up (W = 2 epochs of 2 steps, half the run): the first
    # logged point is the epoch after the warm-up, with its own lr (before the milestone after epoch 3)
    ramped = _cfg(epochs=4, warmup_epochs=2, warmup_min_steps=10, milestones=[3])
    assert S.warmup_steps(ramped, 2) == 4 and S.lr_points(ramped, 2) == [(3, 0.1), (4, pytest.approx(0.01))]
    # a milestone at the last epoch changes nothing inside the run
    assert S.lr_points(_cfg(epochs=4, milestones=[2, 4], lr_gamma=0.5)) == [(1, 0.1), (3, 0.05)]


def test_resolved_and_describe():
    cfg = _cfg(epochs=6, milestones=[3], lr_gamma=0.5, warmup_epochs=1, warmup_min_steps=10)
    assert S.resolved(cfg, object(), steps_per_epoch=2) == {
        "epochs": 6, "schedule": "multistep", "lr": 0.1, "warmup_epochs": 1, "steps_per_epoch": 2,
        "warmup_steps": 6, "milestones": [3], "lr_from_epoch": [{"epoch": 4, "lr": 0.05}]}
    recipe = SimpleNamespace(epoch_extra_keys=("drw_epoch", "stage"), opt=lambda cfg, key: {"drw_epoch": 4,
                                                                                          "stage": 2}[key])
    assert S.describe(cfg, recipe) == ("schedule: 6 epochs, warm-up 1, lr 0.1 from epoch 2, 0.05 from epoch 4; "
                                       "drw_epoch 4, stage 2")
    assert S.describe(cfg, object()) == "schedule: 6 epochs, warm-up 1, lr 0.1 from epoch 2, 0.05 from epoch 4"
    assert S.describe(_cfg(schedule="cosine", lr=0.2)) == "schedule: 10 epochs, warm-up 0, cosine from lr 0.2"


# --------------------------------------------------------------------------- epochs.py

def test_follow_epochs_ignores_non_runs_and_unscaled_schedules():
    merged = {"milestones": [160, 180], "warmup_epochs": 5}
    for epochs in (0, True, 200):
        assert follow_epochs(merged, {"epochs": epochs}, 200, {}) == merged
    # a cosine schedule keeps its (meaningless) milestones
    cos = follow_epochs({"schedule": "cosine", "milestones": [160]}, {"epochs": 20}, 200, {})
    assert cos["milestones"] == [160]


def test_follow_epochs_reads_the_merged_values():
    out = follow_epochs({"warmup_epochs": 20, "extra": {"drw_epoch": 100}}, {"epochs": 20}, 200, {"drw_epoch": 160})
    assert out["warmup_epochs"] == 2 and out["extra"]["drw_epoch"] == 10
    assert follow_epochs({"warmup_epochs": 0}, {"epochs": 20}, 200, {})["warmup_epochs"] == 0
    assert follow_epochs({"warmup_epochs": 1}, {"epochs": 20}, 200, {})["warmup_epochs"] == 1


def test_follow_epochs_clamps_epoch_extras():
    # 2 epochs: round(160 * 2 / 200) = 2 is clamped to epochs - 1 = 1; 0 stays 0
    out = follow_epochs({}, {"epochs": 2}, 200, {"drw_epoch": 160, "start": 0})
    assert out["extra"] == {"drw_epoch": 1, "start": 0}
    # 1 epoch: no epoch to switch after, the value is kept
    assert follow_epochs({}, {"epochs": 1}, 200, {"drw_epoch": 160})["extra"] == {"drw_epoch": 160}
    assert follow_epochs({}, {"epochs": 3}, 200, {"drw_epoch": 160})["extra"] == {"drw_epoch": 2}


def test_scale_milestones_floor_is_epoch_one():
    assert scale_milestones([5, 100], 10, 200) == [1, 5]
