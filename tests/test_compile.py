"""The compile policy, the compiled CPU training path, and `ltlab bench` end to end."""
import json
import subprocess
import sys

import pytest
import torch
from conftest import tiny_folder

from ltlab.training.loop import CPU_COMPILE_MIN_STEPS, _cxx_available, resolve_compile

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def test_auto_resolves_by_device_and_run_length(monkeypatch):
    monkeypatch.setattr("ltlab.training.loop._cxx_available", lambda: True)
    assert resolve_compile("auto", CUDA, 10) == "graphs"
    assert resolve_compile("auto", CUDA, 10, distributed=True) == "on"   # DDP's all-reduce cannot be graphed
    assert resolve_compile("auto", CPU, CPU_COMPILE_MIN_STEPS - 1) == "off"
    assert resolve_compile("auto", CPU, CPU_COMPILE_MIN_STEPS) == "on"
    assert resolve_compile("auto", CPU, CPU_COMPILE_MIN_STEPS, distributed=True) == "off"
    for mode in ("on", "off"):   # an explicit mode is never second-guessed
        assert resolve_compile(mode, CPU, 1) == mode
    assert resolve_compile("graphs", CUDA, 1) == "graphs"   # (graphs on a CPU: tests/test_bad_input.py)
    monkeypatch.setattr("ltlab.training.loop._cxx_available", lambda: False)
    assert resolve_compile("auto", CPU, 10**6) == "off"   # inductor needs a C++ compiler on a CPU


@pytest.mark.skipif(not _cxx_available(), reason="torch.compile on a CPU needs a C++ compiler")
def test_compiled_cpu_training_matches_eager(tmp_path, monkeypatch):
    """compile=on (inductor's fused BN/ReLU kernels) trains the same model as eager, and the
    summary says which mode ran. Float rounding alone moves a ResNet-32's gradients at init by
    0.1-3% (eager channels_last against float64, measured), and high-lr steps amplify it, so
    this compares a few small steps."""
    from ltlab.methods.resolve import from_dict
    from ltlab.training.loop import fit

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    root = tiny_folder(tmp_path / "data")
    weights = {}
    for mode in ("off", "on"):
        # 84 images / 28 = 3 full batches: one static graph to compile
        cfg = from_dict({"dataset": "folder", "data_root": str(root), "method": "ce", "epochs": 1, "batch_size": 28, "lr": 0.01,
                         "warmup_epochs": 0, "milestones": [], "device": "cpu", "compile": mode,
                         "run_dir": str(tmp_path / mode), "progress": False})
        fit(cfg)
        summary = json.loads((tmp_path / mode / "summary.json").read_text())
        assert summary["compile"] == mode
        weights[mode] = torch.load(tmp_path / mode / "checkpoint.pt", weights_only=True)["model"]
    for k, v in weights["off"].items():   # 3 steps at lr 0.01 measured: at most 3.5e-4 of a tensor's scale apart
        if v.is_floating_point():
            # the kaiming-normal classifier (as in LDAM-DRW) makes the first steps larger: float rounding
            # moves near-zero BN biases by up to ~6e-4 here; a wrong kernel is off by orders more
            assert (weights["on"][k] - v).abs().max() <= 2e-3 * v.abs().max() + 1e-3, k
    # and a training signal: the epoch's mean loss agrees to float noise
    losses = [float((tmp_path / m / "metrics.csv").read_text().splitlines()[1].split(",")[2]) for m in ("off", "on")]
    assert losses[1] == pytest.approx(losses[0], rel=1e-3)


def test_bench_writes_every_key(tmp_path):
    out = tmp_path / "bench.json"
    r = subprocess.run([sys.executable, "-m", "ltlab.cli", "bench", "--steps", "2", "--repeats", "1", "--compile", "off",
                        "--workers", "0", "--device", "cpu", "--out", str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(out.read_text())
    for key in ("ltlab_img_s", "reference_img_s", "eval_img_s", "posthoc_ms", "ltlab_warmup_s"):
        assert res[key] > 0, key
    assert res["ratio"] == pytest.approx(res["ltlab_img_s"] / res["reference_img_s"], rel=0.01)
    assert res["device"].startswith("cpu") and res["settings"]["ltlab_compile"] == "off"
    assert "ratio" in r.stdout and "post-hoc" in r.stdout
