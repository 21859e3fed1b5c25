"""The bad-input catalogue: each case exits 2 with one line naming the bad value and what is
allowed, and leaves no run directory that looks finished (no summary.json)."""
import shutil

import pytest
import yaml
from conftest import tiny_folder

import ltlab
from ltlab.cli import main

FAST = ["epochs=1", "device=cpu", "progress=false", "batch_size=16"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_folder(tmp_path_factory.mktemp("tiny") / "data")


@pytest.fixture(scope="module")
def stage1(tmp_path_factory, tiny):
    """A finished 1-epoch stage one on the tiny folder (with its val split)."""
    run_dir = tmp_path_factory.mktemp("s1") / "run"
    return ltlab.fit({"dataset": "folder", "data_root": str(tiny), "epochs": 1, "device": "cpu",
                      "progress": False, "batch_size": 16, "run_dir": str(run_dir)})


def _broken_folder(tiny, tmp_path, how):
    root = tmp_path / "broken"
    shutil.copytree(tiny, root)
    if how == "empty_class":
        for f in (root / "train" / "truck").iterdir():
            f.unlink()
    elif how == "missing_in_test":
        shutil.rmtree(root / "test" / "truck")
    elif how == "no_test":
        shutil.rmtree(root / "test")
    return root


CASES = [
    # (id, args (RUN is replaced by a run dir under tmp), needle)
    ("unknown key", ["epochz=3"], "unknown config key 'epochz' (did you mean 'epochs'?)"),
    ("wrong type", ["epochs=ten"], "'epochs' = 'ten' (str): expected int"),
    ("float for int", ["batch_size=12.5"], "'batch_size' = 12.5 (float): expected int"),
    ("imbalance below 1", ["imb_factor=0.5"], "'imb_factor' = 0.5: must be >= 1"),
    ("zero epochs", ["epochs=0"], "'epochs' = 0: must be a positive integer"),
    ("negative batch", ["batch_size=-4"], "'batch_size' = -4: must be a positive integer"),
    ("non-positive lr", ["lr=0"], "'lr' = 0.0: must be > 0"),
    ("negative weight decay", ["weight_decay=-1e-4"], "'weight_decay' = -0.0001: must be >= 0"),
    ("unknown method", ["method=ldam"], "'method' = 'ldam': allowed values are"),
    ("unknown model", ["model=vgg16"], "'model' = 'vgg16': allowed values are"),
    ("unknown dataset", ["dataset=mnist"], "'dataset' = 'mnist': allowed values are"),
    ("unknown sampler", ["sampler=balanced"], "'sampler' = 'balanced': allowed values are"),
    ("unknown extra key", ["method=focal", "extra.gamma=2"], "unknown extra key 'gamma' for method 'focal'"),
    ("bad extra value", ["sampler=class_balanced", "extra.cb_epoch=all"], "'cb_epoch' = 'all': allowed values are max, n"),
    ("override without =", ["epochs"], "override 'epochs': expected key=value"),
    ("demo at another IF", ["dataset=demo", "imb_factor=50"], "the demo set is fixed at imb_factor = 100"),
    ("missing data root", ["dataset=cifar10_lt", "data_root=/nonexistent/cifar"], "/nonexistent/cifar"),
    ("folder without root", ["dataset=folder"], "dataset 'folder' with data_root = ''"),
    ("stage two without stage one", ["method=crt"], "set stage1_run to a finished stage-one run directory"),
    ("stage one missing", ["method=crt", "stage1_run=/nonexistent/run"], "'/nonexistent/run': no such run directory"),
    ("device not there", ["device=cuda"], "'device' = 'cuda'"),
    ("CUDA graphs on a CPU", ["compile=graphs", "device=cpu", "epochs=1"], "compile=graphs needs a CUDA device, not 'cpu'"),
]


@pytest.mark.parametrize("case, args, needle", CASES, ids=[c[0] for c in CASES])
def test_catalogue(case, args, needle, tmp_path, capsys):
    import torch

    if case == "device not there" and torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    run_dir = tmp_path / "run"
    code = main(["train", *args, f"run_dir={run_dir}", "progress=false"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("ltlab: error: ") and err.count("\n") == 1, err
    assert needle in err, err
    assert not list(tmp_path.rglob("summary.json"))


@pytest.mark.parametrize("how, needle", [
    ("empty_class", "holds no image"),
    ("missing_in_test", "class 'truck' is in"),
    ("no_test", "has no test/ folder"),
])
def test_broken_image_folders(how, needle, tiny, tmp_path, capsys):
    root = _broken_folder(tiny, tmp_path, how)
    code = main(["train", "dataset=folder", f"data_root={root}", f"run_dir={tmp_path / 'run'}", *FAST])
    err = capsys.readouterr().err
    assert code == 2 and needle in err and err.count("\n") == 1, err
    assert not list(tmp_path.rglob("summary.json"))


def test_stage_one_unfinished(stage1, tmp_path, capsys):
    unfinished = tmp_path / "unfinished"
    shutil.copytree(stage1, unfinished)
    (unfinished / "summary.json").unlink()
    code = main(["train", "method=crt", f"stage1_run={unfinished}", f"run_dir={tmp_path / 'run'}", *FAST])
    err = capsys.readouterr().err
    assert code == 2 and "the stage-one run did not finish" in err and err.count("\n") == 1, err
    assert not (tmp_path / "run" / "summary.json").exists()


def test_class_count_mismatch_between_data_and_checkpoint(stage1, tiny, tmp_path, capsys):
    # the stage-one data lose a class after stage one finished: its 10-class classifier no longer fits
    s1 = tmp_path / "s1"
    shutil.copytree(stage1, s1)
    data = tmp_path / "data9"
    shutil.copytree(tiny, data)
    for split in ("train", "val", "test"):
        shutil.rmtree(data / split / "truck")
    cfg = yaml.safe_load((s1 / "config.yaml").read_text())
    cfg["data_root"] = str(data)
    (s1 / "config.yaml").write_text(yaml.safe_dump(cfg))
    code = main(["train", "method=crt", f"stage1_run={s1}", f"run_dir={tmp_path / 'run'}", *FAST])
    err = capsys.readouterr().err
    assert code == 2 and "class-count mismatch" in err and "9 classes" in err and err.count("\n") == 1, err


def test_experiments_typo_refused(tmp_path, capsys):
    from conftest import REPO

    p = tmp_path / "exp.yaml"
    p.write_text(yaml.safe_dump({"name": "t", "notebook": str(REPO / "notebooks" / "01_train.ipynb"),
                                 "parameters": {"lr_rate": 0.1}}))
    assert main(["batch", str(p), "--reports", str(tmp_path / "reports")]) == 2
    err = capsys.readouterr().err
    assert "parameter 'lr_rate' is not a parameter of" in err and err.count("\n") == 1


# ---- range, shape and applicability (issue 11): every class of mistake, one line, exit 2 ----------
# (id, overrides, needle): through the CLI in-process, as `ltlab train` parses them
RANGE_CASES = [
    ("seed below numpy's range", ["seed=-3"], "'seed' = -3: must be an integer in 0..4294967295"),
    ("seed above numpy's range", ["seed=4294967296"], "'seed' = 4294967296"),
    ("lt_seed whose val seed overflows", ["dataset=cifar10_lt", "lt_seed=4294967295"], "'lt_seed' = 4294967295"),
    ("infinite lr", ["lr=.inf"], "'lr' = inf: must be a finite number > 0"),
    ("nan weight decay", ["weight_decay=.nan"], "'weight_decay' = nan: must be a finite number"),
    ("nan mixup", ["mixup_alpha=.nan"], "'mixup_alpha' = nan"),
    ("infinite imbalance", ["dataset=cifar10_lt", "imb_factor=1e400"], "'imb_factor' = inf"),
    ("momentum of 1", ["momentum=1.0"], "'momentum' = 1.0: must be a number in [0, 1)"),
    ("nesterov without momentum", ["nesterov=true", "momentum=0"], "'nesterov' = True: needs momentum > 0"),
    ("lr_gamma above 1", ["lr_gamma=2"], "'lr_gamma' = 2.0: must be a number in (0, 1]"),
    ("lr_gamma of 0", ["lr_gamma=0"], "'lr_gamma' = 0.0"),
    ("huge img_size", ["dataset=imagenet_lt", "img_size=100000"], "'img_size' = 100000: must be an integer in 8..4096"),
    ("run_name leaving runs/", ["run_name=../escape"], "'run_name' = '../escape'"),
    ("run_name with a space", ["run_name=a b"], "'run_name' = 'a b'"),
    ("milestones as a mapping", ["milestones={a: 1}"], "'milestones' = {'a': 1} (dict): expected list"),
    ("milestones of floats", ["milestones=[1.5]"], "'milestones' = [1.5]: must be a list of positive integers"),
    ("extra as a list", ["extra=[1, 2]"], "'extra' = [1, 2] (list): expected a mapping"),
    ("extra knob not finite", ["method=focal", "extra.focal_gamma=.inf"], "'focal_gamma' = inf: must be a finite number"),
    ("extra knob out of range", ["method=tde", "extra.tde_mu=1.5"], "'tde_mu' = 1.5: must be a number in [0, 1]"),
    ("extra knob int out of range", ["method=tde", "extra.tde_mu=2"], "'tde_mu' = 2"),
    ("extra list of nan", ["method=balpoe", "extra.balpoe_taus=[.nan]"], "'balpoe_taus' = [nan]"),
    ("extra list of strings", ["method=balpoe", "extra.balpoe_taus=[a]"], "'balpoe_taus' = ['a']"),
    ("extra pair out of order", ["method=balpoe", "extra.balpoe_tau_min=3", "extra.balpoe_tau_max=2"],
     "'balpoe_tau_min' = 3 is above balpoe_tau_max = 2"),
    ("mislas smoothing of 1.5", ["method=mislas", "extra.mislas_eps_head=1.5"], "'mislas_eps_head' = 1.5"),
    ("mislas stage one value", ["method=mislas", "extra.mislas_stage1={seed: -3}"],
     "(the stage-one config): config key 'seed' = -3"),
    # a key silently ignored by the run it is given to
    ("data_root for the demo", ["data_root=/tmp"], "'data_root' = '/tmp' is ignored by this run (dataset 'demo'"),
    ("train_list for cifar", ["dataset=cifar10_lt", "train_list=x.txt"], "'train_list' = 'x.txt' is ignored"),
    ("img_size for a small dataset", ["img_size=64"], "'img_size' = 64 is ignored"),
    ("num_workers for a small dataset", ["num_workers=2"], "'num_workers' = 2 is ignored"),
    ("lt_seed for the demo", ["lt_seed=5"], "'lt_seed' = 5 is ignored"),
    ("imb_factor for a folder", ["dataset=folder", "data_root=/tmp", "imb_factor=50"], "'imb_factor' = 50 is ignored"),
    ("milestones with cosine", ["schedule=cosine", "milestones=[5]", "epochs=10"], "'milestones' = [5] is ignored"),
    ("lr_gamma with constant", ["schedule=constant", "lr_gamma=0.5"], "'lr_gamma' = 0.5 is ignored"),
    ("stage1_run for a one-stage method", ["stage1_run=/tmp"], "'stage1_run' = '/tmp' is ignored by the one-stage"),
    ("sampler knob without its sampler", ["extra.cb_epoch=n"], "'cb_epoch' = 'n' is ignored"),
    ("focal_gamma for softmax cb", ["method=cb", "extra.focal_gamma=2"], "'focal_gamma' = 2 is ignored"),
    ("las power without exp shape", ["method=mislas", "extra.mislas_las_power=2"], "'mislas_las_power' = 2 is ignored"),
]


@pytest.mark.parametrize("case, args, needle", RANGE_CASES, ids=[c[0] for c in RANGE_CASES])
def test_range_and_ignored_keys(case, args, needle, tmp_path, capsys):
    code = main(["train", *args, f"run_dir={tmp_path / 'run'}", "progress=false"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("ltlab: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert needle in err, err
    assert not (tmp_path / "run").exists()


def test_run_dir_that_is_a_file(tmp_path, capsys):
    f = tmp_path / "afile"
    f.write_text("")
    assert main(["train", f"run_dir={f}"]) == 2
    err = capsys.readouterr().err
    assert "'run_dir' =" in err and "existing file" in err and err.count("\n") == 1, err


def test_saved_config_still_loads(tmp_path):
    """A complete config.yaml holds every key, used or not: it is not refused for its defaults."""
    from ltlab.methods import resolve as C
    cfg = C.from_dict({"schedule": "cosine", "epochs": 10, "warmup_epochs": 0})
    cfg.save(tmp_path / "config.yaml")
    assert C.from_dict(yaml.safe_load((tmp_path / "config.yaml").read_text())).schedule == "cosine"


@pytest.mark.parametrize("args, needle", [
    (["train", "--resume", "--restart"], "train --resume and --restart together"),
    (["train", "--force"], "train --force without --resume"),
    (["bench", "--steps", "0"], "bench: argument --steps: 0 is below 1"),
    (["bench", "--repeats", "x"], "bench: argument --repeats: 'x' is not an integer"),
    (["bench", "--workers", "-1"], "--workers: -1 is below 0"),
    (["bench", "--device", "gpu"], "argument --device: invalid choice: 'gpu'"),
    (["bench", "--out", "/nonexistent/dir/b.json"], "bench --out '/nonexistent/dir/b.json'"),
    (["train", "--bogus"], "unrecognized arguments: --bogus"),
])
def test_cli_flags(args, needle, capsys):
    with pytest.raises(SystemExit) as e:
        main(args)
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith("ltlab: error: ") and err.count("\n") == 1, err
    assert needle in err, err


# experiments files: (id, spec update, needle); nothing may execute
BATCH_CASES = [
    ("name leaving reports/", {"name": "../evil"}, "'name' = '../evil'"),
    ("analysis as a string", {"analysis": "x.ipynb"}, "'analysis' = 'x.ipynb': expected a list of .ipynb paths"),
    ("compare as a list", {"compare": ["a.ipynb"]}, "'compare' = ['a.ipynb']"),
    ("runs as a number", {"runs": 5}, "'runs' = 5: expected a list"),
    ("run parameters as a list", {"runs": [{"name": "a", "parameters": [1]}]}, "run 'a' parameters = [1]"),
    ("duplicate run names", {"runs": [{"name": "a"}, {"name": "a"}]}, "run name 'a' appears twice"),
    ("run name '..'", {"runs": [{"name": ".."}]}, "run name '..'"),
    ("reference outside runs", {"parameters": {"stage1_run": "@x"}}, "parameter 'stage1_run' = '@x'"),
    ("mapping in a grid", {"grid": {"seed": [{"a": 1}]}}, "grid key 'seed' value {'a': 1}"),
    ("repeated grid value", {"grid": {"seed": [0, 0]}}, "grid key 'seed' = [0, 0] repeats a value"),
    ("negative timeout", {"timeout": -1}, "'timeout' = -1"),
    ("kernel not installed", {"kernel": "no_such_kernel"}, "'kernel' = 'no_such_kernel' is not an installed"),
    ("runs_root as a number", {"runs_root": 5}, "'runs_root' = 5"),
    ("bad config value in a grid", {"grid": {"method": ["ce", "ldam"]}}, "run 'method-ldam': config key 'method'"),
    ("out-of-range parameter", {"parameters": {"seed": -3}}, "config key 'seed' = -3"),
    ("nested parameter", {"parameters": {"epochs": {"a": 1}}}, "config key 'epochs' = {'a': 1} (dict)"),
    ("overrides not a mapping", {"parameters": {"overrides": 5}}, "parameter 'overrides' = 5"),
    ("typo inside overrides", {"parameters": {"overrides": {"epochz": 1}}}, "unknown config key 'epochz'"),
    ("bad value behind a reference", {"runs": [{"name": "s1"}, {"name": "crt", "parameters": {
        "method": "crt", "stage1_run": "@s1", "seed": -1}}]}, "run 'crt': config key 'seed' = -1"),
]


@pytest.mark.parametrize("case, update, needle", BATCH_CASES, ids=[c[0] for c in BATCH_CASES])
def test_experiments_file_values(case, update, needle, tmp_path, monkeypatch, capsys):
    from conftest import REPO

    import ltlab.reports.batch as B

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(B, "execute", lambda *a, **k: pytest.fail("a notebook executed"))
    p = tmp_path / "exp.yaml"
    p.write_text(yaml.safe_dump({"name": "t", "notebook": str(REPO / "notebooks" / "01_train.ipynb"), **update}))
    assert main(["batch", str(p), "--reports", str(tmp_path / "reports")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ltlab: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert needle in err, err
    assert not (tmp_path / "runs").exists() and not (tmp_path / "evil").exists()


# the real CLI as a user runs it: a representative subset in subprocesses
@pytest.mark.parametrize("args, needle", [
    (["train", "seed=-3"], "'seed' = -3"),
    (["train", "extra=5"], "'extra' = 5"),
    (["train", "momentum=1.5"], "'momentum' = 1.5"),
    (["train", "data_root=/tmp"], "'data_root' = '/tmp' is ignored"),
    (["bench", "--steps", "0"], "--steps: 0 is below 1"),
])
def test_real_cli(args, needle, tmp_path):
    import subprocess
    import sys

    from conftest import REPO

    r = subprocess.run([sys.executable, "-m", "ltlab.cli", *args, *([f"run_dir={tmp_path / 'run'}"]
                        if args[0] == "train" else [])], capture_output=True, text=True, cwd=tmp_path,
                       env={**__import__("os").environ, "PYTHONPATH": str(REPO)}, timeout=300)
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("ltlab: error: ") and needle in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "run").exists()


# ---- every command on wrong files and unfinished or corrupt run directories (issue 26, item 5) -----



def _archived_ce():
    from conftest import REPO

    return REPO / "experiments" / "results" / "cifar10_lt_if100" / "ce" / "seed0"


def _npz(path, change):
    import numpy as np

    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    change(arrays)
    path.unlink()
    np.savez(path, **arrays)


# how a finished run directory is broken -> (what is done to it)
BROKEN = {
    "missing": lambda d: shutil.rmtree(d),
    "a_file": lambda d: (shutil.rmtree(d), d.write_text("not a run")),
    "no_summary": lambda d: (d / "summary.json").unlink(),
    "summary_not_json": lambda d: (d / "summary.json").write_text("{not json"),
    "summary_a_list": lambda d: (d / "summary.json").write_text("[1, 2]"),
    "summary_binary": lambda d: (d / "summary.json").write_bytes(b"\xff\xfe\x00"),
    "config_not_yaml": lambda d: (d / "config.yaml").write_text("a: [1\n"),
    "config_a_list": lambda d: (d / "config.yaml").write_text("- 1\n- 2\n"),
    "no_config": lambda d: (d / "config.yaml").unlink(),
    "no_test_npz": lambda d: (d / "predictions" / "test.npz").unlink(),
    "no_val_npz": lambda d: (d / "predictions" / "val.npz").unlink(),
    "test_npz_truncated": lambda d: (d / "predictions" / "test.npz").write_bytes(
        (d / "predictions" / "test.npz").read_bytes()[:5000]),
    "test_npz_empty": lambda d: (d / "predictions" / "test.npz").write_bytes(b""),
    "test_npz_no_labels": lambda d: _npz(d / "predictions" / "test.npz", lambda a: a.pop("labels")),
    "test_npz_short_labels": lambda d: _npz(d / "predictions" / "test.npz",
                                            lambda a: a.update(labels=a["labels"][:10])),
    "val_npz_truncated": lambda d: (d / "predictions" / "val.npz").write_bytes(b"PK\x03\x04"),
    "metrics_not_csv": lambda d: (d / "metrics.csv").write_text('"unclosed\n'),
    "metrics_no_epoch": lambda d: (d / "metrics.csv").write_text("a,b\n1,2\n"),
}
NEEDLE = {
    "missing": "does not exist",
    "a_file": "is a file",
    "no_summary": "has no summary.json",
    "summary_not_json": "summary.json' is not valid JSON",
    "summary_a_list": "summary.json' holds a list: expected a JSON object",
    "summary_binary": "summary.json' is not valid JSON",
    "config_not_yaml": "config.yaml' is not valid YAML",
    "config_a_list": "config.yaml' holds a list: expected a mapping",
    "no_config": "has summary.json but no config.yaml",
    "no_test_npz": "has summary.json but no predictions/test.npz",
    "no_val_npz": "lacks predictions/val.npz",
    "test_npz_truncated": "test.npz' is not a readable .npz",
    "test_npz_empty": "test.npz' is not a readable .npz",
    "test_npz_no_labels": "test.npz' lacks the array(s) labels",
    "test_npz_short_labels": "labels (10,) and train_counts (10,) do not fit together",
    "val_npz_truncated": "val.npz' is not a readable .npz",
    "metrics_not_csv": "metrics.csv' is not a readable CSV",
    "metrics_no_epoch": "metrics.csv' has no 'epoch' column",
}
# command (RUN: the broken run; OK: an intact copy; OUT: a folder under tmp) -> the breakages it is tried on
RUN_COMMANDS = {
    "eval": (["eval", "RUN"], list(BROKEN)),
    "eval --write": (["eval", "RUN", "--write"], ["summary_not_json", "test_npz_truncated", "no_val_npz"]),
    "compare": (["compare", "RUN", "OK", "--resamples", "100"],
                ["missing", "a_file", "summary_not_json", "summary_a_list", "test_npz_truncated", "test_npz_empty",
                 "test_npz_no_labels", "no_test_npz"]),
    "archive": (["archive", "RUN", "--out", "OUT"],
                ["missing", "a_file", "no_summary", "summary_not_json", "summary_a_list", "config_not_yaml",
                 "config_a_list", "test_npz_truncated", "test_npz_no_labels", "val_npz_truncated"]),
    "archive --verify": (["archive", "--verify", "RUN"],
                         ["missing", "a_file", "no_summary", "summary_not_json", "config_not_yaml", "no_config",
                          "no_test_npz", "test_npz_truncated", "test_npz_short_labels"]),
    "table": (["table", "BENCH"], ["summary_not_json", "summary_a_list", "config_not_yaml", "metrics_not_csv",
                                   "metrics_no_epoch"]),
    "bench --widgets": (["bench", "--widgets", "RUN", "--synthetic", ""],
                        ["summary_not_json", "config_a_list", "test_npz_truncated", "no_val_npz"]),
}
RUN_CASES = [(cmd, how) for cmd, (_, hows) in RUN_COMMANDS.items() for how in hows]
NEEDLE_OF = {("compare", "missing"): "is not a directory", ("compare", "a_file"): "is not a directory",
             ("compare", "no_test_npz"): "has no predictions/test.npz: nothing to compare"}


@pytest.mark.parametrize("cmd, how", RUN_CASES, ids=[f"{c}: {h}" for c, h in RUN_CASES])
def test_broken_run_directories(cmd, how, tmp_path, capsys):
    """Each command that reads run directories, on each way one can be unfinished or corrupt: one
    line naming the file and what was expected, exit 2, nothing written."""
    bench = tmp_path / "bench"
    run = shutil.copytree(_archived_ce(), bench / "ce" / "seed0")
    ok = shutil.copytree(_archived_ce(), tmp_path / "ok")
    BROKEN[how](run)
    before = {p: p.read_bytes() for p in bench.rglob("*") if p.is_file()}
    swap = {"RUN": str(run), "OK": str(ok), "OUT": str(tmp_path / "out"), "BENCH": str(bench)}
    argv = [swap.get(a, a) for a in RUN_COMMANDS[cmd][0]]
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("ltlab: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert NEEDLE_OF.get((cmd, how), NEEDLE[how]) in err, err
    assert {p: p.read_bytes() for p in bench.rglob("*") if p.is_file()} == before     # nothing rewritten
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("how, needle", [
    ("config_not_yaml", "config key 'stage1_run' = 'S1': 'S1/config.yaml' is not valid YAML"),
    ("config_a_list", "config key 'stage1_run' = 'S1': 'S1/config.yaml' holds a list"),
    ("no_config", "config key 'stage1_run' = 'S1': the run directory has no config.yaml"),
    ("bad_value", "stage-one run 'S1' (its config.yaml): config key 'seed' = -5"),
])
@pytest.mark.parametrize("method", ["crt", "tau_norm", "la_posthoc", "mislas"])
def test_broken_stage_one(method, how, needle, stage1, tmp_path, capsys):
    s1 = shutil.copytree(stage1, tmp_path / "s1")
    if how == "bad_value":
        (s1 / "config.yaml").write_text((s1 / "config.yaml").read_text() + "seed: -5\n")
    else:
        BROKEN[how](s1)
    code = main(["train", f"method={method}", f"stage1_run={s1}", f"run_dir={tmp_path / 'run'}", *FAST])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert needle.replace("S1", str(s1)) in err, err
    assert not (tmp_path / "run").exists()


def test_training_into_a_finished_run_needs_restart(tmp_path, capsys):
    """An archived copy holds summary.json and no checkpoint: training into it was a fresh run that
    replaced its metrics and, at the end, its summary. Now refused unless --restart."""
    run = shutil.copytree(_archived_ce(), tmp_path / "done")
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    assert main(["train", f"run_dir={run}", "device=cpu", "progress=false"]) == 2
    err = capsys.readouterr().err
    assert "already holds a finished run (summary.json): pass --restart" in err and err.count("\n") == 1, err
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


def test_the_api_refuses_a_finished_run_too(tmp_path):
    import ltlab
    from ltlab.config import ConfigError
    run = shutil.copytree(_archived_ce(), tmp_path / "done")
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    with pytest.raises(ConfigError, match="already holds a finished run"):
        ltlab.fit({"run_dir": str(run), "device": "cpu", "progress": False})
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


@pytest.mark.parametrize("how, needle", [
    ("provenance_not_json", "provenance.json' is not valid JSON"),
    ("provenance_a_list", "provenance.json' holds a list"),
    ("metrics_not_csv", "metrics.csv' has no 'epoch' column"),
    ("metrics_binary", "metrics.csv' is not a readable CSV"),
])
def test_resume_with_corrupt_files(how, needle, stage1, tmp_path, capsys):
    run = shutil.copytree(stage1, tmp_path / "run")
    (run / "summary.json").unlink()
    if how.startswith("provenance"):
        (run / "provenance.json").write_text("{nope" if how == "provenance_not_json" else "[1]")
    elif how == "metrics_not_csv":
        (run / "metrics.csv").write_text("hello\nworld\n")
    else:
        (run / "metrics.csv").write_bytes(b"\xff\xfe\x00\x01")
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    code = main(["train", f"data_root={cfg['data_root']}", "dataset=folder", f"run_dir={run}", *FAST, "--resume"])
    err = capsys.readouterr().err
    assert code == 2 and needle in err and err.count("\n") == 1 and "Traceback" not in err, err
    assert not (run / "summary.json").exists()


def _files(tmp_path):
    """Wrong files of every kind, by name."""
    import json

    files = {"a_file": "hello\n", "not_yaml.yaml": "a: [1\n", "list.yaml": "- 1\n- 2\n", "scalar.yaml": "5\n",
             "extra_list.yaml": "extra: [1]\n", "nb_not_json.ipynb": "{not json", "nb_list.ipynb": "[1, 2]",
             "nb_cells.ipynb": json.dumps({"cells": 5}), "nb_empty.ipynb": "{}"}
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    (tmp_path / "binary.md").write_bytes(b"\xff\xfe\x00\x01")
    (tmp_path / "binary.yaml").write_bytes(b"\xff\xfe\x00\x01lr: 1")
    (tmp_path / "twice.yaml").write_text("lr: 0.1\nepochs: 3\nlr: 0.2\n")
    (tmp_path / "empty_dir").mkdir()
    for nb in ("nb_not_json", "nb_list", "nb_cells", "nb_empty"):
        (tmp_path / f"exp_{nb}.yaml").write_text(yaml.safe_dump({"name": "t", "notebook": str(tmp_path / f"{nb}.ipynb")}))
    return tmp_path


# (id, argv with T = the folder of wrong files, needle)
FILE_CASES = [
    ("train -c a folder", ["train", "-c", "T/empty_dir"], "config file 'T/empty_dir' not found"),
    ("train -c not YAML", ["train", "-c", "T/not_yaml.yaml"], "is not valid YAML"),
    ("train -c a list", ["train", "-c", "T/list.yaml"], "must hold a mapping of key: value, got list"),
    ("train -c a scalar", ["train", "-c", "T/scalar.yaml"], "must hold a mapping of key: value, got int"),
    ("train -c extra as a list", ["train", "-c", "T/extra_list.yaml"],
     "config key 'extra' = [1] (list) in 'T/extra_list.yaml': expected a mapping"),
    ("train -c binary", ["train", "-c", "T/binary.yaml"], "config file 'T/binary.yaml' is not text (UTF-8)"),
    ("train -c a key twice", ["train", "-c", "T/twice.yaml"], "key 'lr' appears twice (line 3)"),
    ("batch binary", ["batch", "T/binary.yaml"], "config file 'T/binary.yaml' is not text (UTF-8)"),
    ("batch a key twice", ["batch", "T/twice.yaml"], "key 'lr' appears twice (line 3)"),
    ("batch: notebook not JSON", ["batch", "T/exp_nb_not_json.yaml"], "is not a readable Jupyter notebook (NotJSONError"),
    ("batch: notebook a list", ["batch", "T/exp_nb_list.yaml"], "is not a readable Jupyter notebook"),
    ("batch: notebook cells a number", ["batch", "T/exp_nb_cells.yaml"], "is not a readable Jupyter notebook"),
    ("batch: notebook an empty object", ["batch", "T/exp_nb_empty.yaml"], "is not a readable Jupyter notebook"),
    ("table: an empty folder", ["table", "T/empty_dir"], "holds no finished run"),
    ("table --update-readme missing", ["table", "--update-readme", "T/nothing.md"], "'T/nothing.md': no such file"),
    ("table --update-readme binary", ["table", "--update-readme", "T/binary.md"], "is not a text file"),
    ("notebooks into a file", ["notebooks", "T/a_file"], "notebooks: 'T/a_file' is (inside) a file"),
    ("notebooks inside a file", ["notebooks", "T/a_file/sub"], "notebooks: 'T/a_file/sub' is (inside) a file"),
    ("archive --out a file", ["archive", "ARCHIVED", "--out", "T/a_file"], "archive root --out 'T/a_file' is (inside)"),
    ("bench --synthetic not N,C", ["bench", "--widgets", "--synthetic", "abc"], "bench --synthetic 'abc': expected N,C"),
    ("bench --synthetic no class", ["bench", "--widgets", "--synthetic", "10,0"], "expected N >= 1 images and C >= 2"),
]


@pytest.mark.parametrize("case, argv, needle", FILE_CASES, ids=[c[0] for c in FILE_CASES])
def test_wrong_files(case, argv, needle, tmp_path, capsys, monkeypatch):
    t = _files(tmp_path)
    monkeypatch.chdir(tmp_path)
    argv = [a.replace("T/", f"{t}/") if a != "ARCHIVED" else str(_archived_ce()) for a in argv]
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("ltlab: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert needle.replace("T/", f"{t}/") in err, err
    assert not (tmp_path / "reports").exists()


@pytest.mark.parametrize("args, needle", [
    (["archive", "RUN", "--features-kib", "-1"], "argument --features-kib: -1 is below 0"),
    (["archive", "RUN", "--features-kib", "x"], "argument --features-kib: 'x' is not an integer"),
    (["bench", "--out", "EXISTING"], "bench --out 'EXISTING' exists (an earlier measurement): pass --force"),
    (["bench", "--widgets", "--out", "EXISTING"], "pass --force to overwrite it"),
])
def test_more_cli_flags(args, needle, tmp_path, capsys):
    (tmp_path / "old.json").write_text("{}")
    swap = {"RUN": str(tmp_path), "EXISTING": str(tmp_path / "old.json")}
    with pytest.raises(SystemExit) as e:
        main([swap.get(a, a) for a in args])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith("ltlab: error: ") and err.count("\n") == 1, err
    assert needle.replace("EXISTING", str(tmp_path / "old.json")) in err, err
    assert (tmp_path / "old.json").read_text() == "{}"
