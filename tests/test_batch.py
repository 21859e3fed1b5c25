"""papermill batch: grid, HTML reports, index, failures, skipping finished runs."""
import json
import os
import stat

import pytest
import yaml
from conftest import REPO, patch_execute, tiny_folder

from ltlab.config import ConfigError
from ltlab.reports.batch import grid_points, load_experiments, run_batch

NB = str(REPO / "notebooks" / "01_train.ipynb")


def _write(tmp_path, spec):
    p = tmp_path / "exp.yaml"
    p.write_text(yaml.safe_dump(spec))
    return p


def test_grid_points_names():
    spec = {"parameters": {"epochs": 1}, "grid": {"method": ["ce", "focal"], "seed": [0, 1]}}
    pts = grid_points(spec)
    assert [n for n, _ in pts] == ["method-ce_seed-0", "method-ce_seed-1", "method-focal_seed-0", "method-focal_seed-1"]
    assert pts[1][1] == {"epochs": 1, "method": "ce", "seed": 1}


def test_typo_parameter_refused_before_running(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    p = _write(tmp_path, {"name": "t", "notebook": NB, "parameters": {"epochz": 1}, "grid": {"seed": [0]}})
    with pytest.raises(ConfigError, match="parameter 'epochz' is not a parameter of .*did you mean 'epochs'"):
        run_batch(p)
    assert not (tmp_path / "runs").exists()


def test_bad_experiments_files(tmp_path):
    with pytest.raises(ConfigError, match="unknown key 'gird'"):
        load_experiments(_write(tmp_path, {"name": "t", "notebook": NB, "gird": {}}))
    with pytest.raises(ConfigError, match="grid key 'seed' must be a non-empty list"):
        load_experiments(_write(tmp_path, {"name": "t", "notebook": NB, "grid": {"seed": 3}}))


def test_batch_with_a_failing_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # a value only the run itself can find wrong (config errors are refused before anything runs)
    spec = {"name": "mini", "notebook": NB,
            "parameters": {"dataset": "demo", "epochs": 1, "eval_every": 1, "device": "cpu"},
            "runs": [{"name": "method-ce", "parameters": {"method": "ce"}},
                     {"name": "method-no_such_method", "parameters": {"overrides": {"weights": "/no_such_method.pth"}}}]}
    umask = os.umask(0o022)          # the usual one: every file must come out 0644, shareable
    try:
        index = run_batch(_write(tmp_path, spec), reports=str(tmp_path / "reports"))
    finally:
        os.umask(umask)
    modes = {str(f.relative_to(tmp_path)): oct(stat.S_IMODE(f.stat().st_mode))
             for top in ("reports", "runs") for f in (tmp_path / top).rglob("*") if f.is_file()}
    assert any(k.endswith("checkpoint.pt") for k in modes) and any(k.endswith("method-ce.html") for k in modes)
    assert {k: m for k, m in modes.items() if m != "0o644"} == {}
    assert "href='mini/index.html'" in (tmp_path / "reports" / "index.html").read_text()   # the landing page
    out = tmp_path / "reports" / "mini"
    html = index.read_text()
    assert index == (out / "index.html").resolve()
    ok = json.loads((out / "method-ce.status.json").read_text())
    bad = json.loads((out / "method-no_such_method.status.json").read_text())
    assert ok["status"] == "ok" and (tmp_path / "runs" / "mini" / "method-ce" / "summary.json").exists()
    assert bad["status"] == "failed" and "no_such_method" in bad["error"] and "ConfigError" in bad["error"]
    assert not (tmp_path / "runs" / "mini" / "method-no_such_method" / "summary.json").exists()
    # both notebooks rendered, the failed one with papermill's error banner kept
    assert (out / "method-ce.html").exists() and (out / "method-no_such_method.html").exists()
    assert "method-no_such_method.html" in html and "failed" in html and "no_such_method" in html
    report = (out / "method-ce.html").read_text()
    assert report.count("<img") >= 4                           # the figures made it into the report
    assert "ltlab.fit(" not in report                          # input cells are hidden
    # key numbers and provenance first, full tables collapsed, start-up lines not painted as errors
    assert report.index("reproduce") < report.index("<img") < report.index("Full summary")
    assert "ltlab train -c " in report and "<details" in report
    # the start-up lines are plain output, not an stderr block (the CSS names the selector anyway)
    assert "process(es) x" in report and 'data-mime-type="application/vnd.jupyter.stderr"' not in report
    assert "jupyter-widgets" not in report and "cdnjs" not in report   # no progress widgets, nothing from a CDN
    # a second invocation skips the finished run and retries the failed one
    mtime = (out / "method-ce.ipynb").stat().st_mtime
    index2 = run_batch(_write(tmp_path, spec), reports=str(tmp_path / "reports"))
    assert (out / "method-ce.ipynb").stat().st_mtime == mtime
    assert "ok (cached)" in index2.read_text()


def test_named_runs_crossed_with_grid_and_references():
    spec = {"parameters": {"epochs": 1}, "grid": {"seed": [0, 1]},
            "runs": [{"name": "s1", "parameters": {"method": "ce"}},
                     {"name": "crt", "parameters": {"method": "crt", "stage1_run": "@s1"}}]}
    pts = grid_points(spec)
    assert [n for n, _ in pts] == ["s1_seed-0", "crt_seed-0", "s1_seed-1", "crt_seed-1"]
    assert pts[3][1] == {"epochs": 1, "method": "crt", "stage1_run": "@s1_seed-1", "seed": 1}
    from pathlib import Path

    from ltlab.reports.batch import resolve_refs
    assert resolve_refs(pts[3][1], Path("/r/b"))["stage1_run"] == "/r/b/s1_seed-1"


def test_reference_to_a_later_run_refused(tmp_path):
    with pytest.raises(ConfigError, match="'@s2' names no earlier run; allowed: @s1"):
        load_experiments(_write(tmp_path, {"name": "t", "notebook": NB, "runs": [
            {"name": "s1", "parameters": {}}, {"name": "x", "parameters": {"stage1_run": "@s2"}},
            {"name": "s2", "parameters": {}}]}))


def test_methods_experiment_names_every_method():
    from ltlab.methods import METHODS

    spec = load_experiments(REPO / "experiments" / "cifar10_lt_methods.yaml")
    methods = {p["method"] for _, p in grid_points(spec)}
    assert methods == set(METHODS)
    check = __import__("ltlab.reports.batch", fromlist=["check_parameters"]).check_parameters
    for name, params in grid_points(spec):
        check(REPO / spec["notebook"], params, name)
    for queue_file in ("cifar10_lt_queue.yaml", "cifar10_lt_seeds.yaml"):   # batch files too
        queue = load_experiments(REPO / "experiments" / queue_file)
        for name, params in grid_points(queue):
            check(REPO / queue["notebook"], params, name)


def test_ctrl_c_leaves_a_state_the_next_invocation_completes(tmp_path, monkeypatch):
    """Ctrl-C during the second run: the first stays done, the second is marked interrupted,
    and the next invocation executes only the second."""
    import ltlab.reports.batch as B

    monkeypatch.chdir(tmp_path)
    spec = {"name": "cc", "notebook": NB,
            "parameters": {"dataset": "folder", "data_root": str(tiny_folder(tmp_path / "tiny")), "epochs": 1,
                           "device": "cpu", "batch_size": 16},
            "grid": {"seed": [0, 1]}}
    p = _write(tmp_path, spec)
    real = B.execute
    calls = []

    def interrupt_second(notebook, out_ipynb, params, kernel, cwd, timeout=None):
        calls.append(out_ipynb.name)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(notebook, out_ipynb, params, kernel, cwd, timeout)

    patch_execute(monkeypatch, interrupt_second)
    with pytest.raises(KeyboardInterrupt):
        run_batch(p, reports=str(tmp_path / "reports"))
    out = tmp_path / "reports" / "cc"
    assert json.loads((out / "seed-1.status.json").read_text())["status"] == "interrupted"
    assert "interrupted" in (out / "index.html").read_text()
    patch_execute(monkeypatch, real)
    calls.clear()
    patch_execute(monkeypatch, lambda *a, **k: (calls.append(a[1].name), real(*a, **k))[1])
    index = run_batch(p, reports=str(tmp_path / "reports"))
    assert calls == ["seed-1.ipynb"]                      # only the interrupted run executes again
    html = index.read_text()
    assert "ok (cached)" in html and html.count(">ok<") + html.count(">ok (cached)<") == 2
