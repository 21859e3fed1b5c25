import json

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import demo_config, small_demo
from sklearn.metrics import accuracy_score, balanced_accuracy_score, log_loss

import ltlab
from ltlab.config import ConfigError
from ltlab.methods import resolve as C
from ltlab.training.schedule import lr_at


def test_run_directory_contract(demo_run):
    d = demo_run
    cfg = yaml.safe_load((d / "config.yaml").read_text())
    assert cfg["dataset"] == "demo" and cfg["epochs"] == 2
    m = pd.read_csv(d / "metrics.csv")
    assert list(m["epoch"]) == [1, 2]
    assert {"epoch", "lr", "train_loss", "seconds", "test_top1", "test_balanced_acc", "test_ece"} <= set(m.columns)
    state = torch.load(d / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 2 and isinstance(state["config"], dict) and "model" in state and "optimizer" in state
    z = np.load(d / "predictions" / "test.npz")
    assert z["logits"].dtype == np.float32 and z["logits"].shape == (1000, 10)
    assert z["labels"].dtype == np.int64 and z["train_counts"].dtype == np.int64
    assert z["train_counts"].tolist() == [500, 299, 179, 107, 64, 38, 23, 13, 8, 5]
    assert z["features"].shape == (1000, 64)
    s = json.loads((d / "summary.json").read_text())
    for key in ("top1", "balanced_acc", "many", "medium", "few", "ece", "nll", "num_classes", "train_size",
                "epochs", "seconds"):
        assert key in s
    assert s["train_size"] == 1236 and s["num_classes"] == 10 and s["epochs"] == 2
    assert s["compile"] == "off"   # 'auto' on a CPU: 20 steps are far below CPU_COMPILE_MIN_STEPS
    assert s["peak_host_mb"] > 0 and s["peak_device_mb"] is None


def test_summary_recomputed_independently(demo_run):
    """Every summary number from predictions/test.npz, with sklearn where it has the metric."""
    s = json.loads((demo_run / "summary.json").read_text())
    z = np.load(demo_run / "predictions" / "test.npz")
    logits, y, counts = z["logits"].astype(np.float64), z["labels"], z["train_counts"]
    pred = logits.argmax(1)
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    assert s["top1"] == pytest.approx(accuracy_score(y, pred), abs=1e-9)
    assert s["balanced_acc"] == pytest.approx(balanced_accuracy_score(y, pred), abs=1e-9)
    # sklearn's log_loss clips p at 1e-16, so use torch's exact cross-entropy from the logits
    nll = torch.nn.functional.cross_entropy(torch.from_numpy(logits), torch.from_numpy(y)).item()
    assert s["nll"] == pytest.approx(nll, rel=1e-9)
    if p[np.arange(len(y)), y].min() > 1e-12:
        assert s["nll"] == pytest.approx(log_loss(y, p, labels=range(10)), rel=1e-6)
    per_class = np.array([(pred[y == c] == c).mean() for c in range(10)])
    many, medium, few = counts > 100, (counts >= 20) & (counts <= 100), counts < 20
    assert s["many"] == pytest.approx(per_class[many].mean())
    assert s["medium"] == pytest.approx(per_class[medium].mean())
    assert s["few"] == pytest.approx(per_class[few].mean())
    # ECE: 15 equal-width right-closed bins of the top-label confidence
    conf, correct = p.max(1), pred == y
    bins = np.clip(np.ceil(conf * 15).astype(int) - 1, 0, 14)
    ece = sum(abs(correct[bins == b].mean() - conf[bins == b].mean()) * (bins == b).mean()
              for b in range(15) if (bins == b).any())
    assert s["ece"] == pytest.approx(ece, abs=1e-9)


def test_resume_matches_uninterrupted(tmp_path, monkeypatch):
    import ltlab.training.loop as T

    # every epoch draws from the global torch RNG: a resume that does not restore the
    # checkpoint's RNG state draws something else in epoch 3
    draws = []
    real_epoch = T.train_one_epoch

    def drawing_epoch(*a, **kw):
        draws.append((kw["epoch"], torch.rand(1).item()))
        return real_epoch(*a, **kw)

    monkeypatch.setattr(T, "train_one_epoch", drawing_epoch)
    small_demo(monkeypatch, train_every=4, test_cap=20)   # three short runs: a quarter of the images
    # the schedule is given: left unset it would follow epochs, and 2 and 3 epochs differ
    sched = {"milestones": [1], "warmup_epochs": 0, "eval_every": 3}
    full = ltlab.fit(demo_config(tmp_path / "full", epochs=3, **sched))
    full_draws, draws[:] = list(draws), []
    part = ltlab.fit(demo_config(tmp_path / "part", epochs=2, **sched))
    (part / "summary.json").unlink()  # pretend it stopped after epoch 2
    before = pd.read_csv(part / "metrics.csv")
    (part / ".checkpoint.pt.x1y2z3.tmp").write_bytes(b"half")   # what a kill mid-write leaves
    draws[:] = []
    ltlab.fit(demo_config(tmp_path / "part", epochs=3, **sched), resume=True)
    # the resumed process trained epoch 3 only, and kept rows 1-2 (their seconds too)
    assert [e for e, _ in draws] == [3] and draws[0] == full_draws[2]
    pd.testing.assert_frame_equal(pd.read_csv(part / "metrics.csv").iloc[:2][before.columns], before)
    assert not list(part.rglob(".*.tmp"))
    a = torch.load(full / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(part / "checkpoint.pt", weights_only=True)["model"]
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), atol=1e-6), k
    ma, mb = pd.read_csv(full / "metrics.csv"), pd.read_csv(part / "metrics.csv")
    assert list(mb["epoch"]) == [1, 2, 3]
    assert np.allclose(ma["train_loss"], mb["train_loss"], atol=1e-6)


def test_existing_run_is_not_overwritten(demo_run):
    with pytest.raises(ConfigError, match="already holds a finished run"):
        ltlab.fit(demo_config(demo_run))


def test_lr_schedules():
    ldam = C.from_dict({"epochs": 200})
    assert lr_at(ldam, 1) == pytest.approx(0.02) and lr_at(ldam, 5) == pytest.approx(0.1)
    assert lr_at(ldam, 160) == pytest.approx(0.1) and lr_at(ldam, 161) == pytest.approx(1e-3)
    assert lr_at(ldam, 181) == pytest.approx(1e-5)
    mislas = C.from_dict({"lr_gamma": 0.1, "dataset": "cifar10_lt"})   # the demo's own default is 40 epochs
    assert lr_at(mislas, 161) == pytest.approx(0.01) and lr_at(mislas, 181) == pytest.approx(0.001)
    cos = C.from_dict({"epochs": 10, "schedule": "cosine", "warmup_epochs": 0})
    # MiSLAS stage two: lr_e = 0.05 (1 + cos(pi e / 10)), e = epoch - 1
    assert [round(lr_at(cos, e), 6) for e in (1, 6, 10)] == [0.1, 0.05, round(0.05 * (1 + np.cos(0.9 * np.pi)), 6)]


def test_load_run_refuses_unfinished(tmp_path):
    from ltlab.evaluation.run_dir import RunNotFinished

    (tmp_path / "r").mkdir()
    with pytest.raises(RunNotFinished, match="no summary.json"):
        ltlab.load_run(tmp_path / "r")
