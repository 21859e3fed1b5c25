"""run_batch's bookkeeping with the notebook executor replaced by a fake (no papermill, seconds):
the index's status cells, error texts and numbers, what a second invocation executes again, and
the analysis / compare chain of experiments/demo_analysis.yaml."""
import json
import re
from pathlib import Path

import pytest
import yaml
from conftest import REPO, patch_execute

import ltlab.reports.batch as B
from ltlab.reports.html import _pct


class FakeExecutor:
    """Records (notebook stem, output name, params); a training notebook writes a summary.json
    with numbers derived from its parameters, or fails for the methods in ``fail`` (valid config
    values: a bad one is refused before anything runs)."""

    def __init__(self):
        self.calls = []
        self.fail = {"focal"}

    def __call__(self, notebook, out_ipynb, params, kernel, cwd, timeout=None):
        self.calls.append((Path(notebook).stem, Path(out_ipynb).name, dict(params)))
        if Path(notebook).stem != "01_train":
            return {"status": "ok", "error": None, "seconds": 0.0}
        if params.get("method") in self.fail:
            return {"status": "failed", "error": f"RunError: fake failure of {params['method']}", "seconds": 0.0}
        run = Path(params["run_dir"])
        run.mkdir(parents=True, exist_ok=True)
        top1 = 0.25 + 0.125 * params.get("seed", 0) + 0.0625 * (params.get("epochs") or 0)
        (run / "summary.json").write_text(json.dumps({"top1": top1, "balanced_acc": top1 / 2, "ece": 0.0371,
                                                      "restart": params.get("restart")}))
        return {"status": "ok", "error": None, "seconds": 0.0}

    def trained(self):
        return [name for stem, name, _ in self.calls if stem == "01_train"]


def _rows(index: Path) -> dict:
    """{run name: the cells of every row naming it} of the index (failed-runs and per-run tables)."""
    rows = re.findall(r"<tr>(.*?)</tr>", index.read_text(), flags=re.S)
    out = {}
    for r in rows:
        cells = re.findall(r"<td[^>]*>(.*?)</td>", r, flags=re.S)
        if cells:
            out.setdefault(re.sub("<.*?>", "", cells[0]), []).extend(cells)
    return out


def _status(cells) -> str:
    """The status cell's text (without its error line)."""
    for c in cells:
        m = re.match(r"<span class='(?:ok|failed|interrupted|running|queued|missing)'>(.*?)</span>", c)
        if m:
            return m.group(1)
    raise AssertionError(f"no status cell in {cells}")


@pytest.fixture
def batch(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)   # notebooks are named relative to the repository
    fake = FakeExecutor()
    patch_execute(monkeypatch, fake)

    def run(spec, **kw):
        p = tmp_path / "exp.yaml"
        p.write_text(yaml.safe_dump({"runs_root": str(tmp_path / "runs"), **spec}))
        return B.run_batch(p, reports=str(tmp_path / "reports"), **kw)
    return run, fake, tmp_path


def test_index_rows_show_status_error_and_the_summary_numbers(batch):
    run, fake, tmp = batch
    spec = {"name": "b", "notebook": "notebooks/01_train.ipynb", "parameters": {"dataset": "demo", "epochs": 1},
            "grid": {"method": ["ce", "focal"], "seed": [0, 1]}}
    rows = _rows(run(spec))
    assert {"method-ce_seed-0", "method-ce_seed-1", "method-focal_seed-0", "method-focal_seed-1"} <= set(rows)
    for seed in (0, 1):
        ok, bad = rows[f"method-ce_seed-{seed}"], rows[f"method-focal_seed-{seed}"]
        assert _status(ok) == "ok" and _status(bad) == "failed"
        assert "RunError: fake failure of focal" in "".join(bad)
        assert "RunError" not in "".join(ok)
        s = json.loads((tmp / "runs" / "b" / f"method-ce_seed-{seed}" / "summary.json").read_text())
        assert _pct(s["top1"]) in ok and _pct(s["balanced_acc"]) in ok and _pct(0.0371) in ok
    # a second invocation executes only the failed runs again; the finished ones are cached
    fake.calls.clear()
    rows = _rows(run(spec))
    assert fake.trained() == ["method-focal_seed-0.ipynb", "method-focal_seed-1.ipynb"]
    assert _status(rows["method-ce_seed-0"]) == "ok (cached)" and _status(rows["method-focal_seed-1"]) == "failed"


