"""ltlab.evaluation.health: the one-line warnings about blown-up logits and chance accuracy."""
from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.stats import binomtest

from ltlab import cli
from ltlab.evaluation import health
from ltlab.io import atomic_savez


def _logits(n=1000, k=10, correct=0.5, scale=5.0, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % k
    z = rng.normal(size=(n, k))
    hit = rng.random(n) < correct
    z[np.arange(n), np.where(hit, y, (y + 1) % k)] += scale
    return z, y


def test_a_trained_run_gets_no_warning():
    z, y = _logits(correct=0.6)
    assert health.check_logits(z, y) == []


def test_blown_up_logits_are_named_with_their_size_and_cause():
    z, y = _logits(correct=0.6)
    z[3, 4] = 1.6e5
    (line,) = health.check_logits(z, y, steps=10)
    assert "logits up to 1.6e+05" in line and "(10 optimizer steps)" in line and "saturated" in line
    z[3, 4] = 999.0                               # just under the limit: trained runs stay under 65
    assert health.check_logits(z, y) == []


def test_non_finite_logits_are_counted():
    z, y = _logits(correct=0.6)
    z[:7, 0] = np.nan
    (line,) = health.check_logits(z, y)
    assert line.startswith("7 of 1000 test images have non-finite logits")


@pytest.mark.parametrize("correct", [0.0, 0.115, 0.2])
def test_chance_is_a_one_sided_binomial_test_at_one_percent(correct):
    # predictions that are right on exactly `hits` of 1,000 images, wrong elsewhere
    n, k = 1000, 10
    y = np.arange(n) % k
    hits = int(round(correct * n))
    pred = np.where(np.arange(n) < hits, y, (y + 1) % k)
    z = np.eye(k)[pred] * 3.0
    p = binomtest(hits, n, 0.1, alternative="greater").pvalue     # 115 of 1000: p = 0.064; 200: 1e-23
    lines = health.check_logits(z, y)
    assert bool(lines) == (p >= 0.01)
    if lines:
        assert lines[0].startswith(f"top-1 {hits / n:.1%} is not above chance (1/10 = 10.0%")


def _run(tmp_path, z, y, steps=10):
    run = tmp_path / "run"
    atomic_savez(run / "predictions" / "test.npz", logits=z.astype(np.float32), labels=y,
                 train_counts=np.full(z.shape[1], 10))
    (run / "provenance.json").write_text(json.dumps({"schedule": {"epochs": 1, "steps_per_epoch": steps}}))
    (run / "summary.json").write_text("{}")
    return run


def test_train_prints_the_warning_in_one_line(tmp_path, monkeypatch, capsys):
    z, y = _logits()
    z[0, 0] = 134663.0
    run = _run(tmp_path, z, y)
    import ltlab.training.loop as loop
    monkeypatch.setattr(loop, "fit", lambda cfg, **kw: run)
    assert cli.main(["train", "dataset=demo", "epochs=1"]) == 0
    out = capsys.readouterr()
    assert out.out.strip() == str(run)
    (warning,) = out.err.strip().splitlines()
    assert warning.startswith("ltlab: warning: logits up to 1.35e+05") and "(10 optimizer steps)" in warning


def test_the_run_page_shows_it(tmp_path):
    from ltlab.reports.run_page import header
    z, y = _logits()
    z[0, 0] = 134663.0
    html = str(header(_run(tmp_path, z, y)))
    assert "class='warn'" in html and "logits up to 1.35e+05" in html
