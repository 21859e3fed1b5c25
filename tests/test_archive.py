"""ltlab archive: compact copies of a real (tiny) run, checked against its summary."""
import json
import shutil

import numpy as np
import pytest
import yaml

from ltlab.cli import main
from ltlab.evaluation.run_dir import compute_summary
from ltlab.reports import archive


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


def _write_split_files(d, logits, y, counts):
    d.mkdir(parents=True, exist_ok=True)
    for split, rows in (("test", slice(None)), ("val", slice(0, None, 5))):
        np.savez(d / f"{split}.npz", logits=logits[rows].astype(np.float32), labels=y[rows], train_counts=counts)


def test_binned_keys_get_two_over_n_for_each_confidence_float16_moves_across_an_edge(tmp_path):
    """Sample 0's logit sits a float32 step from ln 2 (sigmoid(ln 2) = 2/3 = 10/15, a bin edge),
    on the side away from the float16 it rounds to: float16 moves its confidence to the next bin."""
    ln2 = np.log(2.0)
    lo = np.float16(ln2) if np.float16(ln2) < ln2 else np.nextafter(np.float16(ln2), np.float16(-1))
    hi = np.nextafter(lo, np.float16(1))
    step = np.float32(1) if ln2 - lo < hi - ln2 else np.float32(-1)      # away from the nearer float16
    a = np.nextafter(np.float32(ln2), step)
    a = a if (a - ln2) * step > 0 else np.nextafter(a, step)
    conf32 = 1 / (1 + np.exp(-np.float64(a)))
    conf16 = 1 / (1 + np.exp(-np.float64(np.float16(a))))
    assert archive.M._bin_index(np.array([conf32]), 15) != archive.M._bin_index(np.array([conf16]), 15)
    n = 20
    logits = np.zeros((n, 2), np.float32)
    logits[:, 0] = np.linspace(2.0, 3.0, n)      # confidences 0.88-0.95: far from any edge
    logits[0, 0] = a
    y = np.zeros(n, dtype=int)
    counts = np.array([500, 10])                  # class 0 many, class 1 few: every test sample in "many"
    _write_split_files(tmp_path / "src", logits, y, counts)
    _write_split_files(tmp_path / "f16", logits.astype(np.float16), y, counts)
    extra = archive.bin_moves(tmp_path / "src", tmp_path / "f16")
    assert extra["ece"] == pytest.approx(2 / n) and extra["ece_many"] == pytest.approx(2 / n)
    assert "ece_few" not in extra and "ece_ts" not in extra
    # bins 9 and 10 hold sample 0 alone (1 move in or out, size 1): an MCE gap may move by 2
    assert extra["mce"] == pytest.approx(2.0)
    summary = compute_summary(tmp_path / "src")
    summary["ece"] += archive.TOLERANCE["ece"] + 0.5 * extra["ece"]
    with pytest.raises(archive.ArchiveError, match="ece: summary"):
        archive.check(summary, tmp_path / "f16")
    archive.check(summary, tmp_path / "f16", binning=extra)


def test_a_post_hoc_run_has_no_metrics_csv_and_archives(demo_run, tmp_path, capsys):
    posthoc = tmp_path / "tau_norm_s0"
    shutil.copytree(demo_run, posthoc, ignore=shutil.ignore_patterns("checkpoint.pt", "metrics.csv"))
    s = json.loads((posthoc / "summary.json").read_text())
    (posthoc / "summary.json").write_text(json.dumps({**s, "epochs": 0}))     # trained no epoch
    dst = archive.archive_run(posthoc, tmp_path / "r")
    assert not (dst / "metrics.csv").exists() and (dst / "summary.json").is_file()
    trained = tmp_path / "ce_s0"                                            # a training run must have one
    shutil.copytree(demo_run, trained, ignore=shutil.ignore_patterns("checkpoint.pt", "metrics.csv"))
    assert main(["archive", str(trained), "--out", str(tmp_path / "r2")]) == 2
    assert "lacks metrics.csv" in capsys.readouterr().err


def test_narrow_logits_that_float16_scrambles_are_kept_float32(demo_run, tmp_path, capsys):
    """NCM-like logits (negative distances within 0.5 of each other: near-uniform confidences)."""
    run = tmp_path / "ncm_s0"
    shutil.copytree(demo_run, run, ignore=shutil.ignore_patterns("checkpoint.pt"))
    rng = np.random.default_rng(0)
    for split in ("test", "val"):
        z = dict(np.load(run / "predictions" / f"{split}.npz"))
        z["logits"] = (-1.5 + 0.5 * rng.random(z["logits"].shape)).astype(np.float32)
        np.savez(run / "predictions" / f"{split}.npz", **z)
    s = compute_summary(run / "predictions", epochs=json.loads((run / "summary.json").read_text())["epochs"])
    (run / "summary.json").write_text(json.dumps(s))
    with pytest.raises(archive.ArchiveError):          # what float16 alone would do to it
        d16 = tmp_path / "f16"
        shutil.copytree(run / "predictions", d16)
        for split in ("test", "val"):
            z = dict(np.load(d16 / f"{split}.npz"))
            np.savez(d16 / f"{split}.npz", **{**z, "logits": z["logits"].astype(np.float16)})
        archive.check(s, d16, binning=archive.bin_moves(run / "predictions", d16, s["temperature"]))
    dst = archive.archive_run(run, tmp_path / "r")
    assert np.load(dst / "predictions" / "test.npz")["logits"].dtype == np.float32
    assert json.loads((dst / "archive.json").read_text())["logits"].startswith("float32 (float16 failed the check: ")
    assert "archived as float32" in capsys.readouterr().err
    archive.verify(dst)
