"""Schedules follow `epochs`: the recipe's paper schedule compressed, explicit values honoured,
impossible ones refused; the resolved schedule is saved and the lr column follows it."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from ltlab.config import ConfigError, epochs
from ltlab.methods import METHODS
from ltlab.methods.mislas import stage1_config
from ltlab.methods.resolve import from_dict
from ltlab.training import schedule


@pytest.mark.parametrize("method, milestones, extra", [
    ("ce", [24, 27], {}),                          # 160, 180 of 200 -> x 30/200
    ("ldam_drw", [24, 27], {"drw_epoch": 24}),     # DRW from epoch 161 -> 25
    ("tde", [18, 24], {}),                         # TDE's 120, 160
])
def test_epochs_30_scales_the_paper_schedule(method, milestones, extra):
    cfg = from_dict({"method": method, "epochs": 30})
    assert cfg.milestones == milestones and cfg.warmup_epochs == 1     # 5 * 30/200 = 0.75 -> 1
    for k, v in extra.items():
        assert cfg.extra[k] == v


def test_full_length_and_explicit_values_are_untouched():
    assert from_dict({"dataset": "cifar10_lt"}).milestones == [160, 180]
    cfg = from_dict({"epochs": 30, "milestones": [20, 25], "warmup_epochs": 3, "extra": {}})
    assert (cfg.milestones, cfg.warmup_epochs) == ([20, 25], 3)
    cfg = from_dict({"method": "ldam_drw", "epochs": 30, "extra": {"drw_epoch": 29}})
    assert cfg.extra["drw_epoch"] == 29 and cfg.milestones == [24, 27]
    # a saved config (epochs and milestones both present) reloads as it was
    again = from_dict(cfg.to_dict())
    assert again.to_dict() == cfg.to_dict()


def test_rounding_at_the_edges():
    assert epochs.scale_epoch(5, 30, 200) == 1 and epochs.scale_epoch(1, 1, 2) == 1    # half up
    assert from_dict({"epochs": 2}).milestones == [1, 1]          # clamped into the run: the decay happens
    assert from_dict({"epochs": 1}).milestones == []              # no epoch after which to change


@pytest.mark.parametrize("bad, needle", [
    ({"epochs": 2, "warmup_epochs": 50}, "'warmup_epochs' = 50 is longer than the run"),
    ({"epochs": 30, "milestones": [160]}, "milestone 160 cannot happen in a 30-epoch run"),
    ({"epochs": 30, "milestones": [25, 20]}, "increasing order"),
])
def test_impossible_schedules_are_refused(bad, needle):
    with pytest.raises(ConfigError, match=needle):
        from_dict(bad)


def test_mislas_epochs_shortens_both_stages():
    cfg = from_dict({"method": "mislas", "epochs": 30})
    assert cfg.epochs == 2                                         # round(10 * 30/200) = 1.5 -> 2
    s1 = from_dict(stage1_config(cfg))
    assert (s1.epochs, s1.milestones, s1.warmup_epochs, s1.lr_gamma) == (30, [24, 27], 1, 0.1)
    # both given: epochs is stage two's
    cfg = from_dict({"method": "mislas", "epochs": 4, "extra": {"mislas_stage1": {"epochs": 20}}})
    assert cfg.epochs == 4 and from_dict(stage1_config(cfg)).milestones == [16, 18]


def test_describe_names_every_lr():
    cfg = from_dict({"method": "ldam_drw", "epochs": 30})
    line = schedule.describe(cfg, METHODS["ldam_drw"])
    assert line == ("schedule: 30 epochs, warm-up 1, lr 0.1 from epoch 2, 0.001 from epoch 25, "
                    "1e-05 from epoch 28; drw_epoch 24")


def test_run_saves_its_schedule_and_follows_it(tmp_path):
    import ltlab
    run = ltlab.fit({"dataset": "demo", "epochs": 4, "run_dir": str(tmp_path / "r"), "progress": False,
                     "device": "cpu", "compile": "off"})
    prov = json.loads((run / "provenance.json").read_text())
    sched = prov["schedule"]
    assert sched["milestones"] == [3, 3] and sched["warmup_epochs"] == 1 and sched["steps_per_epoch"] == 10
    assert sched["warmup_steps"] == 20        # 1 epoch = 10 steps < 100: ramp over min(100, 40 // 2) steps
    assert prov["reproduce"].endswith("config.yaml") and prov["train_seconds"] > 0 and prov["finished"]
    lrs = pd.read_csv(run / "metrics.csv")["lr"].tolist()          # each epoch's last step's lr
    assert lrs == pytest.approx([0.05, 0.1, 0.1, 1e-5])             # 160, 180 -> 3, 3


def _ldam_drw_paper_lr(epoch: int) -> float:
    """LDAM-DRW's cifar_train.py adjust_learning_rate, by hand: lr 0.1, 5 warm-up epochs, x0.01 after 160 and 180."""
    if epoch <= 5:
        return 0.1 * epoch / 5
    return 0.1 * (0.01 if epoch > 160 else 1) * (0.01 if epoch > 180 else 1)


