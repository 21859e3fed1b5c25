"""Nothing fitted sees the test split (issue 26, item 3, second test).

Every value fitted on held-out data (the summary's temperature; the calibrations EM works on;
tau-norm's tau, post-hoc logit adjustment's tau, TDE's alpha; NCM's centroids and the stage-two
classifiers, fitted on train) is recorded by spies on the fitting functions themselves (every
``fit_*`` / ``choose_*`` function of the post-hoc modules, wherever a module imported it), while
each caller runs: the summary (compute_summary, ``ltlab eval``, finish_run), the post-hoc and
stage-two recipes, the interactive views, the analysis helpers and the notebooks' cells. Each
caller runs twice, once on a run and once on a copy whose test predictions are replaced (random
logits and features, permuted labels; the training counts and exported arrays kept): every
fitted value must come out the same. A copy with its *val* predictions replaced instead must
change them, so the comparison is not vacuous.
"""
from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO

import ltlab
import ltlab.training.loop as T
from ltlab.evaluation import calibrated_em
from ltlab.evaluation.run_dir import compute_summary, load_run

ARCHIVE = REPO / "experiments" / "results" / "cifar10_lt_if100"
# modules whose fit_* / choose_* functions fit something (and NCM's centroids, fitted on train)
FIT_MODULES = ("ltlab.evaluation.posthoc", "ltlab.evaluation.calibrated_em", "ltlab.evaluation.calibration_cv",
               "ltlab.evaluation.calibration_fit", "ltlab.evaluation.prior_intervals",
               "ltlab.evaluation.posthoc_classifier", "ltlab.evaluation.posthoc_tde", "ltlab.methods.posthoc_la")
FIT_EXTRA = ("ncm_centroids",)
PREDICTION_KEYS = ("logits", "labels", "features")


# ------------------------------------------------------------------------------ spies


