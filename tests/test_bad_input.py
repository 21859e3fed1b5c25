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
     "'mislas_stage1' = {'seed': -3} (the stage-one config): config key 'seed' = -3"),
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
