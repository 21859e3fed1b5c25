"""Post-hoc logit adjustment (la_posthoc): tau chosen on val only, predictions = z - tau log pi."""
from __future__ import annotations

import numpy as np
import pytest

import ltlab
from ltlab.config import ConfigError
from ltlab.methods.posthoc_la import choose_la_tau
from ltlab.methods.resolve import from_dict


def test_choose_la_tau_hand_case():
    # two classes, prior 0.9 / 0.1: log pi = (-0.105, -2.303). Every val image has z_1 - z_0 = 1.5:
    # the adjustment adds tau * 2.197 to that gap's favour of class 1... with labels half/half only
    # the taus that flip class-1 images to 1 without flipping class-0 images win.
    counts = np.array([90, 10])                          # log pi = (-0.105, -2.303)
    z = np.array([[2.0, 0.0], [2.0, 0.0], [2.0, 1.2], [2.0, 1.2]])   # class 0, 0, 1, 1
    y = np.array([0, 0, 1, 1])
    tau, grid, scores = choose_la_tau(z, y, counts)
    # class-1 rows flip once tau * 2.197 > 0.8 (tau >= 0.4); class-0 rows once tau * 2.197 > 2 (tau >= 1.0)
    assert tau == pytest.approx(0.4)                     # the smallest tau of the best plateau [0.4, 0.9]
    assert scores[list(np.round(grid, 1)).index(0.4)] == 1.0 and scores[0] == 0.5
    assert scores[list(np.round(grid, 1)).index(1.0)] == 0.5


def test_la_posthoc_run_matches_numpy(demo_run, tmp_path):
    run = ltlab.fit({"method": "la_posthoc", "stage1_run": str(demo_run), "run_dir": str(tmp_path / "la"),
                     "device": "cpu", "progress": False})
    s1 = ltlab.load_run(demo_run)
    la = ltlab.load_run(run)
    val, test = s1.predictions("val"), s1.predictions("test")
    counts = test["train_counts"].astype(np.float64)
    lp = np.log(counts / counts.sum())
    tau, _, _ = choose_la_tau(val["logits"], val["labels"], counts)
    out = la.predictions("test")
    assert float(out["la_tau"]) == pytest.approx(tau)
    np.testing.assert_allclose(out["logits"], test["logits"] - tau * lp, atol=1e-4)
    assert la.summary["epochs"] == 0 and la.config["stage1_run"] == str(demo_run)
    from ltlab.reports.run_page import header, posthoc_knob  # the run page says which tau it applied

    assert posthoc_knob(run) == f"; logit adjustment τ = {tau:.3g}, chosen on the validation split"
    assert f"logit adjustment τ = {tau:.3g}, chosen on the validation split" in str(header(run))
    assert posthoc_knob(demo_run) == ""


def test_la_posthoc_refuses_what_it_cannot_adjust(demo_run, tmp_path):
    with pytest.raises(ConfigError, match="la_tau_from"):
        from_dict({"method": "la_posthoc", "stage1_run": str(demo_run), "extra": {"la_tau_from": "test"}})
