"""The top of a run page (ltlab.reports.run_page) and where informational lines go (ltlab.training.logs)."""
import json

from ltlab.reports import run_page
from ltlab.training import logs


def _run(tmp_path, provenance=True):
    d = tmp_path / "run"
    d.mkdir()
    (d / "summary.json").write_text(json.dumps({"top1": 0.30149, "balanced_acc": 0.2, "many": 0.9, "medium": 0.05,
                                                "few": 0.0, "ece": 0.1234, "ece_ts": None, "auroc_msp": 0.81,
                                                "temperature": None, "nll": 2.0}))
    if provenance:
        (d / "provenance.json").write_text(json.dumps({
            "ltlab": "0.1.0", "git_commit": "0123456789abcdef", "git_dirty": True, "torch": "2.9.0", "python": "3.11.2",
            "device": "cpu (x86_64, 2 threads)", "world_size": 1, "started": "2026-11-30T10:00:00+00:00",
            "finished": "2026-11-30T10:02:15+00:00", "train_seconds": 135.0, "argv": "ltlab train dataset=demo",
            "reproduce": f"ltlab train -c {d / 'config.yaml'}", "method": "ce", "dataset": "demo", "seed": 0}))
    return d


def test_header_numbers_in_percent_and_provenance(tmp_path):
    html = str(run_page.header(_run(tmp_path)))
    assert "<td>30.1</td>" in html and "<td>12.3</td>" in html and "<td>0.0</td>" in html
    assert "<td>n/a</td>" in html                           # ECE after TS without a validation split
    assert "0123456789 (uncommitted changes in ltlab/)" in html
    assert "2.2 min of training" in html and "2026-11-30T10:02:15" in html and "cpu (x86_64, 2 threads)" in html
    assert "ltlab train dataset=demo" in html and "ltlab train -c " in html
    assert html.index("top-1") < html.index("reproduce")


def test_header_without_provenance(tmp_path):
    html = str(run_page.header(_run(tmp_path, provenance=False)))
    assert "no provenance.json in the run directory" in html and "<td>30.1</td>" in html


def test_collapsed_keeps_everything():
    html = run_page.collapsed("Full summary", {"a": 1, "b<": "x"})._repr_html_()
    assert html.count("<details") == 1 and "(2 entries)" in html and "b&lt;" in html


def test_informational_lines_stderr_by_default_stdout_in_notebooks(capsys):
    try:
        logs.info("ltlab: 1 process(es)")
        first = capsys.readouterr()
        logs.to_stdout()
        logs.info("ltlab: schedule: 2 epochs")
        second = capsys.readouterr()
    finally:
        logs.to_stderr()
    assert first.err == "ltlab: 1 process(es)\n" and first.out == ""
    assert second.out == "ltlab: schedule: 2 epochs\n" and second.err == ""
