"""`ltlab batch --executor slurm` on a real single-node SLURM (munged, slurmctld, slurmd started
here as root, tests/slurm_cluster.py), compared with a local batch of the same grid: a two-stage
chain (stage two after its stage one), a failing run recorded with its SLURM log paths, a
re-run that resubmits only the failed run, and `--status`."""
import json
import os

import pytest
import yaml
from conftest import REPO, tiny_folder
from slurm_cluster import single_node_slurm, unavailable

pytestmark = pytest.mark.skipif(unavailable() is not None, reason=str(unavailable()))


def _spec(data_root):
    return {"name": "grid", "notebook": str(REPO / "notebooks" / "01_train.ipynb"),
            "parameters": {"dataset": "folder", "data_root": str(data_root), "epochs": 1,
                           "device": "cpu", "batch_size": 16},
            "grid": {"seed": [0]},
            "runs": [{"name": "s1", "parameters": {"method": "ce"}},
                     {"name": "bad", "parameters": {"overrides": {"weights": "/no_such_method.pth"}}},
                     {"name": "tau", "parameters": {"method": "tau_norm", "stage1_run": "@s1"}}],
            "executor": {"name": "slurm", "jobs": 2, "time": 30, "cpus": 1}}


def _statuses(reports):
    return {p.name.removesuffix(".status.json"): json.loads(p.read_text())
            for p in (reports / "grid").glob("*.status.json")}


def _files(run_dir):
    """File names, TensorBoard's (named by time, host and pid) as 'events'."""
    return sorted("events" if p.name.startswith("events.out.tfevents") else p.name for p in run_dir.iterdir())


def test_slurm_batch_matches_local_batch(tmp_path, monkeypatch, capsys):
    from ltlab.cli import main

    data = tiny_folder(tmp_path / "tiny")
    exp = tmp_path / "grid.yaml"
    exp.write_text(yaml.safe_dump(_spec(data)))
    (tmp_path / "local").mkdir()
    (tmp_path / "slurm").mkdir()
    with single_node_slurm(tmp_path / "cluster", cpus=2) as env:
        monkeypatch.setenv("SLURM_CONF", env["SLURM_CONF"])
        monkeypatch.chdir(tmp_path / "slurm")
        assert main(["batch", str(exp)]) == 1       # executor: slurm from the YAML; bad_seed-0 fails
        slurm = _statuses(tmp_path / "slurm" / "reports")
        jobs = json.loads((tmp_path / "slurm" / "reports" / "grid" / "slurm" / "jobs.json").read_text())
        # stage two ran in a second array, after the first had finished
        assert jobs["tau_seed-0"]["job"].split("_")[0] != jobs["s1_seed-0"]["job"].split("_")[0]
        assert slurm["tau_seed-0"]["started"] >= slurm["s1_seed-0"]["finished"]
        assert slurm["s1_seed-0"]["slurm_job"] == jobs["s1_seed-0"]["job"]
        index = (tmp_path / "slurm" / "reports" / "grid" / "index.html").read_text()
        assert jobs["bad_seed-0"]["stdout"] in index and "no_such_method" in index
        assert os.path.exists(jobs["bad_seed-0"]["stdout"])

        capsys.readouterr()
        assert main(["batch", str(exp), "--status"]) == 0
        out = capsys.readouterr().out
        assert "2 done, 1 failed" in out and jobs == json.loads(
            (tmp_path / "slurm" / "reports" / "grid" / "slurm" / "jobs.json").read_text())   # nothing submitted

        assert main(["batch", str(exp)]) == 1       # re-run: only the failed point is submitted again (and fails)
        jobs2 = json.loads((tmp_path / "slurm" / "reports" / "grid" / "slurm" / "jobs.json").read_text())
        assert jobs2["s1_seed-0"] == jobs["s1_seed-0"] and jobs2["tau_seed-0"] == jobs["tau_seed-0"]
        assert jobs2["bad_seed-0"]["job"] != jobs["bad_seed-0"]["job"]

    monkeypatch.chdir(tmp_path / "local")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")     # as the SLURM tasks (cpus: 1), on any number of cores
    assert main(["batch", str(exp), "--executor", "local", "--jobs", "2"]) == 1
    local = _statuses(tmp_path / "local" / "reports")
    assert {k: v["status"] for k, v in local.items()} == {k: v["status"] for k, v in slurm.items()} == {
        "s1_seed-0": "ok", "tau_seed-0": "ok", "bad_seed-0": "failed"}
    for name in ("s1_seed-0", "tau_seed-0"):
        a, b = (tmp_path / where / "runs" / "grid" / name for where in ("slurm", "local"))
        assert _files(a) == _files(b) and "events" in _files(a)
        sa, sb = (json.loads((d / "summary.json").read_text()) for d in (a, b))
        for key in ("top1", "balanced_acc", "many", "medium", "few", "ece"):
            assert sa[key] == pytest.approx(sb[key], abs=1e-6), key
    # one thread a task: the executor's cpus (1) under SLURM, the user's OMP_NUM_THREADS locally
    for where in ("slurm", "local"):
        prov = json.loads((tmp_path / where / "runs" / "grid" / "s1_seed-0" / "provenance.json").read_text())
        assert prov["device"].endswith("1 threads)"), where
