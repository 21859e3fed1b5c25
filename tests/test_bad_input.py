"""The bad-input catalogue: each case exits 2 with one line naming the bad value and what is
allowed, and leaves no run directory that looks finished (no summary.json)."""
import shutil

import pytest
import yaml

import ltlab
from ltlab.cli import main

from conftest import tiny_folder

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
