"""ltlab table: the leaderboard comes from run folders, and README.md and docs/results.md show exactly that."""
import json

import pandas as pd
import yaml
from conftest import REPO

from ltlab.cli import main
from ltlab.reports import archive, leaderboard

# the main table in the README, the legacy H100 one in docs/results.md
TABLE_PAGES = {"README.md": {"experiments/results/cifar10_lt_if100"},
               "docs/results.md": {"experiments/results/h100_200ep"}}


def test_readme_tables_are_the_archive():
    for page, expected in TABLE_PAGES.items():
        blocks = leaderboard.readme_blocks(REPO / page)
        assert {cmd.split()[2] for cmd, _, _ in blocks} >= expected, page
        for cmd, shown, now in blocks:
            assert shown == now, f"{page} block '{cmd}' is stale: run ltlab table --update-readme {page}"


def _fake(root, method, seed, **summary):
    d = root / method / f"seed{seed}"
    d.mkdir(parents=True)
    (d / "config.yaml").write_text(yaml.safe_dump({"method": method, "seed": seed}))
    (d / "summary.json").write_text(json.dumps({"epochs": 200, **summary}))
    (d / "provenance.json").write_text(json.dumps({"device": "cpu (x86_64, 2 threads)"}))


def test_mean_std_n_and_published(tmp_path):
    _fake(tmp_path, "ce", 0, top1=0.60, many=0.8, ece=0.20, ece_ts=None, auroc_msp=0.75)
    _fake(tmp_path, "ce", 1, top1=0.64, many=0.9, ece=0.22, ece_ts=None, auroc_msp=0.77)
    _fake(tmp_path, "my_method", 0, top1=0.5)
    rows = {r["method"]: r for r in leaderboard.rows(tmp_path, benchmark="cifar10_lt_if100")}
    ce = rows["ce"]
    assert (ce["n"], ce["top-1"], ce["many"], ce["ECE"]) == (2, "62.0 ± 2.8", "85.0 ± 7.1", "21.0 ± 1.4")
    assert (ce["ECE (TS)"], ce["AUROC (MSP)"], ce["device"], ce["epochs"]) == ("n/a", "76.0 ± 1.4", "CPU", "200")
    assert ce["published top-1"] == "70.4" and ce["recomputable"] == "no (no predictions)"
    assert rows["focal"]["n"] == 0 and rows["focal"]["top-1"] == "–"          # every recipe is listed
    assert rows["my_method"]["published top-1"] == "n/a"
    assert list(rows).index("my_method") == len(rows) - 1
    only = leaderboard.rows(tmp_path, benchmark="cifar10_lt_if100", runs_only=True)
    assert [r["method"] for r in only] == ["ce", "my_method"]


def test_stage_two_epochs_count_its_stage_one(tmp_path):
    _fake(tmp_path, "ce", 0, top1=0.6)
    for m, own in (("crt", 10), ("tau_norm", 0)):
        _fake(tmp_path, m, 0, top1=0.7, epochs=own)
        (tmp_path / m / "seed0" / "archive.json").write_text(json.dumps({"stage1": f"../../../{tmp_path.name}/ce/seed0"}))
    _fake(tmp_path, "lws", 1, top1=0.7, epochs=10)        # its stage one is not there: its own epochs
    (tmp_path / "lws" / "seed1" / "archive.json").write_text(json.dumps({"stage1": f"../../../{tmp_path.name}/gone/seed0"}))
    rows = {r["method"]: r["epochs"] for r in leaderboard.rows(tmp_path, benchmark="x", runs_only=True)}
    assert rows == {"ce": "200", "crt": "200 + 10", "tau_norm": "200 + 0", "lws": "10"}


def test_table_of_a_real_archive(demo_run, tmp_path, capsys):
    root = tmp_path / "results"
    archive.archive_run(demo_run, root)
    assert main(["table", str(root / "demo_if100"), "--markdown", "--runs-only"]) == 0
    out = capsys.readouterr().out
    s = json.loads((demo_run / "summary.json").read_text())
    assert f"| `ce` | 1 | {100 * s['top1']:.1f} |" in out and "| yes |" in out


def test_update_readme_rewrites_only_the_blocks(tmp_path):
    readme = tmp_path / "README.md"
    cmd = f"ltlab table {REPO / 'experiments/results/h100_200ep'} --benchmark cifar10_lt_if100 --runs-only --markdown"
    readme.write_text(f"intro\n<!-- begin: {cmd} -->\nold\n<!-- end: ltlab table -->\nouter\n")
    assert main(["table", "--update-readme", str(readme)]) == 0
    txt = readme.read_text()
    assert txt.startswith("intro\n") and txt.endswith("<!-- end: ltlab table -->\nouter\n") and "old" not in txt
    assert "| `tde` | 1 | 76.1 |" in txt


def test_bad_folder_is_one_line(tmp_path, capsys):
    assert main(["table", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip()
    assert "does not exist" in err and "\n" not in err


def test_best_on_test_is_the_max_over_evaluated_epochs_and_labelled(tmp_path):
    _fake(tmp_path, "ce", 0, top1=0.60)
    pd.DataFrame({"epoch": [10, 20, 30], "test_top1": [0.55, 0.66, 0.60]}).to_csv(
        tmp_path / "ce" / "seed0" / "metrics.csv", index=False)
    _fake(tmp_path, "tau_norm", 0, top1=0.7)              # post hoc: no epochs, no metrics.csv
    rows = {r["method"]: r for r in leaderboard.rows(tmp_path, benchmark="x", runs_only=True)}
    col = leaderboard.BEST_ON_TEST
    assert "test" in col and rows["ce"][col] == "66.0" and rows["ce"]["top-1"] == "60.0"   # last epoch stays the result
    assert rows["tau_norm"][col] == "n/a"
