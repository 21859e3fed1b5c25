"""A newcomer's first runs: every method on the demo set for 1, 2 and 5 epochs (issue 26).

With the demo's defaults (ResNet-8, the recipe's schedule compressed, a warm-up of at least
min(100, half the run) optimizer steps, ltlab.training.schedule), each run's loss stays finite,
its test logits stay far below the blown-up range that 1-epoch ResNet-32 runs reached (1e3 to
1e7), and at 5 epochs it is better than chance (ltlab.evaluation.health). Stage twos run on a
5-epoch ce stage one.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

import ltlab
from ltlab.evaluation.health import LOGIT_LIMIT, check_run
from ltlab.evaluation.run_dir import read_predictions
from ltlab.methods import METHODS

ONE_STAGE = ["ce", "focal", "cb", "ldam_drw", "balanced_softmax", "logit_adjust", "tde", "balpoe", "enmos", "mislas"]
STAGE_TWO = ["crt", "lws"]
POSTHOC = ["tau_norm", "ncm", "la_posthoc"]


def _fit(run_dir, **cfg):
    return ltlab.fit({"dataset": "demo", "device": "cpu", "progress": False, "run_dir": str(run_dir), **cfg})


def _check(run, epochs):
    metrics = pd.read_csv(run / "metrics.csv") if (run / "metrics.csv").exists() else pd.DataFrame()
    assert all(math.isfinite(v) for v in metrics.get("train_loss", [])), metrics
    z = read_predictions(run / "predictions" / "test.npz")["logits"]
    assert np.isfinite(z).all() and np.abs(z).max() < LOGIT_LIMIT / 10, np.abs(z).max()
    warnings = check_run(run)
    assert not [w for w in warnings if "logits" in w], warnings
    if epochs >= 5:
        assert warnings == [], warnings      # better than chance, by a binomial test at the 1% level


@pytest.fixture(scope="module")
def stage1(tmp_path_factory):
    return _fit(tmp_path_factory.mktemp("s1") / "ce", method="ce", epochs=5)


def test_the_lists_cover_every_method():
    assert set(ONE_STAGE + STAGE_TWO + POSTHOC) == set(METHODS)


@pytest.mark.parametrize("epochs", [1, 2, 5])
@pytest.mark.parametrize("method", ONE_STAGE)
def test_one_stage_short_runs_learn(tmp_path, method, epochs):
    _check(_fit(tmp_path / method, method=method, epochs=epochs), epochs)


@pytest.mark.parametrize("epochs", [1, 2, 5])
@pytest.mark.parametrize("method", STAGE_TWO)
def test_stage_two_short_runs_learn(tmp_path, stage1, method, epochs):
    _check(_fit(tmp_path / method, method=method, epochs=epochs, stage1_run=str(stage1)), epochs)


@pytest.mark.parametrize("method", POSTHOC)
def test_posthoc_on_a_short_stage_one(tmp_path, stage1, method):
    _check(_fit(tmp_path / method, method=method, stage1_run=str(stage1)), 5)
