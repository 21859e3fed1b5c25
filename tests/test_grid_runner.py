"""scripts/results_queue.py's planning: priority, stage-one order, time budget, deadline, resume, archive.

The trainer is a stand-in process (it sleeps per epoch, writes metrics.csv rows, and on the
last epoch copies a finished run's predictions and summary), so the scheduling is
tested in seconds; the archive step is the real one."""
import json
import signal
import subprocess
import sys
import textwrap

import pandas as pd
import pytest
import yaml

from ltlab.reports import queue as grid_runner

FAKE = textwrap.dedent('''
    import json, shutil, sys, time
    from pathlib import Path
    cfg, src, delay = json.loads(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3])
    d = Path(cfg["run_dir"]); d.mkdir(parents=True, exist_ok=True)
    import yaml
    (d / "config.yaml").write_text(yaml.safe_dump(cfg))
    m = d / "metrics.csv"
    done = len(m.read_text().splitlines()) - 1 if m.exists() else 0
    if not m.exists():
        m.write_text("epoch,seconds\\n")
    for e in range(done + 1, int(cfg["epochs"]) + 1):
        time.sleep(delay)
        with open(m, "a") as f:
            f.write(f"{e},{delay}\\n")
    shutil.copytree(src / "predictions", d / "predictions")
    shutil.copy(src / "provenance.json", d)
    s = json.loads((src / "summary.json").read_text())
    (d / "summary.json").write_text(json.dumps({**s, "method": cfg["method"], "epochs": cfg["epochs"]}))
''')


@pytest.fixture()
def source(tmp_path):
    """A finished run's files without training: random logits, the summary computed from them."""
    import numpy as np

    from ltlab.evaluation.run_dir import compute_summary

    d = tmp_path / "source"
    rng = np.random.default_rng(0)
    for split, n in (("test", 200), ("val", 40)):
        y = np.arange(n) % 10
        np.savez(d.joinpath("predictions").mkdir(parents=True, exist_ok=True) or d / "predictions" / f"{split}.npz",
                 logits=(rng.normal(size=(n, 10)) + 3 * np.eye(10)[y]).astype(np.float32), labels=y,
                 train_counts=np.array([500, 299, 179, 107, 64, 38, 23, 13, 8, 5]))
    (d / "summary.json").write_text(json.dumps(compute_summary(d / "predictions", epochs=3)))
    (d / "provenance.json").write_text(json.dumps({"device": "cpu (test)"}))
    return d


@pytest.fixture()
def grid(tmp_path, source):
    spec = {"name": "g", "notebook": "notebooks/01_train.ipynb",
            "parameters": {"dataset": "demo", "epochs": 3}, "grid": {"seed": [0]},
            "runs": [{"name": "ce", "parameters": {"method": "ce"}},
                     {"name": "crt", "parameters": {"method": "crt", "stage1_run": "@ce"}},
                     {"name": "long", "parameters": {"method": "focal", "epochs": 400}}]}
    (tmp_path / "g.yaml").write_text(yaml.safe_dump(spec))
    (tmp_path / "fake.py").write_text(FAKE)

    def launcher(delay):
        def launch(job):
            return grid_runner.start([sys.executable, str(tmp_path / "fake.py"), json.dumps(job.config),
                                      str(source), str(delay)])
        return launch
    return tmp_path, launcher


def _runner(tmp, jobs, minutes, launch, guess):
    return grid_runner.Runner(jobs, tmp / "runs", tmp / "results", minutes=minutes, default_epoch_seconds=guess,
                              overhead=0.0, launch=launch, log=lambda *_: None, poll=0.05)


def test_jobs_priority_and_stage_links(grid):
    tmp, _ = grid
    jobs = grid_runner.jobs_from_spec(tmp / "g.yaml", tmp / "runs", ["eval_every=1"])
    assert [j.name for j in jobs] == ["ce_seed-0", "crt_seed-0", "long_seed-0"]
    assert jobs[1].needs == "ce_seed-0" and jobs[1].config["stage1_run"] == str(jobs[0].run_dir)
    assert jobs[0].config["eval_every"] == 1 and jobs[2].epochs == 400