def test_full_length_ldam_drw_schedule_is_the_papers_epoch_staircase():
    cfg = from_dict({"method": "ldam_drw", "dataset": "cifar10_lt"})
    spe = 97                                            # ceil(12,406 / 128) steps of CIFAR-10-LT IF 100
    assert schedule.warmup_steps(cfg, spe) == 0         # 5 epochs = 485 steps >= 100: no per-step ramp
    for e in range(1, 201):
        for step in (0, spe // 2, spe - 1):
            assert schedule.lr_at_step(cfg, e, step, spe) == pytest.approx(_ldam_drw_paper_lr(e), rel=1e-12)
    # the archived 200-epoch ldam_drw run (trained before steps counted) logged the same schedule
    from pathlib import Path
    prov = json.loads((Path(__file__).parents[1] / "experiments/results/cifar10_lt_if100/ldam_drw/seed0/"
                       "provenance.json").read_text())["schedule"]
    now = schedule.resolved(cfg, METHODS["ldam_drw"], spe)
    assert now["lr_from_epoch"] == prov["lr_from_epoch"] and now["warmup_epochs"] == prov["warmup_epochs"] == 5


def test_a_short_warm_up_ramps_per_step_with_a_floor():
    one = from_dict({"dataset": "demo", "epochs": 1})             # warm-up compressed to 1 epoch, kept >= 1
    assert one.warmup_epochs == 1 and schedule.warmup_steps(one, 10) == 10
    assert [schedule.lr_at_step(one, 1, s, 10) for s in range(10)] == pytest.approx([0.01 * t for t in range(1, 11)])
    forty = from_dict({"dataset": "demo", "epochs": 40})         # 10 steps < 100: min(100, 400 // 2) = 100 steps
    assert schedule.warmup_steps(forty, 10) == 100
    assert schedule.lr_at_step(forty, 5, 9, 10) == pytest.approx(0.1 * 50 / 100)
    assert schedule.lr_at_step(forty, 11, 0, 10) == pytest.approx(0.1)
    assert schedule.lr_at_step(forty, 33, 0, 10) == pytest.approx(1e-3)     # milestones 32, 36 still apply
    # off: warmup_epochs 0 (stage twos), or warmup_min_steps 0 (the staircase, whatever its length)
    assert schedule.warmup_steps(from_dict({"epochs": 4, "warmup_epochs": 0}), 10) == 0
    stair = from_dict({"epochs": 40, "warmup_min_steps": 0, "warmup_epochs": 2})
    assert schedule.warmup_steps(stair, 10) == 0 and schedule.lr_at_step(stair, 1, 5, 10) == pytest.approx(0.05)
    assert "warm-up 100 steps" in schedule.describe(forty, METHODS["ce"], 10)
    assert "lr 0.1 from epoch 11" in schedule.describe(forty, METHODS["ce"], 10)


def test_demo_defaults_give_a_small_model_and_a_short_run():
    cfg = from_dict({})
    assert (cfg.dataset, cfg.model, cfg.epochs, cfg.milestones) == ("demo", "resnet8", 40, [32, 36])
    assert from_dict({"model": "resnet32", "epochs": 3}).model == "resnet32"          # the user's values win
    assert from_dict({"dataset": "cifar10_lt"}).model == "resnet32"
    mislas = from_dict({"method": "mislas"})                     # epochs is stage one's: 40, stage two 2
    assert mislas.extra["mislas_stage1"]["epochs"] == 40 and mislas.epochs == 2
