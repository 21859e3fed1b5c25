"""Archived runs (float16 logits, no features, no checkpoint) open in notebooks 02-05 via a batch."""
import json
import shutil

import numpy as np
import yaml
from conftest import REPO

from ltlab.evaluation.run_dir import load_run
from ltlab.interactive import widgets
from ltlab.reports import archive
from ltlab.reports.batch import run_batch


def test_analysis_batch_over_an_archive(demo_run, tmp_path, monkeypatch):
    """The analysis notebooks on the runs analysis_runs names (here ce), the comparison over all,
    two notebooks at a time (each page lands in its run's record, in the YAML's order)."""
    root = tmp_path / "results"
    d = archive.archive_run(demo_run, root, features_kib=0)        # as a CIFAR archive: no features
    posthoc = tmp_path / "la_s0"                                    # the demo run relabelled as a post-hoc run
    shutil.copytree(demo_run, posthoc, ignore=shutil.ignore_patterns("checkpoint.pt"))
    cfg = yaml.safe_load((posthoc / "config.yaml").read_text())
    (posthoc / "config.yaml").write_text(yaml.safe_dump({**cfg, "method": "la_posthoc", "stage1_run": str(demo_run)}))
    archive.archive_run(posthoc, root, features_kib=0)
    run = load_run(d)
    p = widgets.predictions(run, "test")
    assert p["logits"].dtype == np.float32 and "features" not in p      # float16 on disk, float32 read
    assert not widgets.has_classifier(run)
    spec = yaml.safe_load((REPO / "experiments" / "demo_archive.yaml").read_text())
    spec["run_dirs"] = [str(root / "*" / "*" / "seed*")]
    spec["analysis_runs"] = [str(root / "*" / "ce" / "seed*")]
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(spec))
    monkeypatch.chdir(REPO)
    index = run_batch(tmp_path / "a.yaml", reports=tmp_path / "reports", executor={"jobs": 2})   # 2 at once
    out = index.parent
    status = json.loads((out / "ce_seed0.status.json").read_text())
    assert status["status"] == "ok", status
    assert [a["notebook"] for a in status["analysis"]] == ["02_energy", "03_calibration", "04_test_shift"]
    for a in status["analysis"]:
        assert (out / a["html"]).is_file()
    assert json.loads((out / "la_posthoc_seed0.status.json").read_text())["analysis"] == []
    # the index groups the runs by method (one row each here), not all runs as one configuration
    from ltlab.reports.html import aggregate, runs_frame
    records = [json.loads((out / f"{n}.status.json").read_text()) for n in ("ce_seed0", "la_posthoc_seed0")]
    assert [(json.loads(c)["method"], n) for c, n in aggregate(runs_frame(records))[["config", "n"]].values] == [
        ("ce", 1), ("la_posthoc", 1)]
    assert (out / "compare.html").is_file() and "ce_seed0__02_energy.html" in index.read_text()
    assert "la_posthoc" in (out / "compare.ipynb").read_text()                 # compared, not analysed
    calib = (out / "ce_seed0__03_calibration.ipynb").read_text()
    assert "no weight-norm / τ-norm view" in calib or "no weight-norm" in calib


def test_the_index_keeps_two_configurations_of_one_method_apart(demo_run, tmp_path):
    """The archive's ce and mislas_stage1 are both method ce, seed 0: the index must not average
    them as two seeds of one configuration (it did, until the batch took analysis.group_runs' labels)."""
    from ltlab.reports.batch_runs import group_params
    from ltlab.reports.html import aggregate, runs_frame

    cfg = yaml.safe_load((demo_run / "config.yaml").read_text())
    dirs = []
    for name, change in [("plain", {}), ("mixup", {"mixup_alpha": 1.0, "lr_gamma": 0.1}),
                         ("plain_seed1", {"seed": 1, "run_dir": "/x", "device": "cuda"})]:
        d = tmp_path / name
        shutil.copytree(demo_run, d, ignore=shutil.ignore_patterns("checkpoint.pt"))
        (d / "config.yaml").write_text(yaml.safe_dump({**cfg, **change}))
        dirs.append(d)
    params = group_params(dirs)
    method = cfg["method"]
    assert params[0] == {"method": f"{method}, lr_gamma={cfg['lr_gamma']}, mixup_alpha={cfg['mixup_alpha']}",
                         "seed": cfg["seed"]}
    assert params[1] == {"method": f"{method}, lr_gamma=0.1, mixup_alpha=1.0", "seed": cfg["seed"]}
    assert params[2] == {**params[0], "seed": 1}          # another seed of the first: where it ran is not a config
    records = [{"name": d.name, "params": p, "run_dir": str(d), "status": "ok"} for d, p in zip(dirs, params)]
    table = aggregate(runs_frame(records))
    assert [(json.loads(c)["method"], n) for c, n in table[["config", "n"]].values] == [
        (params[0]["method"], 2), (params[1]["method"], 1)]