def _digest(obj) -> str:
    """Exact digest of a fitted value: floats, arrays, tuples, dicts and dataclasses."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return _digest({f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)})
    if isinstance(obj, dict):
        return "{" + ",".join(f"{k}:{_digest(v)}" for k, v in sorted(obj.items(), key=lambda kv: str(kv[0]))) + "}"
    if isinstance(obj, (list, tuple)):
        return "(" + ",".join(_digest(v) for v in obj) + ")"
    if isinstance(obj, (np.ndarray, np.generic, float, int)) and not isinstance(obj, bool):
        a = np.ascontiguousarray(np.asarray(obj))
        return hashlib.sha1(a.tobytes() + str(a.dtype).encode()).hexdigest()[:12]
    return repr(obj)


def _fit_functions() -> dict:
    """{function: name} of every fitting function there is now."""
    out = {}
    for name in FIT_MODULES:
        try:
            mod = importlib.import_module(name)
        except ImportError:
            continue
        for attr, fn in vars(mod).items():
            if callable(fn) and getattr(fn, "__module__", None) == name and \
                    (attr.startswith(("fit_", "choose_")) or attr in FIT_EXTRA):
                out[fn] = f"{name.rsplit('.', 1)[1]}.{attr}"
    return out


@pytest.fixture
def fits(monkeypatch):
    """A list that receives (function, digest of its result) for every fit while the test runs;
    each fitting function is replaced in every ltlab module that holds it."""
    calls: list = []
    functions = _fit_functions()
    assert len(functions) >= 6, functions

    def spy(fn, name):
        def wrapper(*a, **k):
            out = fn(*a, **k)
            calls.append((name, _digest(out)))
            return out
        return wrapper

    spies = {fn: spy(fn, name) for fn, name in functions.items()}
    for mod in [m for n, m in list(sys.modules.items()) if n.startswith("ltlab") and m is not None]:
        for attr, value in list(vars(mod).items()):
            if callable(value) and value in spies:
                monkeypatch.setattr(mod, attr, spies[value])
    # fits cached across calls would be fitted once and then not seen
    from ltlab.interactive import widgets
    widgets._fitted_calibration.cache_clear()
    widgets._load.cache_clear()
    return calls


# ------------------------------------------------------------------------------ run copies


def replaced(run_dir, dest, split: str = "test", seed: int = 1):
    """A copy of a run whose ``split`` predictions are other ones: random logits and features of
    the same shape and dtype, permuted labels; every other array (train_counts, the exported
    classifier, tau, ...) kept."""
    dest = Path(shutil.copytree(run_dir, dest))
    f = dest / "predictions" / f"{split}.npz"
    with np.load(f) as z:
        arrays = {k: z[k] for k in z.files}
    rng = np.random.default_rng(seed)
    for k in ("logits", "features"):
        if k in arrays:
            a = arrays[k]
            arrays[k] = (rng.normal(size=a.shape) * 4).astype(a.dtype)
    arrays["labels"] = rng.permutation(arrays["labels"])
    f.unlink()
    np.savez(f, **arrays)
    return dest


@pytest.fixture(scope="module")
def runs(tmp_path_factory, demo_run):
    """Each finished run, a copy with other test predictions and a copy with other val ones."""
    root = tmp_path_factory.mktemp("heldout")
    out = {}
    for name, src in (("demo", demo_run), ("archived_ce", ARCHIVE / "ce" / "seed0"),
                      ("archived_crt", ARCHIVE / "crt" / "seed0")):
        out[name] = (src, replaced(src, root / f"{name}_test", "test"), replaced(src, root / f"{name}_val", "val"))
    return out


def _compare(fits, caller, runs, names=None):
    """caller(run_dir) on the run, on its test-replaced copy and on its val-replaced copy: the
    fits of the first two are equal and not empty, those of the third differ."""
    for name in names or runs:
        original, test_replaced, val_replaced = runs[name]
        got = []
        for d in (original, test_replaced, val_replaced):
            fits.clear()
            caller(Path(d))
            got.append(list(fits))
        assert got[0], f"{name}: no fit was made"
        assert got[0] == got[1], f"{name}: a fitted value changed with the test predictions:\n" \
                                 f"{_first_difference(got[0], got[1])}"
        assert got[0] != got[2], f"{name}: the fitted values did not change with the val predictions"


def _first_difference(a, b):
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return f"call {i}: {x} vs {y}"
    return f"{len(a)} vs {len(b)} calls"


# ------------------------------------------------------------------------------ the summary


def test_summary_temperature(fits, runs):
    """compute_summary (finish_run, ltlab eval, archive checks): temperature on val only."""
    temps = {}

    def caller(d):
        temps[d] = compute_summary(d / "predictions")["temperature"]
    _compare(fits, caller, runs)
    for name, (original, test_replaced, _) in runs.items():
        assert temps[Path(original)] is not None and temps[Path(original)] == temps[Path(test_replaced)], name


def test_ltlab_eval_temperature(fits, runs, capsys):
    from ltlab.cli import main

    def caller(d):
        assert main(["eval", str(d)]) == 0
        assert json.loads(capsys.readouterr().out)["temperature"] is not None
    _compare(fits, caller, runs, ["demo", "archived_ce"])


# ------------------------------------------------------------------------------ interactive views


def test_em_calibrations(fits, runs):
    """widgets.em_calibration, every calibration there is, and shift.run_calibration where it exists."""
    from ltlab.interactive import widgets

    def caller(d):
        run = load_run(d)
        for method in calibrated_em.CALIBRATIONS:
            widgets.em_calibration(run, method)
        from ltlab.evaluation import shift
        if hasattr(shift, "run_calibration"):
            for method in calibrated_em.CALIBRATIONS:
                shift.run_calibration(run.config, run.predictions("test"), run.predictions("val"), method)
    _compare(fits, caller, runs)


def test_prior_view_and_shift_compare(fits, runs):
    """The prior view (EM on a shifted test subset) and the comparison notebook's shift table with EM."""
    from ltlab.interactive import widgets
    from ltlab.reports import analysis

    def caller(d):
        run = load_run(d)
        widgets.prior_view(run, "forward10")
        analysis.shift_compare({"run": [run]}, variants=("none", "em"), em=True)
    _compare(fits, caller, runs, ["demo"])


# ------------------------------------------------------------------------------ notebooks


def _code_cells(path: Path):
    """(is the parameters cell, source) of each code cell of a jupytext percent script."""
    cells, header, lines = [], None, []
    for line in path.read_text().splitlines(True) + ["# %%\n"]:
        if line.startswith("# %%"):
            if header is not None and "[markdown]" not in header:
                cells.append(("parameters" in header, "".join(lines)))
            header, lines = line, []
        elif header is not None:
            lines.append(line)
    return cells


def _run_notebook(name, params, monkeypatch):
    import IPython.display

    monkeypatch.setattr(IPython.display, "display", lambda *a, **k: None)

    def caller(d):
        ns: dict = {}
        for is_params, src in _code_cells(REPO / "notebooks" / "src" / name):
            exec(compile(src, name, "exec"), ns)
            if is_params:
                ns.update(params, run_dir=str(d))
    return caller


def test_calibration_notebook(fits, runs, monkeypatch):
    """03_calibration: T and tau-norm's tau fitted on val, whatever the test predictions."""
    _compare(fits, _run_notebook("03_calibration.py", {}, monkeypatch), runs, ["demo"])
    assert {n for n, _ in fits} >= {"posthoc.fit_temperature", "posthoc_classifier.choose_tau"}


def test_test_shift_notebook(fits, runs, monkeypatch):
    """04_test_shift: the calibrations EM works on (and any interval that refits them) from val only."""
    _compare(fits, _run_notebook("04_test_shift.py", {"n_resamples": 20}, monkeypatch), runs, ["demo"])


# ------------------------------------------------------------------------------ recipes