def test_runs_what_fits_archives_and_resumes(grid):
    tmp, launcher = grid
    jobs = grid_runner.jobs_from_spec(tmp / "g.yaml", tmp / "runs")
    # 0.1 s an epoch measured after ce; 'long' needs ~40 s of a 20 s budget: not started
    report = _runner(tmp, jobs, 20 / 60, launcher(0.1), guess=0.1).run()
    assert report["ce_seed-0"]["state"] == report["crt_seed-0"]["state"] == "finished"
    assert report["long_seed-0"]["state"] == "pending" and "needs ~" in report["long_seed-0"]["note"]
    arch = tmp / "results" / "demo_if100"
    assert json.loads((arch / "crt" / "seed0" / "archive.json").read_text())["stage1"] == "../../../demo_if100/ce/seed0"
    assert not (tmp / "runs" / "long_seed-0").exists()

    # a deadline in the middle of a run: interrupted, then resumed (not restarted) next time
    jobs = grid_runner.jobs_from_spec(tmp / "g.yaml", tmp / "runs", ["epochs=40"])
    jobs = [j for j in jobs if j.name == "long_seed-0"]
    (tmp / "runs" / "ce_seed-0" / "metrics.csv").write_text("epoch,seconds\n1,0.001\n")   # a wrong measurement
    (tmp / "runs" / "crt_seed-0" / "metrics.csv").write_text("epoch,seconds\n1,0.001\n")  # lets 'long' start
    # as under `nohup ... &`, where the shell leaves SIGINT ignored for what it starts
    ignored = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        report = _runner(tmp, jobs, 10 / 60, launcher(0.5), guess=0.001).run()
    finally:
        signal.signal(signal.SIGINT, ignored)
    done = grid_runner.epochs_done(jobs[0].run_dir)
    assert report["long_seed-0"]["state"] == "pending" and "interrupted" in report["long_seed-0"]["note"]
    assert 0 < done < 40
    jobs = [j for j in grid_runner.jobs_from_spec(tmp / "g.yaml", tmp / "runs", ["epochs=40"]) if j.name == "long_seed-0"]
    report = _runner(tmp, jobs, 1.0, launcher(0.01), guess=0.01).run()
    assert report["long_seed-0"]["state"] == "finished"
    assert pd.read_csv(jobs[0].run_dir / "metrics.csv")["epoch"].tolist() == list(range(1, 41))
    assert (arch / "focal" / "seed0" / "summary.json").is_file()


def test_a_failed_stage_one_skips_its_stage_two(grid, tmp_path):
    tmp, _ = grid
    jobs = grid_runner.jobs_from_spec(tmp / "g.yaml", tmp / "runs")[:2]

    def fail(job):
        return subprocess.Popen([sys.executable, "-c", "raise SystemExit(1)"], start_new_session=True)
    report = _runner(tmp, jobs, 1.0, fail, guess=0.01).run()
    assert report["ce_seed-0"]["state"] == "failed" and report["crt_seed-0"]["state"] == "skipped"


def test_planned_epochs_of_the_methods_grid():
    from conftest import REPO

    jobs = grid_runner.jobs_from_spec(REPO / "experiments" / "cifar10_lt_methods.yaml", "runs_x")
    by = {j.name: j for j in jobs}
    assert len(jobs) == 15 * 3 and {j.config["method"] for j in jobs} == {
        "ce", "crt", "lws", "tau_norm", "ncm", "ldam_drw", "balanced_softmax", "logit_adjust", "tde", "focal",
        "cb", "enmos", "mislas", "balpoe", "la_posthoc"}
    assert by["ce_seed-0"].epochs == 200 and by["tau_norm_seed-0"].epochs == 0 and by["mislas_seed-0"].epochs == 210
    assert [j.name for j in jobs][:15] == [j.name for j in jobs if j.name.endswith("seed-0")]   # seed 0 first


