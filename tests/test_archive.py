"""ltlab archive: compact copies of a real (tiny) run, checked against its summary."""
import json
import shutil

import numpy as np
import pytest
import yaml

from ltlab import archive
from ltlab.cli import main
from ltlab.evaluate import compute_summary


@pytest.fixture()
def stage_two(demo_run, tmp_path):
    """The demo run relabelled as a cRT stage two of demo_run (the archive only reads files)."""
    d = tmp_path / "crt_s0"
    shutil.copytree(demo_run, d, ignore=shutil.ignore_patterns("checkpoint.pt"))
    cfg = yaml.safe_load((d / "config.yaml").read_text())
    cfg.update(method="crt", stage1_run=str(demo_run), run_dir=str(d))
    (d / "config.yaml").write_text(yaml.safe_dump(cfg))
    return d


def test_archive_layout_sizes_and_stage_link(demo_run, stage_two, tmp_path, capsys):
    root = tmp_path / "results"
    assert main(["archive", str(demo_run), str(stage_two), "--out", str(root), "--features-kib", "0"]) == 0
    ce, crt = root / "demo_if100" / "ce" / "seed0", root / "demo_if100" / "crt" / "seed0"
    assert sorted(p.name for p in ce.iterdir()) == ["archive.json", "config.yaml", "metrics.csv", "predictions",
                                                     "provenance.json", "summary.json"]
    test = np.load(ce / "predictions" / "test.npz")
    assert test["logits"].dtype == np.float16 and "features" not in test.files
    assert {"labels", "train_counts", "classifier_weight", "classifier_bias"} <= set(test.files)
    orig = np.load(demo_run / "predictions" / "test.npz")
    np.testing.assert_array_equal(test["classifier_weight"], orig["classifier_weight"])   # exact, small
    assert (ce / "predictions" / "val.npz").is_file()
    meta = json.loads((crt / "archive.json").read_text())
    assert meta["stage1"] == "../../../demo_if100/ce/seed0" and (crt / meta["stage1"]).resolve() == ce.resolve()
    assert json.loads((ce / "archive.json").read_text())["stage1"] is None
    assert archive.total_bytes(ce) < 1_000_000
    assert main(["archive", "--verify", str(ce), str(crt)]) == 0


def test_features_kept_only_under_the_size_rule(demo_run, tmp_path):
    kept = archive.archive_run(demo_run, tmp_path / "a")             # demo: 1,200 x 64 float16 = 150 KiB
    assert np.load(kept / "predictions" / "test.npz")["features"].dtype == np.float16
    assert json.loads((kept / "archive.json").read_text())["features"] == "kept (float16)"
    dropped = archive.archive_run(demo_run, tmp_path / "b", features_kib=100)
    assert "features" not in np.load(dropped / "predictions" / "test.npz").files


def test_a_wrong_summary_number_fails_loudly(demo_run, tmp_path, capsys):
    bad = tmp_path / "bad"
    shutil.copytree(demo_run, bad, ignore=shutil.ignore_patterns("checkpoint.pt"))
    s = json.loads((bad / "summary.json").read_text())
    s["ece"] += 0.01                      # five times the ECE tolerance
    (bad / "summary.json").write_text(json.dumps(s))
    assert main(["archive", str(bad), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "ece: summary" in err and "\n" not in err.strip()
    assert not (tmp_path / "r" / "demo_if100" / "ce").exists()      # nothing half-written


def test_stage_two_without_its_stage_one_is_refused(stage_two, tmp_path, capsys):
    assert main(["archive", str(stage_two), "--out", str(tmp_path / "r")]) == 2
    assert "archive the stage one first" in capsys.readouterr().err


def test_existing_copy_needs_force(demo_run, tmp_path, capsys):
    root = tmp_path / "r"
    archive.archive_run(demo_run, root)
    assert main(["archive", str(demo_run), "--out", str(root)]) == 2
    assert "--force" in capsys.readouterr().err
    assert main(["archive", str(demo_run), "--out", str(root), "--force"]) == 0


def test_accuracy_tolerance_is_the_share_of_float16_ties():
    """Rows whose float16 maximum is tied are the only ones whose argmax may change."""
    f = np.array([[1.0, 1.0001, 0.0], [2.0, 0.0, 0.0], [0.0, 3.0, 3.0001], [0.0, 0.0, 1.0]], dtype=np.float32)
    f16 = f.astype(np.float16)
    y = np.array([1, 0, 2, 2])
    assert archive._tie_bound(f16, y, np.array([200, 50, 5]), "top1") == 0.5
    assert (f.argmax(1) == y).mean() - (f16.argmax(1) == y).mean() == 0.5    # both tied rows flipped
    assert archive._tie_bound(f16, y, np.array([200, 50, 5]), "few") == 0.5  # class 2: 1 of 2 rows tied


def test_float16_rounding_of_realistic_logits_stays_within_tolerance(tmp_path):
    """Logits at the scale of a 200-epoch CIFAR run (|z| up to ~20): float32 summary vs float16."""
    rng = np.random.default_rng(0)
    n, c = 10_000, 10
    y = np.repeat(np.arange(c), n // c)
    f = rng.normal(scale=4.0, size=(n, c)) + 8.0 * np.eye(c)[y] * rng.random((n, 1))
    counts = np.array([5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50])
    for split, rows in (("test", slice(None)), ("val", slice(0, None, 50))):
        np.savez(tmp_path / f"{split}.npz", logits=f[rows].astype(np.float32), labels=y[rows], train_counts=counts)
    summary = compute_summary(tmp_path)
    for split in ("test", "val"):
        z = dict(np.load(tmp_path / f"{split}.npz"))
        np.savez(tmp_path / f"{split}.npz", **{**z, "logits": z["logits"].astype(np.float16)})
    report = archive.check(summary, tmp_path)
    worst = max((r["diff"] / r["tol"]) for r in report.values() if r["diff"] is not None and r["tol"])
    assert worst < 0.5, report           # the tolerances leave a margin of at least 2x here


def test_benchmark_names():
    assert archive.benchmark_name({"dataset": "cifar10_lt", "imb_factor": 100.0}) == "cifar10_lt_if100"
    assert archive.benchmark_name({"dataset": "cifar100_lt", "imb_factor": 50}) == "cifar100_lt_if50"
    with pytest.raises(archive.ArchiveError, match="--benchmark"):
        archive.benchmark_name({"dataset": "folder"})
