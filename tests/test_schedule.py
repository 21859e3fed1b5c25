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
    assert from_dict({}).milestones == [160, 180]
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
    assert prov["schedule"]["milestones"] == [3, 3] and prov["schedule"]["warmup_epochs"] == 0
    assert prov["reproduce"].endswith("config.yaml") and prov["train_seconds"] > 0 and prov["finished"]
    lrs = pd.read_csv(run / "metrics.csv")["lr"].tolist()
    assert lrs == pytest.approx([0.1, 0.1, 0.1, 1e-5])            # warm-up 5*4/200 -> 0; 160, 180 -> 3, 3
