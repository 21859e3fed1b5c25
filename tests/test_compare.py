"""ltlab compare and ltlab table --ci: paired comparisons and intervals read from run directories."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from ltlab import cli
from ltlab.evaluation import paired
from ltlab.evaluation.run_dir import interval_fields
from ltlab.reports import leaderboard
from ltlab.reports.compare import compare_runs

ARCHIVE = Path(__file__).resolve().parents[1] / "experiments" / "results" / "cifar10_lt_if100"


def _run(root: Path, name: str, logits, labels, counts, seed=0, top1=None):
    d = root / name / f"seed{seed}"
    (d / "predictions").mkdir(parents=True)
    np.savez(d / "predictions" / "test.npz", logits=np.asarray(logits, np.float32), labels=labels,
             train_counts=counts)
    acc = float((np.asarray(logits).argmax(1) == labels).mean())
    (d / "summary.json").write_text(json.dumps({"top1": acc if top1 is None else top1, "balanced_acc": acc,
                                                "few": None, "ece": 0.1, "epochs": 1}))
    (d / "config.yaml").write_text(yaml.safe_dump({"method": name, "seed": seed}))
    return d


def _pair(tmp_path, flip_b=60):
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 100)
    counts = np.array([500, 120, 50, 10])
    a = np.eye(4)[labels] * 3 + rng.normal(size=(400, 4))
    b = a.copy()
    b[:flip_b] = np.roll(b[:flip_b], 1, axis=1)      # B is wrong on images A gets right
    return _run(tmp_path, "a", a, labels, counts), _run(tmp_path, "b", b, labels, counts), a, b, labels, counts


def test_two_runs_give_the_paired_bootstrap_and_mcnemar_in_words(tmp_path):
    ra, rb, a, b, labels, counts = _pair(tmp_path)
    res = compare_runs(ra, rb, n_resamples=500)
    want = paired.paired_bootstrap(a, b, labels, counts, n_resamples=500)
    assert res["kind"] == "images"
    assert res["metrics"]["top1"]["diff"] == pytest.approx(want["top1"]["diff"])
    assert res["metrics"]["top1"]["ci"] == pytest.approx(want["top1"]["ci"])
    ca, cb = a.argmax(1) == labels, b.argmax(1) == labels
    assert (res["mcnemar"]["b"], res["mcnemar"]["c"]) == (int((ca & ~cb).sum()), int((~ca & cb).sum()))
    assert res["mcnemar"]["b"] > 50 and res["mcnemar"]["p_value"] < 1e-10
    assert "A is better on this test set" in res["lines"][1] and res["lines"][1].startswith("top-1 accuracy: A − B = +")
    same = compare_runs(ra, ra, n_resamples=200)
    assert "covers 0" in same["lines"][0] and same["mcnemar"]["p_value"] == 1.0


def test_seed_folders_give_a_paired_interval_over_seeds(tmp_path):
    labels, counts = np.arange(4).repeat(5), np.array([50, 40, 30, 5])
    for seed, (ta, tb) in enumerate([(0.70, 0.65), (0.72, 0.66), (0.69, 0.66)]):
        _run(tmp_path / "A", "m", np.eye(4)[labels], labels, counts, seed=seed, top1=ta)
        _run(tmp_path / "B", "m", np.eye(4)[labels], labels, counts, seed=seed, top1=tb)
    res = compare_runs(tmp_path / "A", tmp_path / "B")
    assert res["kind"] == "seeds" and res["metrics"]["top1"]["n"] == 3
    assert res["metrics"]["top1"]["mean_diff"] == pytest.approx(0.0467, abs=1e-3)
    assert "over these 3 seeds" in res["lines"][1]


@pytest.mark.parametrize("make, msg", [
    (lambda t, ra, rb: (t / "nope", rb), "is not a directory"),
    (lambda t, ra, rb: (ra, t), "not one of each"),
])
def test_bad_input_is_one_line_exit_2(tmp_path, capsys, make, msg):
    ra, rb, *_ = _pair(tmp_path / "x")
    a, b = make(tmp_path, ra, rb)
    assert cli.main(["compare", str(a), str(b)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and msg in err


def test_different_test_sets_are_refused(tmp_path, capsys):
    ra, rb, *_ = _pair(tmp_path)
    z = dict(np.load(rb / "predictions" / "test.npz"))
    z["labels"] = np.roll(z["labels"], 1)
    np.savez(rb / "predictions" / "test.npz", **z)
    assert cli.main(["compare", str(ra), str(rb)]) == 2
    assert "not scored on the same test images" in capsys.readouterr().err


def test_table_ci_column_says_which_interval(tmp_path):
    shutil.copytree(ARCHIVE / "ce", tmp_path / "ce")
    for seed, top1 in ((0, 0.60), (1, 0.64)):
        _run(tmp_path, "focal", np.eye(2), np.arange(2), np.array([5, 5]), seed=seed, top1=top1)
    rows = {r["method"]: r for r in leaderboard.rows(tmp_path, benchmark="x", runs_only=True, ci=True)}
    ce = rows["ce"][leaderboard.CI_COLUMN]
    assert ce.endswith("(bootstrap, n = 1)")
    lo, hi = (float(v) for v in ce.split("]")[0].strip("[").split(","))
    assert lo < 65.9 < hi and hi - lo < 3                 # 10,000 test images: about +-0.9 points
    assert rows["focal"][leaderboard.CI_COLUMN].endswith("(t over 2 seeds)")


def test_interval_fields_for_summary_json():
    f = interval_fields(ARCHIVE / "ce" / "seed0" / "predictions", temperature=1.5, n_resamples=200)
    assert f["ci_resamples"] == 200 and f["ci_level"] == 0.95 and "stratified" in f["ci_method"]
    assert f["top1_ci"][0] < 0.659 < f["top1_ci"][1] and f["few_ci"] is None and len(f["ece_ts_ci"]) == 2
