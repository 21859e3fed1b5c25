"""Executors of `ltlab batch`: options, dependency stages, papermill#511 retries, requeue
semantics, SLURM tasks that end without a result, parallel local runs, and TensorBoard curves
across a kill and --resume."""
import json
import os

import pytest
import yaml
from conftest import REPO, demo_config, small_demo, tiny_folder

import ltlab.reports.notebook_run as B
from ltlab.config import ConfigError
from ltlab.io import core_share
from ltlab.reports import executors as X
from ltlab.reports.batch import run_batch


def test_options_merge_and_refuse():
    opts = X.options({"name": "slurm", "jobs": 4, "partition": "gpu"}, {"jobs": 8, "partition": None}, "f")
    assert opts["name"] == "slurm" and opts["jobs"] == 8 and opts["partition"] == "gpu" and opts["time"] == 60
    with pytest.raises(ConfigError, match="executor key 'jobs' = 0 must be an integer >= 1"):
        X.options({}, {"jobs": 0}, "f")
    with pytest.raises(ConfigError, match="executor key 'partion' is unknown; allowed: name, jobs, partition"):
        X.options({"partion": "gpu"}, {}, "f")
    with pytest.raises(ConfigError, match="executor 'pbs' is unknown; allowed: local, slurm"):
        X.options({"name": "pbs"}, {}, "f")