def _small(b, *, replace: str | None = None):
    """The loop's data smaller (every 10th training image a class, 5 val and 10 test images a
    class), and with ``replace`` ('test' or 'val') that split's images replaced by noise and its
    labels permuted."""
    def keep(y, every=1, cap=None):
        y = y.cpu().numpy()
        return torch.from_numpy(np.concatenate([np.flatnonzero(y == c)[::every][:cap] for c in np.unique(y)]))

    tr, te, va = keep(b.train_y, 10), keep(b.test_y, cap=10), keep(b.val_y, cap=5)
    kw = dict(train_x=b.train_x[tr], train_y=b.train_y[tr], test_x=b.test_x[te], test_y=b.test_y[te],
              val_x=b.val_x[va], val_y=b.val_y[va],
              train_counts=np.bincount(b.train_y[tr].cpu().numpy(), minlength=b.num_classes).astype(np.int64))
    if replace:
        g = torch.Generator().manual_seed(5)
        x = kw[f"{replace}_x"]
        kw[f"{replace}_x"] = torch.randint(0, 256, x.shape, generator=g, dtype=torch.uint8)
        kw[f"{replace}_y"] = kw[f"{replace}_y"][torch.randperm(len(x), generator=g)]
    return dataclasses.replace(b, **kw)


def _recipe_run(method, stage1, tmp_path, monkeypatch, replace=None):
    real = T.build_data
    monkeypatch.setattr(T, "build_data", lambda cfg, device: _small(real(cfg, device), replace=replace))
    cfg = {"method": method, "epochs": 1, "device": "cpu", "progress": False, "eval_every": 1,
           "run_dir": str(tmp_path / f"{method}_{replace}")}
    if METHOD_STAGE1[method]:
        cfg["stage1_run"] = str(stage1)
    else:
        cfg.update(dataset="demo", model="resnet8", batch_size=64)
    run_dir = ltlab.fit(cfg)
    monkeypatch.setattr(T, "build_data", real)
    with np.load(run_dir / "predictions" / "val.npz") as z:
        val = {k: z[k] for k in z.files}
    state = torch.load(run_dir / "checkpoint.pt", weights_only=True)["model"] if (run_dir / "checkpoint.pt").exists() \
        else {}
    return val, state


METHOD_STAGE1 = {"tau_norm": True, "la_posthoc": True, "ncm": True, "crt": True, "lws": True, "mislas": True,
                 "ce": False}


@pytest.mark.parametrize("method", list(METHOD_STAGE1))
def test_recipes_fit_without_the_test_split(method, demo_run, fits, tmp_path, monkeypatch):
    """A run whose test images and labels are replaced fits the same: the same post-hoc choice
    (tau, la_tau, NCM centroids), the same trained weights (a one-stage run and stage two evaluate
    on test every epoch here), the same val predictions and exported arrays."""
    results = []
    for replace in (None, "test"):
        fits.clear()
        val, state = _recipe_run(method, demo_run, tmp_path, monkeypatch, replace)
        results.append((list(fits), val, state))
    (fits_a, val_a, state_a), (fits_b, val_b, state_b) = results
    assert fits_a == fits_b, _first_difference(fits_a, fits_b)
    assert sorted(val_a) == sorted(val_b)
    for k in val_a:
        np.testing.assert_array_equal(val_a[k], val_b[k], err_msg=f"{method}: val.npz '{k}'")
    assert state_a.keys() == state_b.keys()
    for k in state_a:
        assert torch.equal(state_a[k], state_b[k]), f"{method}: weight '{k}' moved with the test split"
    names = {n for n, _ in fits_a}
    expected = {"tau_norm": "posthoc_classifier.choose_tau", "la_posthoc": "posthoc_la.choose_la_tau",
                "ncm": "posthoc_classifier.ncm_centroids"}.get(method, "posthoc.fit_temperature")
    assert expected in names and "posthoc.fit_temperature" in names, names


@pytest.mark.parametrize("method, key", [("tau_norm", "tau_val_acc"), ("la_posthoc", "la_tau_val_acc")])
def test_recipes_fit_on_the_val_split(method, key, demo_run, tmp_path, monkeypatch):
    """The other way round: replacing the val split does change the val curve tau is chosen on."""
    a, _ = _recipe_run(method, demo_run, tmp_path, monkeypatch)
    b, _ = _recipe_run(method, demo_run, tmp_path / "v", monkeypatch, "val")
    assert not np.array_equal(a[key], b[key])


def test_tde_alpha_is_chosen_on_val_only():
    """posthoc_tde.choose_alpha takes a val split's predictions and nothing else (no caller in
    ltlab chooses TDE's alpha: the recipe uses the paper's per-dataset value)."""
    import inspect

    from ltlab.evaluation import posthoc_tde

    assert list(inspect.signature(posthoc_tde.choose_alpha).parameters) == ["pred_val", "alphas"]
    callers = [p for p in (REPO / "ltlab").rglob("*.py") if re.search(r"choose_alpha\(", p.read_text())
               and p.name != "posthoc_tde.py"]
    assert not callers, callers