def _partial(run_dir, epochs, seconds=20.0):
    run_dir.mkdir(parents=True)
    pd.DataFrame({"epoch": range(1, epochs + 1), "seconds": [seconds] * epochs}).to_csv(run_dir / "metrics.csv",
                                                                                          index=False)
    (run_dir / "checkpoint.pt").write_bytes(b"state")
    (run_dir / "config.yaml").write_text("method: ce\n")


def test_sigterm_stops_the_queue_and_its_trainer(grid):
    """Each trainer leads its own process group, so a SIGTERM to the queue alone once left the
    trainer running (and a restarted queue resumed the same run beside it). The queue now
    interrupts its trainers as at the deadline, says why, and gives the signal handler back."""
    import os
    import threading

    tmp, launcher = grid
    jobs = [j for j in grid_runner.jobs_from_spec(tmp / "g.yaml", tmp / "runs", ["epochs=200"]) if j.name == "long_seed-0"]
    procs = []

    def launch(job):
        procs.append(launcher(0.2)(job))
        return procs[-1]
    before = signal.getsignal(signal.SIGTERM)
    timer = threading.Timer(1.5, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    try:
        runner = _runner(tmp, jobs, 10.0, launch, guess=0.001)
        report = runner.run()
    finally:
        timer.cancel()
    assert runner.stopped == signal.SIGTERM and signal.getsignal(signal.SIGTERM) is before
    assert report["long_seed-0"]["state"] == "pending" and "stopped by SIGTERM" in report["long_seed-0"]["note"]
    assert len(procs) == 1 and procs[0].poll() is not None                 # the trainer is gone too
    assert 0 < grid_runner.epochs_done(jobs[0].run_dir) < 200


def test_the_queue_refuses_to_start_beside_a_live_trainer(grid):
    tmp, launcher = grid
    jobs = grid_runner.jobs_from_spec(tmp / "g.yaml", tmp / "runs")
    runner = grid_runner.Runner(jobs, tmp / "runs", tmp / "results", minutes=1.0, launch=launcher(0.01),
                                log=lambda *_: None, busy=lambda: {str(jobs[2].run_dir.resolve())})
    with pytest.raises(grid_runner.ConfigError, match="long_seed-0: an `ltlab train` process is already training"):
        runner.run()
    assert not (tmp / "runs").exists()                                      # nothing started


def test_status_says_done_training_interrupted_queued(grid):
    tmp, _ = grid
    jobs = grid_runner.jobs_from_spec(tmp / "g.yaml", tmp / "runs")
    ce, crt, long = jobs
    ce.run_dir.mkdir(parents=True)
    (ce.run_dir / "summary.json").write_text("{}")
    _partial(long.run_dir, 100)
    now = 1000.0
    st = grid_runner.job_status(ce, set(), {str(ce.run_dir.resolve())}, now)
    assert st["state"] == "done" and st["note"] == "archived"
    assert grid_runner.job_status(crt, set(), set(), now)["state"] == "queued"
    st = grid_runner.job_status(long, {str(long.run_dir.resolve())}, set(), now)
    assert st["state"] == "training" and st["epochs_done"] == 100 and st["seconds_per_epoch"] == 20.0
    assert st["finish"] == now + 300 * 20.0                  # 300 epochs left at 20 s
    assert "epoch 100 of 400" in grid_runner.format_status(st)
    assert grid_runner.job_status(long, set(), set(), now)["state"] == "interrupted"


def test_running_run_dirs_reads_train_processes(tmp_path):
    for pid, args in (("11", ["python", "-m", "ltlab.cli", "train", "method=ce", f"run_dir={tmp_path}/a"]),
                      ("12", ["/venv/bin/ltlab", "train", f"run_dir={tmp_path}/b"]),
                      ("13", ["python", "-m", "ltlab.cli", "eval", f"run_dir={tmp_path}/c"])):
        (tmp_path / "proc" / pid).mkdir(parents=True)
        (tmp_path / "proc" / pid / "cmdline").write_bytes(b"\0".join(a.encode() for a in args) + b"\0")
    assert grid_runner.running_run_dirs(tmp_path / "proc") == {str(tmp_path / "a"), str(tmp_path / "b")}


def test_carry_moves_unfinished_runs_to_a_new_machine(grid):
    tmp, _ = grid
    jobs = grid_runner.jobs_from_spec(tmp / "g.yaml", tmp / "runs")
    ce, _, long = jobs
    _partial(long.run_dir, 7)
    ce.run_dir.mkdir(parents=True)
    (ce.run_dir / "summary.json").write_text("{}")
    assert grid_runner.save_carry(jobs, tmp / "carry") == ["long_seed-0"]
    assert sorted(p.name for p in (tmp / "carry" / "long_seed-0").iterdir()) == [
        "checkpoint.pt", "config.yaml", "metrics.csv"]
    fresh = grid_runner.jobs_from_spec(tmp / "g.yaml", tmp / "new_machine")      # another runs root
    assert grid_runner.restore_carry(fresh, tmp / "carry") == ["long_seed-0"]
    assert grid_runner.epochs_done(fresh[2].run_dir) == 7
    assert grid_runner.restore_carry(fresh, tmp / "carry") == []                 # never over existing state
    (long.run_dir / "summary.json").write_text("{}")                             # it finished: carry emptied
    assert grid_runner.save_carry(jobs, tmp / "carry") == [] and not (tmp / "carry" / "long_seed-0").exists()
    committed = tmp / "committed"
    assert [j.name for j in grid_runner.unlanded(jobs, [committed])] == ["ce_seed-0", "long_seed-0"]
    landed = committed / "demo_if100" / "ce" / "seed0"
    landed.mkdir(parents=True)
    (landed / "summary.json").write_text("{}")
    assert [j.name for j in grid_runner.unlanded(jobs, [committed])] == ["long_seed-0"]


def test_a_run_archived_on_an_earlier_machine_is_done_not_retrained(grid):
    tmp, _ = grid
    jobs = grid_runner.jobs_from_spec(tmp / "g.yaml", tmp / "runs")
    ce = jobs[0]
    copy = tmp / "results" / "demo_if100" / "ce" / "seed0"
    copy.mkdir(parents=True)
    (copy / "summary.json").write_text("{}")
    assert grid_runner.archived_copy(ce, tmp / "results") == copy
    assert grid_runner.job_status(ce, set(), set(), out_root=tmp / "results")["state"] == "done"
    assert grid_runner.job_status(ce, set(), set())["state"] == "queued"   # without the archive: not known
    runner = _runner(tmp, jobs[:1], 1, lambda job: pytest.fail("retrained an archived run"), guess=0.1)
    assert runner.run()["ce_seed-0"]["state"] == "finished"


def test_a_new_machine_with_an_empty_out_does_not_retrain_the_committed_archive(grid):
    """On a fresh machine --out (outside the repository) starts empty; the checkout's committed
    archive, passed as `earlier` (the script's default), still marks its runs done."""
    tmp, _ = grid
    jobs = grid_runner.jobs_from_spec(tmp / "g.yaml", tmp / "runs")
    committed = tmp / "checkout" / "experiments" / "results"
    copy = committed / "demo_if100" / "ce" / "seed0"
    copy.mkdir(parents=True)
    (copy / "summary.json").write_text("{}")
    st = grid_runner.job_status(jobs[0], set(), set(), out_root=tmp / "results", earlier=[committed])
    assert st["state"] == "done" and str(copy) in st["note"]
    assert grid_runner.job_status(jobs[0], set(), set(), out_root=tmp / "results")["state"] == "queued"
    runner = grid_runner.Runner(jobs[:1], tmp / "runs", tmp / "results", minutes=1, default_epoch_seconds=0.1,
                                overhead=0.0, launch=lambda job: pytest.fail("retrained a committed run"),
                                log=lambda *_: None, poll=0.05, earlier=[committed])
    assert runner.run()["ce_seed-0"]["state"] == "finished"
    from conftest import REPO
    out = subprocess.run([sys.executable, str(REPO / "scripts" / "results_queue.py"), "--status",
                          "--experiments", str(tmp / "g.yaml"), "--runs-root", str(tmp / "runs"),
                          "--out", str(tmp / "results"), "--earlier", str(committed)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.splitlines()[0].split()[:2] == ["ce_seed-0", "done"], out
    plan = subprocess.run([sys.executable, str(REPO / "scripts" / "results_queue.py"), "--dry-run",
                           "--experiments", str(tmp / "g.yaml"), "--runs-root", str(tmp / "runs"),
                           "--out", str(tmp / "results"), "--earlier", str(committed)],
                          capture_output=True, text=True, timeout=120)
    first, rest = plan.stdout.splitlines()[0], plan.stdout.splitlines()[1:]
    assert plan.returncode == 0 and "~   0.0 min  skipped: archived in" in first and str(copy) in first, plan
    assert rest and not any("skipped" in line for line in rest), plan.stdout    # the others still train


def test_status_piped_into_head_ends_without_a_traceback(grid):
    """`results_queue.py --status | head -1`: the closed pipe ends the script quietly (exit 141)."""
    from conftest import REPO
    tmp, _ = grid
    spec = yaml.safe_load((tmp / "g.yaml").read_text())
    spec["runs"] = [{"name": f"r{k}", "parameters": {"method": "ce"}} for k in range(3000)]   # > a pipe's 64 KiB
    (tmp / "many.yaml").write_text(yaml.safe_dump(spec))
    script = subprocess.Popen([sys.executable, str(REPO / "scripts" / "results_queue.py"), "--status",
                               "--experiments", str(tmp / "many.yaml"), "--runs-root", str(tmp / "runs"),
                               "--out", str(tmp / "results")], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = script.stdout.readline()
    script.stdout.close()                                      # what head does after its line
    err = script.stderr.read().decode()
    assert script.wait(timeout=120) == 141
    assert b"queued" in first and "Traceback" not in err and err == ""


def test_carry_takes_a_finished_stage_one_whole_until_its_stage_two_finishes(tmp_path):
    """mislas trains its own stage one first and archives it only with stage two; a machine lost
    between the two once lost the finished stage one, which was neither carried nor unlanded."""
    spec = {"name": "g", "notebook": "notebooks/01_train.ipynb", "parameters": {"dataset": "demo", "epochs": 3},
            "grid": {"seed": [0]}, "runs": [{"name": "mislas", "parameters": {"method": "mislas"}}]}
    (tmp_path / "g.yaml").write_text(yaml.safe_dump(spec))
    job, = grid_runner.jobs_from_spec(tmp_path / "g.yaml", tmp_path / "runs")
    stage1, stage2 = grid_runner.run_dirs(job)
    _partial(stage1, 3)
    (stage1 / "predictions").mkdir()
    (stage1 / "predictions" / "test.npz").write_bytes(b"p")
    (stage1 / "summary.json").write_text("{}")
    (stage1 / "events.out.tfevents.1.host").write_bytes(b"e")
    assert grid_runner.save_carry([job], tmp_path / "carry") == [stage1.name]
    assert sorted(str(p.relative_to(tmp_path / "carry" / stage1.name))
                  for p in (tmp_path / "carry" / stage1.name).rglob("*")) == [
        "checkpoint.pt", "config.yaml", "metrics.csv", "predictions", "predictions/test.npz", "summary.json"]
    _partial(stage2, 1)
    assert grid_runner.save_carry([job], tmp_path / "carry") == [stage1.name, stage2.name]
    fresh, = grid_runner.jobs_from_spec(tmp_path / "g.yaml", tmp_path / "new_machine")
    assert grid_runner.restore_carry([fresh], tmp_path / "carry") == [stage1.name, stage2.name]
    new1, new2 = grid_runner.run_dirs(fresh)
    assert grid_runner.is_finished(new1) and (new1 / "predictions" / "test.npz").read_bytes() == b"p"
    assert grid_runner.epochs_done(new2) == 1 and not grid_runner.is_finished(new2)
    (stage2 / "summary.json").write_text("{}")                   # stage two finished: both travel archived
    assert grid_runner.save_carry([job], tmp_path / "carry") == []
    assert not any((tmp_path / "carry").iterdir())
