"""CLI exit codes: 0 success, 2 bad input (one line on stderr), 1 run failure."""
import json
import subprocess
import sys

import pytest

from ltlab.cli import main


def test_help_explains_each_command(capsys):
    for cmd in ("train", "eval", "batch", "bench"):
        with pytest.raises(SystemExit) as e:
            main([cmd, "--help"])
        assert e.value.code == 0
    out = capsys.readouterr().out
    for needle in ("--resume", "--restart", "key=value", "run_dir", "experiments", "--steps", "--out"):
        assert needle in out, needle


@pytest.mark.parametrize("args, needle", [
    (["train", "epochz=3"], "unknown config key 'epochz'"),
    (["train", "imb_factor=0.5"], "imb_factor"),
    (["train", "method=nope"], "'method' = 'nope'"),
    (["train", "-c", "/nonexistent.yaml"], "not found"),
    (["eval", "/nonexistent/run"], "does not exist"),
])
def test_bad_input_exit_2_one_line(args, needle, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ltlab: error:") and needle in err and "\n" not in err


def test_eval_recomputes_summary(demo_run, capsys):
    assert main(["eval", str(demo_run)]) == 0
    s = json.loads(capsys.readouterr().out)
    saved = json.loads((demo_run / "summary.json").read_text())
    for k in ("top1", "balanced_acc", "many", "ece", "nll", "auroc_msp", "brier"):
        assert s[k] == saved[k]


def test_eval_recomputes_corrupted_numbers_and_writes(demo_run, tmp_path, capsys):
    """A copy whose summary.json carries wrong numbers: eval prints the recomputed ones, and only
    --write puts them back into summary.json (an eval that echoes the saved file fails here)."""
    import shutil

    run = shutil.copytree(demo_run, tmp_path / "run")
    saved = json.loads((run / "summary.json").read_text())
    bad = {**saved, "top1": 0.123, "ece": 0.987, "nll": 42.0, "auroc_msp": 0.01, "seconds": 7.5}
    (run / "summary.json").write_text(json.dumps(bad))
    assert main(["eval", str(run)]) == 0
    s = json.loads(capsys.readouterr().out)
    for k in ("top1", "ece", "nll", "auroc_msp"):
        assert s[k] == pytest.approx(saved[k], abs=1e-12), k
    assert s["seconds"] == 7.5   # numbers eval cannot recompute come from the saved summary
    assert json.loads((run / "summary.json").read_text())["top1"] == 0.123   # not written without --write
    assert main(["eval", str(run), "--write"]) == 0
    capsys.readouterr()
    written = json.loads((run / "summary.json").read_text())
    assert written["top1"] == pytest.approx(saved["top1"], abs=1e-12) and written["seconds"] == 7.5


def test_console_script_installed():
    r = subprocess.run([sys.executable, "-m", "ltlab.cli", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "train" in r.stdout


@pytest.mark.parametrize("counts, compare, code, needle", [
    ({"ok": 2}, "ok", 0, ""),
    ({"ok": 1, "failed": 1}, None, 1, "1 run(s) of the batch failed"),
    ({"ok": 2}, "failed", 1, "the compare notebook of the batch failed"),
])
def test_batch_exit_code_says_whether_every_run_finished(tmp_path, monkeypatch, capsys, counts, compare, code, needle):
    """`make demo` and scripts see a failed run in the exit code, not only in the index."""
    import ltlab.reports.batch
    from ltlab.reports.html import write_batch_report

    def fake_run_batch(experiments, **kw):
        records = [{"name": f"r{i}", "status": s} for s, n in counts.items() for i in range(n)]
        monkeypatch.setattr("ltlab.reports.html.batch_page", lambda *a: "<html></html>")
        return write_batch_report(tmp_path / "reports" / "b", {"name": "b", "_compare": {"status": compare}}, records)

    monkeypatch.setattr(ltlab.reports.batch, "run_batch", fake_run_batch)
    assert main(["batch", "x.yaml", "--reports", str(tmp_path / "reports")]) == code
    err = capsys.readouterr().err
    assert needle in err and (code == 0) == (err == "")
    assert main(["batch", "x.yaml", "--reports", str(tmp_path / "reports"), "--status"]) == 0   # asks, runs nothing
