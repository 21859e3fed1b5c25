"""Batch report and landing page (ltlab.reports.html) on hand-made run records: aggregation over
seeds, formatting, the embedded figure, failures, links, file modes."""
import base64
import io
import json
import os
import re
import stat

import numpy as np
import pytest
from PIL import Image

from ltlab.reports import html as report


def _summary(top1, few, ece_ts=None):
    return {"top1": top1, "balanced_acc": top1 - 0.05, "many": 0.8, "medium": 0.4, "few": few,
            "ece": 0.2, "ece_ts": ece_ts, "auroc_msp": 0.75}


def _record(tmp_path, name, params, summary=None, status="ok", error=None):
    run_dir = tmp_path / "runs" / name
    run_dir.mkdir(parents=True)
    if summary is not None:
        (run_dir / "summary.json").write_text(json.dumps(summary))
    return {"name": name, "params": {**params, "run_dir": str(run_dir)}, "run_dir": str(run_dir),
            "status": status, "error": error, "html": f"{name}.html", "ipynb": f"{name}.ipynb",
            "analysis": [{"notebook": "03_calibration", "html": f"{name}__03_calibration.html", "status": "ok"}]}


@pytest.fixture
def records(tmp_path):
    base = {"dataset": "demo", "epochs": 40}
    return [
        _record(tmp_path, "ce_seed-0", {**base, "method": "ce", "seed": 0}, _summary(0.30, 0.00, 0.05)),
        _record(tmp_path, "ce_seed-1", {**base, "method": "ce", "seed": 1}, _summary(0.32, 0.02, 0.07)),
        _record(tmp_path, "bs_seed-0", {**base, "method": "balanced_softmax", "seed": 0}, _summary(0.385, 0.297)),
        _record(tmp_path, "crt_seed-0", {**base, "method": "crt", "seed": 0,
                                     "stage1_run": str(tmp_path / "runs" / "ce_seed-0")}, _summary(0.35, 0.2)),
        _record(tmp_path, "crt_seed-1", {**base, "method": "crt", "seed": 1,
                                     "stage1_run": str(tmp_path / "runs" / "ce_seed-1")}, _summary(0.37, 0.3)),
        _record(tmp_path, "bad_seed-0", {**base, "method": "no_such", "seed": 0}, None, "failed",
                "ConfigError: 'method' = 'no_such' is not a method"),
    ]


def test_aggregate_mean_std_over_seeds(records):
    runs = report.runs_frame(records)
    table = report.aggregate(runs).set_index("config")
    assert len(table) == 3                     # ce (2 seeds), balanced_softmax (1), crt (2 seeds, stage-one refs merged)
    ce = table.loc[runs.loc[0, "config"]]
    assert ce["n"] == 2
    assert ce["top1_mean"] == pytest.approx(0.31) and ce["top1_std"] == pytest.approx(np.std([0.30, 0.32], ddof=1))
    assert ce["ece_ts_mean"] == pytest.approx(0.06)
    crt = table.loc[runs.loc[3, "config"]]
    assert crt["n"] == 2 and json.loads(runs.loc[3, "config"])["stage1_run"] == "@ce"
    assert report.varying_keys(runs["config"]) == ["method", "stage1_run"]


def test_batch_page(records, tmp_path):
    spec = {"name": "demo", "notebook": "notebooks/01_train.ipynb", "parameters": {"epochs": 40},
            "grid": {"method": ["ce"], "seed": [0, 1]}}
    old = os.umask(0o022)
    try:
        index = report.write_batch_report(tmp_path / "reports" / "demo", spec, records)
        report.write_batch_report(tmp_path / "reports" / "other", {**spec, "name": "other"}, records[:1])
    finally:
        os.umask(old)
    page = index.read_text()
    lead = page[page.index("class='leaderboard'"):page.index("</table>", page.index("class='leaderboard'"))]
    # ce: top-1 31.0 ± 1.4 over n = 2, ECE after TS 6.0 ± 1.4; balanced_softmax one seed: no ±
    assert "31.0 ± 1.4" in lead and "6.0 ± 1.4" in lead and "1.0 ± 1.4" in lead
    assert "38.5" in lead and "29.7" in lead and "38.5 ±" not in lead
    assert lead.count("<tr>") == 4                       # header + three configurations
    assert "no_such" not in lead
    # the failure with its error, every run one click away, links to run and analysis reports
    failed = page[page.index("Failed runs"):]
    assert "bad_seed-0" in failed and "is not a method" in failed
    assert re.search(r"<details><summary>Every run \(6\)", page)
    for r in records:
        assert f"href='{r['name']}.html'" in page and f"href='{r['name']}__03_calibration.html'" in page
    png = base64.b64decode(re.search(r"src='data:image/png;base64,([^']+)'", page).group(1))
    assert Image.open(io.BytesIO(png)).size[0] > 300
    # landing page: both batches, with their status counts, newest first
    landing = (tmp_path / "reports" / "index.html").read_text()
    assert "href='demo/index.html'" in landing and "href='other/index.html'" in landing
    assert "5 ok" in landing and "1 failed" in landing and "1 ok" in landing
    for f in (tmp_path / "reports").rglob("*"):
        if f.is_file():
            assert stat.S_IMODE(f.stat().st_mode) == 0o644, f


def test_no_finished_run(tmp_path, records):
    page = report.batch_page({"name": "x", "notebook": "n.ipynb"}, records[-1:], "now")
    assert "No finished run yet" in page and "is not a method" in page


def test_batch_page_brackets_say_which_interval(records, tmp_path):
    """n = 2: the t-interval over seeds (t_1 = 12.71: mean 31.0 +- 12.71 * 1.414 / sqrt 2 = [18.3, 43.7]);
    n = 1: that run's bootstrap interval from summary.json; a run without one gets no bracket."""
    from scipy import stats
    bs = records[2]
    summary = json.loads((report.Path(bs["run_dir"]) / "summary.json").read_text())
    (report.Path(bs["run_dir"]) / "summary.json").write_text(json.dumps({**summary, "top1_ci": [0.361, 0.409]}))
    page = report.batch_page({"name": "b", "notebook": "x"}, records, "now")
    lead = page[page.index("class='leaderboard'"):page.index("</table>", page.index("class='leaderboard'"))]
    half = stats.t.ppf(0.975, 1) * np.std([0.30, 0.32], ddof=1) / np.sqrt(2)
    assert f"31.0 ± 1.4 <small class='ci'>[{100 * (0.31 - half):.1f}, {100 * (0.31 + half):.1f}]</small>" in lead
    assert "38.5 <small class='ci'>[36.1, 40.9]</small>" in lead       # n = 1: its bootstrap interval
    assert "29.7</td>" in lead                                          # few: no few_ci in summary.json
    assert "t-interval of the mean over seeds" in page and "bootstrap interval over test images" in page