def test_bad_jobs_flag_is_one_line_exit_2(tmp_path, monkeypatch, capsys):
    from ltlab.cli import main

    monkeypatch.chdir(tmp_path)
    exp = tmp_path / "e.yaml"
    exp.write_text(yaml.safe_dump({"name": "t", "notebook": str(REPO / "notebooks" / "01_train.ipynb")}))
    assert main(["batch", str(exp), "--jobs", "-1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "executor key 'jobs' = -1" in err


def test_stages_follow_references():
    tasks = [{"name": n, "deps": d} for n, d in (("s1_a", []), ("crt_a", ["s1_a"]), ("s1_b", []),
                                                 ("crt_b", ["s1_b"]), ("x_b", ["crt_b"]))]
    assert [[t["name"] for t in s] for s in X.stages(tasks)] == [["s1_a", "s1_b"], ["crt_a", "crt_b"], ["x_b"]]
    # a dependency finished earlier (not among the tasks) puts nothing in the way
    assert [[t["name"] for t in s] for s in X.stages(tasks[1:2])] == [["crt_a"]]


def test_kernel_start_race_is_retried(tmp_path, monkeypatch):
    import papermill

    calls = []

    def flaky(src, out, **kw):
        calls.append(out)
        if len(calls) == 1:
            raise RuntimeError("Kernel died before replying to kernel_info")

    monkeypatch.setattr(papermill, "execute_notebook", flaky)
    monkeypatch.setattr(B.time, "sleep", lambda s: None)
    assert B.execute("nb.ipynb", tmp_path / "o.ipynb", {}, "ltlab", tmp_path)["status"] == "ok"
    assert len(calls) == 2
    calls.clear()   # any other error is the run's own: no retry
    monkeypatch.setattr(papermill, "execute_notebook", lambda *a, **k: (calls.append(1), 1 / 0))
    st = B.execute("nb.ipynb", tmp_path / "o.ipynb", {}, "ltlab", tmp_path)
    assert st["status"] == "failed" and "ZeroDivisionError" in st["error"] and calls == [1]


def _task(tmp_path, **kw):
    return {"name": "p", "batch": "b", "params": {"seed": 0}, "digest": "d", "run_dir": str(tmp_path / "run"),
            "deps": [], "token": "t1", "notebook": "nb", "out_dir": str(tmp_path), "kernel": "ltlab",
            "root": str(tmp_path), "timeout": None, "analysis": [], "restart": True, **kw}


def test_requeued_task_resumes_instead_of_restarting(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(B, "execute", lambda nb, out, params, *a: (seen.append(params["restart"]),
                                                                   {"status": "failed", "error": "x"})[1])
    B.run_point(_task(tmp_path))                 # first execution of this submission: restart
    B.run_point(_task(tmp_path))                 # the same submission again (SLURM requeue): resume
    B.run_point(_task(tmp_path, token="t2"))     # a new submission with a new parameter set: restart
    assert seen == [True, False, True]
    rec = json.loads((tmp_path / "p.status.json").read_text())
    assert rec["status"] == "failed" and rec["finished"] >= rec["started"]


def test_slurm_task_without_result_is_failed_with_logs(monkeypatch):
    job = {"job": "7_1", "token": "t", "stdout": "/l/7_1_0_log.out", "stderr": "/l/7_1_0_log.err"}
    rec = {"name": "p", "status": "running", "error": None, "token": "t"}
    monkeypatch.setattr(X, "slurm_states", lambda ids: {"7_1": "CANCELLED"})
    out = X.settle(rec, job)
    assert out["status"] == "failed" and "CANCELLED" in out["error"] and job["stdout"] in out["error"]
    monkeypatch.setattr(X, "slurm_states", lambda ids: {"7_1": "PENDING"})
    assert X.settle(rec, job)["status"] == "queued"
    monkeypatch.setattr(X, "slurm_states", lambda ids: {})
    assert X.settle({**rec, "status": "ok"}, job)["status"] == "ok"


def test_two_local_jobs_overlap(tmp_path, monkeypatch):
    """--jobs 2: both points execute at once, each in its own process."""
    monkeypatch.chdir(tmp_path)
    spec = {"name": "par", "notebook": str(REPO / "notebooks" / "01_train.ipynb"),
            "parameters": {"dataset": "folder", "data_root": str(tiny_folder(tmp_path / "tiny")), "epochs": 1,
                           "device": "cpu", "batch_size": 16},
            "grid": {"seed": [0, 1]}}
    (tmp_path / "e.yaml").write_text(yaml.safe_dump(spec))
    run_batch(tmp_path / "e.yaml", reports=str(tmp_path / "reports"), executor={"jobs": 2})
    recs = [json.loads((tmp_path / "reports" / "par" / f"seed-{s}.status.json").read_text()) for s in (0, 1)]
    assert [r["status"] for r in recs] == ["ok", "ok"]
    assert recs[0]["pid"] != recs[1]["pid"]
    assert max(r["started"] for r in recs) < min(r["finished"] for r in recs)   # the intervals overlap
    # the cores shared out: each of the two runs got half of them (unless OMP_NUM_THREADS was set)
    want = os.environ.get("OMP_NUM_THREADS") or str(core_share(2))
    for s in (0, 1):
        prov = json.loads((tmp_path / "runs" / "par" / f"seed-{s}" / "provenance.json").read_text())
        assert prov["device"].endswith(f" {want} threads)"), prov["device"]


def test_cores_shared_out_among_runs_and_among_processes(monkeypatch):
    from ltlab.data.list_bundle import _workers

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)))
    assert [core_share(j) for j in (1, 2, 3, 8, 16)] == [8, 4, 2, 1, 1]
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")          # 4 torchrun processes: 2 cores each
    assert [_workers(r) for r in (0, 1, 8)] == [0, 1, 2]


