"""Every method end to end through papermill (2 epochs), stage twos chained.

The runs read a small long-tailed image folder cut from the demo set (24 down to 2 training
images a class) through `dataset: folder`, so that the 15 notebook executions cost about as
much as their kernel start-ups."""
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import REPO, tiny_folder

from ltlab.evaluation import posthoc_tde
from ltlab.methods import METHODS
from ltlab.reports.batch import run_batch

ONE_STAGE = ["ce", "focal", "cb", "ldam_drw", "balanced_softmax", "logit_adjust", "tde", "balpoe", "enmos", "mislas"]
STAGE_TWO = ["crt", "lws", "tau_norm", "ncm", "la_posthoc"]


def test_every_method_through_papermill(tmp_path, monkeypatch):
    assert set(ONE_STAGE + STAGE_TWO) == set(METHODS)
    monkeypatch.chdir(tmp_path)
    data = tiny_folder(tmp_path / "tiny")
    runs = [{"name": m, "parameters": {"method": m}} for m in ONE_STAGE]
    runs += [{"name": m, "parameters": {"method": m, "stage1_run": "@ce"}} for m in STAGE_TWO]
    # MiSLAS's own stage one gets the same 2 epochs
    runs[ONE_STAGE.index("mislas")]["parameters"]["overrides"] = {"extra": {"mislas_stage1": {"epochs": 2}}}
    spec = {"name": "methods", "notebook": str(REPO / "notebooks" / "01_train.ipynb"),
            "parameters": {"dataset": "folder", "data_root": str(data), "epochs": 2, "eval_every": 2,
                           "device": "cpu", "batch_size": 16},
            "runs": runs}
    p = tmp_path / "methods.yaml"
    p.write_text(yaml.safe_dump(spec))
    index = run_batch(p, reports=str(tmp_path / "reports"))
    out = tmp_path / "reports" / "methods"
    root = tmp_path / "runs" / "methods"
    html = index.read_text()
    for m in ONE_STAGE + STAGE_TWO:
        status = json.loads((out / f"{m}.status.json").read_text())
        assert status["status"] == "ok", (m, status.get("error"))
        s = json.loads((root / m / "summary.json").read_text())
        assert s["method"] == m and s["train_size"] == 84
        assert s["epochs"] == (0 if m in ("tau_norm", "ncm", "la_posthoc") else 2)
        z = np.load(root / m / "predictions" / "test.npz")
        # the summary's top-1 is the saved logits' accuracy on the 50 test images
        assert z["logits"].shape == (50, 10)
        assert s["top1"] == pytest.approx((z["logits"].argmax(1) == z["labels"]).mean())
        # the per-run table of the index: this run's row shows it finished
        assert re.search(rf"<tr><td class='l'>{m}</td><td[^>]*><span class='ok'>ok</span>", html), m
        cfg = yaml.safe_load((root / m / "config.yaml").read_text())
        if m in STAGE_TWO:   # the stage two read the ce run of this batch
            assert Path(cfg["stage1_run"]).resolve() == (root / "ce").resolve(), m
    # per-method artifacts: what makes each method itself
    ldam = torch.load(root / "ldam_drw" / "checkpoint.pt", weights_only=True)["model"]
    assert ldam["head.weight"].shape == (64, 10) and "head.bias" not in ldam          # cosine head, no bias
    assert np.abs(np.load(root / "ldam_drw" / "predictions" / "test.npz")["logits"]).max() <= 30.0 + 1e-3
    tde = dict(np.load(root / "tde" / "predictions" / "test.npz"))
    assert tde["tde_weight"].shape == (10, 64) and np.abs(tde["tde_direction"]).sum() > 0
    assert np.allclose(posthoc_tde.from_predictions(tde), tde["logits"], atol=1e-3)
    assert np.load(root / "balpoe" / "predictions" / "test.npz")["balpoe_taus"].tolist() == [0.0, 1.0, 2.0]
    assert np.load(root / "enmos" / "predictions" / "test.npz")["mos_gate"].ndim == 2
    assert (root / "mislas_stage1" / "summary.json").exists()
    mislas = yaml.safe_load((root / "mislas" / "config.yaml").read_text())
    assert Path(mislas["stage1_run"]).resolve() == (root / "mislas_stage1").resolve()
    assert yaml.safe_load((root / "mislas_stage1" / "config.yaml").read_text())["mixup_alpha"] == 1.0
