"""Every method end to end through papermill (2 epochs), stage twos chained.

The runs read a small long-tailed image folder cut from the demo set (24 down to 2 training
images a class) through `dataset: folder`, so that the 15 notebook executions cost about as
much as their kernel start-ups."""
import json

import yaml

from ltlab.batch import run_batch
from ltlab.methods import METHODS

from conftest import REPO, tiny_folder

ONE_STAGE = ["ce", "focal", "cb", "ldam_drw", "balanced_softmax", "logit_adjust", "tde", "balpoe", "enmos", "mislas"]
STAGE_TWO = ["crt", "lws", "tau_norm", "ncm"]


def test_every_method_through_papermill(tmp_path, monkeypatch):
    assert set(ONE_STAGE + STAGE_TWO) == set(METHODS)
    monkeypatch.chdir(tmp_path)
    data = tiny_folder(tmp_path / "tiny")
    runs = [{"name": m, "parameters": {"method": m}} for m in ONE_STAGE]
    runs += [{"name": m, "parameters": {"method": m, "stage1_run": "@ce"}} for m in STAGE_TWO]
    # MiSLAS's own stage one gets the same 2 epochs
    runs[ONE_STAGE.index("mislas")]["parameters"]["overrides"] = {"extra": {"mislas_stage1": {"epochs": 2}}}
    spec = {"name": "methods", "notebook": str(REPO / "notebooks" / "01_train.ipynb"),
            "parameters": {"dataset": "folder", "data_root": str(data), "epochs": 2, "eval_every": 2,
                           "device": "cpu", "batch_size": 16},
            "runs": runs}
    p = tmp_path / "methods.yaml"
    p.write_text(yaml.safe_dump(spec))
    index = run_batch(p, reports=str(tmp_path / "reports"))
    out = tmp_path / "reports" / "methods"
    for m in ONE_STAGE + STAGE_TWO:
        status = json.loads((out / f"{m}.status.json").read_text())
        assert status["status"] == "ok", (m, status.get("error"))
        s = json.loads((tmp_path / "runs" / "methods" / m / "summary.json").read_text())
        assert s["method"] == m and 0.0 <= s["top1"] <= 1.0 and s["train_size"] == 84
        assert s["epochs"] == (0 if m in ("tau_norm", "ncm") else 2)
    assert (tmp_path / "runs" / "methods" / "mislas_stage1" / "summary.json").exists()
    assert index.read_text().count("ok") >= len(METHODS)