def test_tensorboard_curves_after_kill_and_resume(tmp_path, monkeypatch):
    """Killed after epoch 2's metrics row but before its checkpoint: the resumed run replays
    epoch 2, and the event files hold each epoch once, equal to metrics.csv."""
    import pandas as pd
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    import ltlab
    import ltlab.training.loop as T

    small_demo(monkeypatch, train_cap=8, test_cap=10)   # the real loop on 8 images a class
    run_dir = tmp_path / "run"
    real = T.save_checkpoint

    def killed_at_2(path, model, optimizer, epoch, cfg):
        if epoch == 2:
            raise KeyboardInterrupt
        real(path, model, optimizer, epoch, cfg)

    monkeypatch.setattr(T, "save_checkpoint", killed_at_2)
    with pytest.raises(KeyboardInterrupt):
        ltlab.fit(demo_config(run_dir, epochs=3))
    monkeypatch.setattr(T, "save_checkpoint", real)
    ltlab.fit(demo_config(run_dir, epochs=3), resume=True)

    metrics = pd.read_csv(run_dir / "metrics.csv")
    acc = EventAccumulator(str(run_dir))
    acc.Reload()
    loss = acc.Scalars("train/loss")
    assert [e.step for e in loss] == [1, 2, 3]
    assert [e.value for e in loss] == pytest.approx(metrics["train_loss"].tolist(), rel=1e-6)
    assert [e.step for e in acc.Scalars("test/top1")] == [1, 2, 3]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert acc.Scalars("test/few")[0].value == pytest.approx(summary["few"]) and acc.Scalars("test/few")[0].step == 3
    # the files themselves, not only TensorBoard's reading of them, hold no duplicate step
    raw = [v.tag for f in run_dir.glob("events.out.tfevents.*") for e in EventFileLoader(str(f)).Load()
           for v in e.summary.value if e.step == 2]
    assert sorted(raw) == sorted(set(raw)) and "train/loss" in raw


def test_slurm_without_sbatch_is_bad_input(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(ConfigError, match="executor 'slurm': sbatch, squeue, scontrol not found on PATH"):
        X.run_slurm([{"name": "p", "deps": []}], X.options({"name": "slurm"}, {}, "f"), None, "b")


def test_epoch_log_replays_metrics_csv(tmp_path):
    """Reopened after a resume, the event files are metrics.csv again: a row dropped by the
    truncation to the checkpoint's epoch disappears from them too."""
    import pandas as pd
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from ltlab.training.tblog import EpochLog

    log = EpochLog(tmp_path)
    rows = [{"epoch": e, "lr": 0.1, "train_loss": 2.0 / e, "test_top1": 0.1 * e if e % 2 == 0 else None}
            for e in (1, 2, 3)]
    for r in rows:
        log.epoch(r)
    log.close()
    pd.DataFrame(rows[:2]).to_csv(tmp_path / "metrics.csv", index=False)   # resumed from epoch 2's checkpoint
    log = EpochLog(tmp_path)
    log.epoch({"epoch": 3, "lr": 0.1, "train_loss": 0.5})
    log.final({"many": 0.9, "medium": None, "few": 0.1}, 3)
    log.close()
    acc = EventAccumulator(str(tmp_path))
    acc.Reload()
    assert [(e.step, e.value) for e in acc.Scalars("train/loss")] == [(1, 2.0), (2, 1.0), (3, 0.5)]
    assert [e.step for e in acc.Scalars("test/top1")] == [2]
    assert "test/medium" not in acc.Tags()["scalars"] and acc.Scalars("test/few")[0].value == pytest.approx(0.1)
    assert len(list(tmp_path.glob("events.out.tfevents.*"))) == 1


def test_notebook_kernel_gets_curve_keys_and_no_plaintext_warning(tmp_path, capfd):
    """ipykernel 7 warns 'running over TCP without encryption' once per notebook unless the
    kernel manager provisions CurveZMQ keys, which execute asks for where libzmq has curve."""
    import nbformat
    import zmq
    if not zmq.has("curve"):
        pytest.skip("this libzmq has no CurveZMQ: the kernel runs unencrypted and says so")
    if not B._kernel_config():
        pytest.skip("this jupyter_client cannot provision CurveZMQ keys (transport_encryption is 8.10+)")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("print(6 * 7)")])
    nb.metadata["kernelspec"] = {"name": "ltlab", "display_name": "ltlab", "language": "python"}
    (tmp_path / "a.ipynb").write_text(nbformat.writes(nb))
    status = B.execute(tmp_path / "a.ipynb", tmp_path / "out.ipynb", {}, "ltlab", tmp_path)
    assert status["status"] == "ok", status
    out = nbformat.read(tmp_path / "out.ipynb", as_version=4)
    assert out.cells[-1].outputs[0]["text"] == "42\n"
    assert "without encryption" not in capfd.readouterr().err
    assert B._kernel_config()["config"].KernelManager.transport_encryption == "auto"