def test_a_finished_run_whose_parameters_changed_runs_again_from_scratch(batch):
    run, fake, tmp = batch
    spec = {"name": "p", "notebook": "notebooks/01_train.ipynb", "parameters": {"dataset": "demo", "epochs": 1},
            "grid": {"seed": [0, 1]}}
    run(spec)
    assert fake.trained() == ["seed-0.ipynb", "seed-1.ipynb"] and all(c[2]["restart"] is False for c in fake.calls)
    fake.calls.clear()
    spec["parameters"]["epochs"] = 2          # both runs' parameters change
    rows = _rows(run(spec))
    assert fake.trained() == ["seed-0.ipynb", "seed-1.ipynb"]
    assert all(c[2]["restart"] is True and c[2]["epochs"] == 2 for c in fake.calls)   # --restart, new epochs
    assert _status(rows["seed-0"]) == "ok" and _pct(0.25 + 0.125) in rows["seed-0"]   # the new summary
    fake.calls.clear()
    spec["grid"]["seed"] = [0, 2]             # seed-0 unchanged, seed-2 new
    run(spec)
    assert fake.trained() == ["seed-2.ipynb"] and fake.calls[0][2]["restart"] is False
    fake.calls.clear()
    run(spec, rerun=True)                     # --rerun: everything again, from scratch
    assert fake.trained() == ["seed-0.ipynb", "seed-2.ipynb"] and all(c[2]["restart"] for c in fake.calls)


def test_demo_analysis_chain(batch):
    """experiments/demo_analysis.yaml: each finished run gets 02-04 with its run_dir, the batch one
    05_compare over the finished runs' directories; the index links them and shows each run's numbers."""
    run, fake, tmp = batch
    spec = yaml.safe_load((REPO / "experiments" / "demo_analysis.yaml").read_text())
    fake.fail = {"balanced_softmax"}           # one method fails: no analysis, not compared
    index = run(spec)
    train = [c[1] for c in fake.calls if c[0] == "01_train"]
    names = [f"{r}_seed-{s}" for r in ("ce", "balanced_softmax", "la_posthoc") for s in (0, 1)]
    assert sorted(train) == sorted(f"{n}.ipynb" for n in names)
    for s in (0, 1):                           # a stage two after its own stage one
        assert train.index(f"la_posthoc_seed-{s}.ipynb") > train.index(f"ce_seed-{s}.ipynb")
    runs = tmp / "runs" / "demo_analysis"
    done = [n for n in names if not n.startswith("balanced_softmax")]
    for name in done:
        mine = [(c[0], c[1]) for c in fake.calls if c[2] == {"run_dir": str((runs / name).resolve())}]
        assert mine == [(nb, f"{name}__{nb}.ipynb") for nb in ("02_energy", "03_calibration", "04_test_shift")]
    assert not [c for c in fake.calls if "balanced_softmax" in c[1] and c[0] != "01_train"]
    compare = [c for c in fake.calls if c[0] == "05_compare"]
    assert len(compare) == 1 and compare[0][1] == "compare.ipynb"
    assert sorted(compare[0][2]["run_dirs"]) == sorted(str((runs / n).resolve()) for n in done)
    assert fake.calls[-1][0] == "05_compare"   # after every run
    html = index.read_text()
    assert "href='compare.html'" in html
    rows = _rows(index)
    for name in done:
        cells = rows[name]
        s = json.loads((runs / name / "summary.json").read_text())
        assert _pct(s["top1"]) in cells and _pct(s["balanced_acc"]) in cells
        assert all(f"{name}__{nb}.html" in "".join(cells) for nb in ("02_energy", "03_calibration"))


def test_config_labels_leave_out_unset_keys():
    import json

    from ltlab.reports.html import config_label, varying_keys

    configs = [json.dumps(c) for c in ({"method": "ce", "epochs": 40, "stage1_run": None},
                                       {"method": "la_posthoc", "epochs": None, "stage1_run": "@ce"},
                                       {"method": "ce", "epochs": 10, "stage1_run": None})]
    keys = varying_keys(configs)
    assert [config_label(c, keys) for c in configs] == ["ce, epochs=40", "la_posthoc, stage1_run=@ce",
                                                        "ce, epochs=10"]
