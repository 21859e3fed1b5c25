"""Kill and resume, atomic artifacts, corrupt checkpoints, diverging losses."""
import json
import os
import random
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch
from conftest import demo_config

import ltlab
from ltlab.cli import main

EPOCHS = 3


def _cli(run_dir, *extra):
    return [sys.executable, "-m", "ltlab.cli", "train", "dataset=demo", f"epochs={EPOCHS}", "eval_every=2",
            "device=cpu", "progress=false", f"run_dir={run_dir}", *extra]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run, and how long it took (to pick kill points inside it)."""
    run_dir = tmp_path_factory.mktemp("ref") / "run"
    t0 = time.time()
    subprocess.run(_cli(run_dir), check=True, timeout=600, env={**os.environ, "TQDM_DISABLE": "1"})
    return run_dir, time.time() - t0


def _same_run(a, b):
    sa = torch.load(a / "checkpoint.pt", weights_only=True)
    sb = torch.load(b / "checkpoint.pt", weights_only=True)
    for k in sa["model"]:
        assert torch.equal(sa["model"][k], sb["model"][k]), k
    ma, mb = pd.read_csv(a / "metrics.csv"), pd.read_csv(b / "metrics.csv")
    assert list(mb["epoch"]) == list(range(1, EPOCHS + 1))       # no duplicated or missing rows
    cols = [c for c in ma.columns if c != "seconds"]
    pd.testing.assert_frame_equal(ma[cols], mb[cols], check_exact=False, atol=1e-6, rtol=0)
    ja, jb = json.loads((a / "summary.json").read_text()), json.loads((b / "summary.json").read_text())
    for k in ("top1", "balanced_acc", "ece", "nll", "many", "medium", "few"):
        assert ja[k] == pytest.approx(jb[k], abs=1e-6), k


@pytest.mark.parametrize("kill_seed", [0, 1, 2])
def test_sigkill_at_random_point_then_resume(reference, tmp_path, kill_seed):
    """SIGKILL at a random point after the first checkpoint; the resumed process starts at the
    checkpoint's epoch + 1 (rows 1..k of metrics.csv, seconds included, are kept as they were)
    and ends with the uninterrupted run's weights and no temporary file left."""
    ref_dir, ref_seconds = reference
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(_cli(run_dir), env={**os.environ, "TQDM_DISABLE": "1"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while not (run_dir / "checkpoint.pt").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(random.Random(kill_seed).uniform(0.0, 0.6) * ref_seconds / EPOCHS)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    # summary.json is written last: if the kill came after it (during interpreter exit), the
    # run did finish and every artifact is complete; otherwise there is no summary at all
    if (run_dir / "summary.json").exists():
        json.loads((run_dir / "summary.json").read_text())
        assert (run_dir / "predictions" / "test.npz").exists()
    k = torch.load(run_dir / "checkpoint.pt", weights_only=True)["epoch"]   # atomic: always whole
    assert 1 <= k <= EPOCHS
    kept = pd.read_csv(run_dir / "metrics.csv")
    kept = kept[kept["epoch"] <= k]
    assert list(kept["epoch"]) == list(range(1, k + 1))
    r = subprocess.run(_cli(run_dir, "--resume"), env={**os.environ, "TQDM_DISABLE": "1"}, timeout=600,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    _same_run(ref_dir, run_dir)
    after = pd.read_csv(run_dir / "metrics.csv")
    pd.testing.assert_frame_equal(after.iloc[:k][kept.columns], kept.reset_index(drop=True))
    assert not list(run_dir.rglob(".*.tmp"))   # mkstemp names: .<name>.<random>.tmp


def test_truncated_checkpoint_clear_error_then_restart(tmp_path, capsys):
    run_dir = tmp_path / "run"
    ltlab.fit(demo_config(run_dir, epochs=1))
    (run_dir / "summary.json").unlink()
    data = (run_dir / "checkpoint.pt").read_bytes()
    (run_dir / "checkpoint.pt").write_bytes(data[: len(data) // 2])
    args = ["train", "dataset=demo", "epochs=1", "device=cpu", f"run_dir={run_dir}", "progress=false"]
    assert main(args + ["--resume"]) == 2
    err = capsys.readouterr().err
    assert "checkpoint" in err and "unreadable" in err and "--restart" in err and err.count("\n") == 1
    assert not (run_dir / "summary.json").exists()
    assert main(args + ["--restart"]) == 0
    assert (run_dir / "summary.json").exists()


def test_a_second_trainer_in_one_run_directory_is_refused(tmp_path, capsys):
    """A queue stopped without its trainer, then restarted, once resumed the same run beside the
    living one: both appended to metrics.csv. A trainer holds the run directory's flock; another
    process gets one line and exit 2 and writes nothing; the lock dies with its holder."""
    from ltlab.training.lock import run_dir_lock

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDONLY); "
                               "fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); time.sleep(120)",
                               str(run_dir)], stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline().strip() == b"held"
        args = ["train", "dataset=demo", "epochs=1", "device=cpu", f"run_dir={run_dir}", "progress=false"]
        assert main(args + ["--resume"]) == 2
    finally:
        holder.kill()
        holder.wait()
    err = capsys.readouterr().err
    assert f"run directory '{run_dir}' is being trained by another process" in err and err.count("\n") == 1
    assert list(run_dir.iterdir()) == []
    with run_dir_lock(run_dir):          # the kernel dropped the dead holder's lock
        pass
    fresh = tmp_path / "fresh"
    with run_dir_lock(fresh):
        assert fresh.is_dir()
    assert not fresh.exists()            # a directory the lock created and nothing filled is removed


def test_resume_with_different_config_lists_keys(tmp_path, capsys):
    run_dir = tmp_path / "run"
    ltlab.fit(demo_config(run_dir, epochs=1))
    (run_dir / "summary.json").unlink()
    args = ["train", "dataset=demo", "epochs=2", "device=cpu", f"run_dir={run_dir}", "progress=false",
            "lr=0.05", "weight_decay=0.001", "--resume"]
    assert main(args) == 2
    err = capsys.readouterr().err
    # a longer run also has a longer schedule (milestones follow epochs): listed too
    assert "config differs from the checkpoint's in: lr, milestones, weight_decay" in err
    assert main(args + ["--force"]) == 0


def test_diverging_loss_stops_and_keeps_last_good_checkpoint(tmp_path, capsys):
    run_dir = tmp_path / "run"
    ltlab.fit(demo_config(run_dir, epochs=1))
    good = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    (run_dir / "summary.json").unlink()
    # an absurd learning rate makes the weights overflow within the second epoch
    args = ["train", "dataset=demo", "epochs=2", "device=cpu", f"run_dir={run_dir}", "progress=false",
            "lr=1e30", "warmup_epochs=0", "--resume", "--force"]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "non-finite at epoch 2, step" in err and "last good checkpoint (epoch 1)" in err
    kept = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert kept["epoch"] == 1
    assert all(torch.equal(good["model"][k], kept["model"][k]) for k in good["model"])
    assert not (run_dir / "summary.json").exists()


def test_device_not_there(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    assert main(["train", "device=cuda", f"run_dir={tmp_path / 'r'}"]) == 2
    assert "'device' = 'cuda': no CUDA device is visible" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_atomic_writes_leave_old_file_on_failure(tmp_path, monkeypatch):
    from ltlab import io

    target = tmp_path / "summary.json"
    io.atomic_write_json(target, {"a": 1})

    def boom(*a, **k):
        raise OSError("disk full")
    monkeypatch.setattr(io.os, "replace", boom)
    with pytest.raises(OSError):
        io.atomic_write_json(target, {"a": 2})
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]   # no temp file left behind
