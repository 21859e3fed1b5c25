"""Every config key reaches the run (issue 26, item 3).

Each RunConfig key, and each extra key of every recipe (``METHODS[name].known_extra()``), is
perturbed in turn from a base config where it applies, and the resolved run must change on
every channel the case names:

- cheap channels, from the recipe's pieces: ``schedule`` (schedule.resolved and lr_at of every
  epoch), ``data`` (ltlab.data.build_data), ``sampler`` (recipe.build_sampler, epochs 1-3),
  ``model`` (recipe.build_model under the run's seed), ``outputs`` (recipe.inference of that
  model on a fixed batch), ``loss`` (recipe.build_loss on that batch, every epoch), ``stage1``
  (the stage one a recipe trains itself, recipe.own_stage1);
- loop channels, from the real training loop (ltlab.training.loop.fit on a shrunk demo set,
  stopped after its first epoch): ``init`` (the model the loop starts from), ``groups`` (the
  optimizer's parameter groups at epoch 1: lr, lr_scale, momentum, weight decay, Nesterov,
  size), ``loader`` (what reaches the loader: batch size, seed, accumulation, rotation),
  ``batches`` (the first optimizer step's micro-batches), ``train_kw`` (mixup and autocast the
  epoch runs with), ``step`` (loss and every weight and buffer after epoch 1), ``predict``
  (test predictions then), ``export`` (post-hoc recipes: what finalize fitted), ``layout``
  (memory format), ``compile`` (the mode the training step gets).

Keys that are about where and how fast rather than what (run_dir, run_name, progress,
eval_every, device, sync_bn) have their own checks below. A key with no effect for a method is
either refused when given (ltlab.config.checks IGNORED / IGNORED_EXTRA) or listed in NO_EFFECT
with the reason; test_every_key_is_covered keeps the tables complete when keys are added.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import re
import shutil

import numpy as np
import pytest
import torch
from conftest import image_tree, tiny_folder

import ltlab.data as data_mod
import ltlab.training.loop as T
from ltlab.config import FIELDS, ConfigError
from ltlab.config.checks import IGNORED, IGNORED_EXTRA
from ltlab.data import Source
from ltlab.methods import METHODS
from ltlab.methods.resolve import from_dict
from ltlab.models.inference import predict
from ltlab.training import distributed as D
from ltlab.training import schedule

CHEAP = ("schedule", "data", "sampler", "model", "outputs", "loss", "stage1")
LOOP = ("init", "groups", "loader", "batches", "train_kw", "step", "predict", "export", "layout", "compile")
POSTHOC = tuple(n for n, r in METHODS.items() if not r.trains)

# ------------------------------------------------------------------------------ fingerprints


def _h(*arrays) -> str:
    """A digest of arrays / tensors (values, shapes and dtypes)."""
    d = hashlib.sha1()
    for a in arrays:
        if a is None:
            d.update(b"none")
            continue
        if isinstance(a, torch.Tensor):
            a = a.detach().float().cpu().numpy() if a.is_floating_point() else a.detach().cpu().numpy()
        a = np.ascontiguousarray(np.asarray(a))
        d.update(str((a.shape, a.dtype.str)).encode())
        d.update(a.tobytes())
    return d.hexdigest()[:16]


def _state(module) -> str:
    sd = module.state_dict()
    return _h(*[sd[k] for k in sorted(sd)]) + str(sorted((k, tuple(v.shape)) for k, v in sd.items()))


def _data_print(b) -> tuple:
    common = (b.num_classes, tuple(np.asarray(b.train_counts).tolist()), tuple(b.mean), tuple(b.std),
              str(b.img_size), b.channels_last, b.origin)
    if hasattr(b, "train_x"):
        val = None if b.val_x is None else _h(b.val_x, b.val_y)
        return common + (_h(b.train_x, b.train_y), val, _h(b.test_x, b.test_y))
    lists = tuple(None if s is None else _h(s.paths, s.labels) for s in (b.train, b.val, b.test))
    first = next(iter(b.eval_loader("test", batch_size=2))) if b.num_workers == 0 else None
    return common + lists + (b.num_workers, None if first is None else tuple(first[0].shape))


def _sampler_print(sampler, epochs: int):
    if sampler is None:
        return "instance"
    return (len(sampler), [_h(sampler.indices(e, torch.Generator().manual_seed(e), "cpu"))
                           for e in range(1, min(epochs, 3) + 1)])


# ------------------------------------------------------------------------------ fixtures / data


def _fake_cifar(name, data_root=""):
    """A small CIFAR-shaped source (200 training images a class), so that the long-tailed
    subset, its profile and seed, and the validation split run their real code in milliseconds."""
    rng = np.random.default_rng(0)
    c = 10 if name == "cifar10" else 100
    train_y = np.repeat(np.arange(c), 200)
    test_y = np.repeat(np.arange(c), 5)
    return Source(class_names=[f"c{i}" for i in range(c)],
                  train_x=rng.integers(0, 256, (train_y.size, 32, 32, 3), dtype=np.uint8), train_y=train_y,
                  test_x=rng.integers(0, 256, (test_y.size, 32, 32, 3), dtype=np.uint8), test_y=test_y,
                  origin=f"fake {name} at '{data_root}'")


def _shrink(b):
    """The loop's data, smaller: every 20th training image of a class (still long-tailed: 25 to
    1 a class on the demo), 1 + c // 2 val images of class c (an imbalanced val split, so that
    top-1 and balanced accuracy differ) and 3 test images a class."""
    if not hasattr(b, "train_x"):
        return b

    def keep(y, every=1, cap=None, per=None):
        y = y.cpu().numpy()
        return torch.from_numpy(np.concatenate([np.flatnonzero(y == c)[::every][:(per(c) if per else cap)]
                                                for c in np.unique(y)]))

    tr, te = keep(b.train_y, 20), keep(b.test_y, cap=3)
    kw = dict(train_x=b.train_x[tr], train_y=b.train_y[tr], test_x=b.test_x[te], test_y=b.test_y[te],
              train_counts=np.bincount(b.train_y[tr].cpu().numpy(), minlength=b.num_classes).astype(np.int64))
    if b.val_x is not None:
        va = keep(b.val_y, per=lambda c: 1 + int(c) // 2)
        kw.update(val_x=b.val_x[va], val_y=b.val_y[va])
    return dataclasses.replace(b, **kw)


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    """Files the cases point at: two image folders, list files, backbone weights, and two
    finished stage-one runs (the second with other weights)."""
    import ltlab

    root = tmp_path_factory.mktemp("keys")
    out = {"folder_a": tiny_folder(root / "folder_a"),
           "folder_b": tiny_folder(root / "folder_b", train=(20, 16, 12, 9, 7, 5, 4, 3, 2, 1))}
    tree = image_tree(root / "tree", per_split=(("train", 4), ("val", 2), ("test", 3)))
    (tree / "train_b.txt").write_text("".join((tree / "train.txt").read_text().splitlines(True)[1:]))
    (tree / "test_b.txt").write_text("".join((tree / "test.txt").read_text().splitlines(True)[:-1]))
    out["tree"] = tree
    torch.manual_seed(123)
    from ltlab.models import build_backbone
    torch.save(build_backbone("resnet8").state_dict(), root / "resnet8.pth")
    out["weights"] = root / "resnet8.pth"
    with pytest.MonkeyPatch.context() as mp:
        real = T.build_data
        mp.setattr(T, "build_data", lambda cfg, device: _shrink(real(cfg, device)))
        s1 = ltlab.fit({"dataset": "demo", "model": "resnet8", "epochs": 1, "device": "cpu", "progress": False,
                        "run_dir": str(root / "s1")})
    s1b = shutil.copytree(s1, root / "s1b")
    state = torch.load(s1b / "checkpoint.pt", weights_only=True)
    state["model"] = {k: v * 1.5 if v.is_floating_point() else v for k, v in state["model"].items()}
    torch.save(state, s1b / "checkpoint.pt")
    out.update(s1=s1, s1b=s1b)
    return out


@pytest.fixture(autouse=True)
def _cifar(monkeypatch):
    monkeypatch.setattr(data_mod, "load_cifar", _fake_cifar)


# ------------------------------------------------------------------------------ observing a run

_DATA_CACHE: dict = {}


def _data(cfg):
    key = json.dumps({k: getattr(cfg, k) for k in ("dataset", "data_root", "imb_factor", "imb_profile", "lt_seed",
                                                   "val_split", "val_per_class", "train_list", "val_list",
                                                   "test_list", "img_size", "num_workers", "channels_last")})
    if key not in _DATA_CACHE:
        _DATA_CACHE[key] = data_mod.build_data(cfg, "cpu")
    return _DATA_CACHE[key]


def cheap(cfg) -> dict:
    """The cheap channels of a resolved config."""
    recipe = METHODS[cfg.method]
    data = _data(cfg)
    sampler = recipe.build_sampler(cfg, data)
    spe = math.ceil((len(sampler) if sampler is not None else len(data.train_y)) / cfg.batch_size)
    out = {"schedule": (json.dumps(schedule.resolved(cfg, recipe, spe), sort_keys=True),
                        tuple(schedule.lr_at_step(cfg, e, s, spe) for e in range(1, cfg.epochs + 1)
                              for s in range(spe))),
           "data": _data_print(data),
           "sampler": _sampler_print(sampler, cfg.epochs),
           "stage1": json.dumps(recipe.own_stage1(cfg), sort_keys=True, default=str)}
    if not hasattr(data, "train_x") or recipe.own_stage1(cfg) is not None:
        return out   # (a recipe's own stage one is trained by the loop before its model exists)
    torch.manual_seed(cfg.seed)
    model = recipe.build_model(cfg, data).eval()
    y_all = data.test_y.cpu().numpy()
    idx = torch.from_numpy(np.concatenate([np.flatnonzero(y_all == c)[:2] for c in range(data.num_classes)]))
    x, y = next(iter(data_mod.GpuLoader(data.test_x[idx], data.test_y[idx], len(idx), train=False, mean=data.mean,
                                        std=data.std)))   # two test images of every class
    with torch.no_grad():
        res = model(x)
        loss_fn = recipe.build_loss(cfg, data)
        losses = []
        for e in range(1, cfg.epochs + 1):
            if hasattr(loss_fn, "set_epoch"):
                loss_fn.set_epoch(e)
            losses.append(round(float(loss_fn(res, y)), 7))
    out.update(model=_state(model), outputs=_h(recipe.inference(res)), loss=tuple(losses))
    return out


class _Stop(Exception):
    pass


class _NoLog:
    def __init__(self, *a, **k):
        pass

    epoch = final = close = __init__


def loop(cfg_dict: dict, run_dir) -> dict:
    """The loop channels: ltlab.training.loop.fit on the shrunk data, stopped after epoch 1
    (post-hoc recipes: after finalize)."""
    rec: dict = {}
    real_build, real_batches, real_epoch = T.build_data, D.train_batches, T.train_one_epoch

    def build(cfg, device):
        rec["bundle"] = _shrink(real_build(cfg, device))
        rec["epochs"] = cfg.epochs
        return rec["bundle"]

    def batches(data, batch_size, seed, sampler, ctx, accum=1, rotate=0.0):
        rec["loader"] = (batch_size, seed, accum, rotate, _sampler_print(sampler, rec["epochs"]))
        return real_batches(data, batch_size, seed, sampler, ctx, accum, rotate=rotate)

    def compile_model(model, mode):
        rec["compile"] = mode
        return model

    def epoch(model, steps, loss_fn, optimizer, recipe, **kw):
        net = D.unwrap(model)
        rec["init"] = _state(net)
        rec["groups"] = [(round(g["lr"], 12), g["momentum"], g["weight_decay"], g["nesterov"],
                          sum(p.numel() for p in g["params"])) for g in optimizer.param_groups]
        rec["train_kw"] = (kw["mixup_alpha"], str(kw["amp_dtype"]))
        steps.set_epoch(kw["epoch"])
        first = next(iter(steps))
        rec["batches"] = (len(steps), [(_h(x, y), w) for x, y, w in first])
        conv = next(m for m in net.modules() if isinstance(m, torch.nn.Conv2d))
        rec["layout"] = (first[0][0].is_contiguous(memory_format=torch.channels_last),
                         conv.weight.is_contiguous(memory_format=torch.channels_last))
        loss, _ = real_epoch(model, steps, loss_fn, optimizer, recipe, **kw)
        rec["step"] = (round(loss, 6), _state(net))
        rec["predict"] = _h(predict(net, rec["bundle"].eval_loader("test"), recipe)["logits"])
        raise _Stop

    def finish(model, recipe, cfg, data, run_dir, **kw):
        rec["init"] = rec["step"] = _state(model)
        rec["predict"] = _h(predict(model, data.eval_loader("test"), recipe)["logits"])
        exported = recipe.export(model)
        rec["export"] = _h(*[exported[k] for k in sorted(exported)])
        raise _Stop

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(T, "build_data", build)
        mp.setattr(D, "train_batches", batches)
        mp.setattr(T, "compile_model", compile_model)
        mp.setattr(T, "train_one_epoch", epoch)
        mp.setattr(T, "finish_run", finish)
        mp.setattr(T, "EpochLog", _NoLog)
        mp.setattr(T.provenance, "start", lambda *a, **k: None)
        with contextlib.suppress(_Stop):
            T.fit({"run_dir": str(run_dir), "progress": False, **cfg_dict})
    rec.pop("bundle", None)
    rec.pop("epochs", None)
    return rec


_OBSERVED: dict = {}


def observe(cfg_dict: dict, channels, tmp_path) -> dict:
    key = json.dumps(cfg_dict, sort_keys=True, default=str)
    got = _OBSERVED.setdefault(key, {})
    if any(c in CHEAP for c in channels) and "schedule" not in got:
        got.update(cheap(from_dict(dict(cfg_dict))))
    if any(c in LOOP for c in channels) and "loop" not in got:
        got.update(loop(cfg_dict, tmp_path / f"run{len(_OBSERVED)}"), loop=True)
    return got


# ------------------------------------------------------------------------------ the cases

SMALL = {"dataset": "demo", "model": "resnet8", "epochs": 2, "device": "cpu", "compile": "off"}
CIFAR = {"dataset": "cifar10_lt", "model": "resnet8", "epochs": 2, "device": "cpu"}
CB = {"sampler": "class_balanced"}


def _s2(method, **kw):
    """A stage-two base: its stage one is the module's finished demo run."""
    return {"method": method, "stage1_run": "@s1", "epochs": 2, "device": "cpu", "compile": "off", **kw}


# (method or '*', key, base config, perturbed value, the channels that must change).
# Values starting with '@' name an entry of the `paths` fixture.
CASES = [
    # --- data
    ("*", "dataset", SMALL, "cifar10_lt", ["data"]),
    ("*", "data_root", {**SMALL, "dataset": "folder", "data_root": "@folder_a"}, "@folder_b", ["data"]),
    ("*", "imb_factor", CIFAR, 10.0, ["data"]),
    ("*", "imb_profile", CIFAR, "step", ["data"]),
    ("*", "lt_seed", CIFAR, 1, ["data"]),
    ("*", "val_split", {**CIFAR, "imb_factor": 10.0, "val_per_class": 5}, "carve", ["data"]),
    ("*", "val_per_class", CIFAR, 10, ["data"]),
    ("*", "train_list", {**SMALL, "dataset": "list", "data_root": "@tree", "train_list": "train.txt",
                         "test_list": "test.txt", "img_size": 32, "num_workers": 0}, "train_b.txt", ["data"]),
    ("*", "val_list", {**SMALL, "dataset": "list", "data_root": "@tree", "train_list": "train.txt",
                       "test_list": "test.txt", "img_size": 32, "num_workers": 0}, "val.txt", ["data"]),
    ("*", "test_list", {**SMALL, "dataset": "list", "data_root": "@tree", "train_list": "train.txt",
                        "test_list": "test.txt", "img_size": 32, "num_workers": 0}, "test_b.txt", ["data"]),
    ("*", "img_size", {**SMALL, "dataset": "list", "data_root": "@tree", "train_list": "train.txt",
                       "test_list": "test.txt", "img_size": 32, "num_workers": 0}, 16, ["data"]),
    ("*", "num_workers", {**SMALL, "dataset": "list", "data_root": "@tree", "train_list": "train.txt",
                          "test_list": "test.txt", "img_size": 32, "num_workers": 0}, 1, ["data"]),
    # --- model and method
    ("*", "model", SMALL, "resnet20", ["model", "init"]),
    ("*", "weights", SMALL, "@weights", ["init"]),
    ("*", "method", SMALL, "focal", ["loss"]),
    ("*", "stage1_run", _s2("crt"), "@s1b", ["init"]),
    ("*", "sampler", SMALL, "sqrt", ["sampler", "loader"]),
    ("*", "mixup_alpha", SMALL, 0.5, ["train_kw"]),
    # --- optimisation
    ("*", "epochs", SMALL, 3, ["schedule"]),
    ("*", "batch_size", {**SMALL, "batch_size": 32}, 16, ["loader", "batches"]),
    ("*", "accum_steps", {**SMALL, "batch_size": 32}, 2, ["loader", "batches"]),
    ("*", "lr", SMALL, 0.05, ["schedule", "groups"]),
    ("*", "momentum", SMALL, 0.5, ["groups"]),
    ("*", "nesterov", SMALL, True, ["groups"]),
    ("*", "weight_decay", SMALL, 1e-3, ["groups"]),
    ("*", "schedule", {**SMALL, "epochs": 4, "warmup_epochs": 0}, "cosine", ["schedule"]),
    ("*", "warmup_epochs", {**SMALL, "epochs": 4}, 2, ["schedule"]),
    ("*", "warmup_min_steps", {**SMALL, "epochs": 4, "warmup_epochs": 1}, 0, ["schedule"]),
    ("*", "milestones", {**SMALL, "epochs": 4}, [2], ["schedule"]),
    ("*", "lr_gamma", {**SMALL, "epochs": 4, "milestones": [2]}, 0.5, ["schedule"]),
    # --- run (what, and how: the how keys with a value observable here)
    ("*", "seed", SMALL, 1, ["model", "init", "batches"]),
    ("*", "amp", SMALL, "bf16", ["train_kw"]),
    ("*", "channels_last", SMALL, False, ["layout"]),
    ("*", "compile", SMALL, "on", ["compile"]),
    # --- recipes' extra keys
    ("focal", "focal_gamma", {**SMALL, "method": "focal"}, 2.0, ["loss"]),
    ("cb", "cb_beta", {**SMALL, "method": "cb"}, 0.99, ["loss"]),
    ("cb", "cb_loss", {**SMALL, "method": "cb"}, "focal", ["loss"]),
    ("cb", "focal_gamma", {**SMALL, "method": "cb", "extra": {"cb_loss": "focal"}}, 2.0, ["loss"]),
    ("ldam_drw", "ldam_max_m", {**SMALL, "method": "ldam_drw"}, 0.3, ["loss"]),
    ("ldam_drw", "ldam_s", {**SMALL, "method": "ldam_drw"}, 10.0, ["outputs", "loss"]),
    ("ldam_drw", "drw_epoch", {**SMALL, "method": "ldam_drw", "epochs": 4}, 2, ["loss"]),
    ("ldam_drw", "drw_beta", {**SMALL, "method": "ldam_drw", "epochs": 4}, 0.9, ["loss"]),
    ("logit_adjust", "la_tau", {**SMALL, "method": "logit_adjust"}, 0.5, ["loss"]),
    # (an untrained head's moving direction is 0: alpha shows once a step has moved it)
    ("tde", "tde_alpha", {**SMALL, "method": "tde"}, 0.5, ["predict"]),
    ("tde", "tde_tau", {**SMALL, "method": "tde"}, 8.0, ["outputs"]),
    ("tde", "tde_gamma", {**SMALL, "method": "tde"}, 0.5, ["outputs"]),
    ("tde", "tde_heads", {**SMALL, "method": "tde"}, 4, ["outputs"]),
    # the moving direction d <- mu d + mean(x) needs two steps to show mu
    ("tde", "tde_mu", {**SMALL, "method": "tde", "batch_size": 32}, 0.5, ["step"]),
    ("balpoe", "balpoe_experts", {**SMALL, "method": "balpoe", "model": "resnet32"}, 2, ["model"]),
    ("balpoe", "balpoe_tau_min", {**SMALL, "method": "balpoe", "model": "resnet32"}, 0.5, ["loss"]),
    ("balpoe", "balpoe_tau_max", {**SMALL, "method": "balpoe", "model": "resnet32"}, 3.0, ["loss"]),
    ("balpoe", "balpoe_taus", {**SMALL, "method": "balpoe", "model": "resnet32"}, [0.0, 1.0, 1.5], ["loss"]),
    ("balpoe", "balpoe_rotation", {**SMALL, "method": "balpoe", "model": "resnet32"}, 0.0, ["loader", "batches"]),
    ("enmos", "enmos_components", {**SMALL, "method": "enmos"}, 2, ["model"]),
    ("crt", "bn_mode", _s2("crt"), "frozen", ["step"]),
    ("lws", "bn_mode", _s2("lws"), "frozen", ["step"]),
    ("tau_norm", "tau_metric", _s2("tau_norm"), "top1", ["export"]),
    ("ncm", "ncm_variant", _s2("ncm"), "l2n", ["export", "predict"]),
    ("la_posthoc", "la_tau_from", _s2("la_posthoc"), "fixed", ["export"]),
    ("la_posthoc", "la_tau", _s2("la_posthoc", extra={"la_tau_from": "fixed"}), 0.5, ["export", "predict"]),
    ("mislas", "mislas_eps_head", _s2("mislas"), 0.1, ["loss"]),
    ("mislas", "mislas_eps_tail", _s2("mislas"), 0.1, ["loss"]),
    ("mislas", "mislas_las_shape", _s2("mislas"), "linear", ["loss"]),
    ("mislas", "mislas_las_power", _s2("mislas", extra={"mislas_las_shape": "exp"}), 2.0, ["loss"]),
    ("mislas", "mislas_lr_factor", _s2("mislas"), 1.0, ["groups"]),
    ("mislas", "mislas_shift_bn", _s2("mislas"), True, ["step"]),
    ("mislas", "mislas_stage1", {"method": "mislas", "model": "resnet8", "epochs": 2, "device": "cpu"},
     {"epochs": 3}, ["stage1"]),
]
# the sampler knobs every recipe accepts: with the class-balanced sampler, wherever epochs run
for _name, _recipe in METHODS.items():
    if not _recipe.trains:
        continue
    if _recipe.needs_stage1 or _name == "mislas":
        _base = _s2(_name, **CB)
    else:
        _base = {**SMALL, "method": _name, **CB, **({"model": "resnet32"} if _name == "balpoe" else {})}
    CASES.append((_name, "cb_epoch", _base, "n" if _name != "mislas" else "max", ["sampler"]))
    CASES.append((_name, "cb_per_class", _base, 2, ["sampler"]))

# (method, key) -> why the key changes nothing in that method's runs (and is not refused).
NO_EFFECT = {
    **{(m, k): "a post-hoc method (Recipe.trains False) runs no epochs, so no sampler draws a batch"
       for m in POSTHOC for k in ("cb_epoch", "cb_per_class")},
}
# training keys that a post-hoc recipe (Recipe.trains False: tau_norm, ncm, la_posthoc) accepts and
# does not use: it runs no epochs. They are not refused, because a notebook or grid passes the same
# keys to every method of a batch (01_train's epochs, seed, eval_every).
POSTHOC_IDLE = {"epochs": 3, "batch_size": 64, "accum_steps": 2, "lr": 0.05, "momentum": 0.5, "nesterov": True,
                "weight_decay": 1e-3, "schedule": "constant", "warmup_epochs": 1, "warmup_min_steps": 10,
                "mixup_alpha": 0.5, "seed": 3, "eval_every": 2, "extra": {"cb_per_class": 2, "cb_epoch": "n"}}
# keys about where and how fast, not what: each has its own check in this file
HOW = {"run_dir": "test_where_and_how_keys", "run_name": "test_where_and_how_keys",
       "progress": "test_where_and_how_keys", "eval_every": "test_where_and_how_keys",
       "device": "test_device_reaches_the_loop",
       "sync_bn": "tests/test_distributed.py::test_sync_bn_off_and_a_batch_that_does_not_split "
                  "(BatchNorm statistics over processes: only under torchrun)"}


def _resolve(value, paths):
    if isinstance(value, str) and value.startswith("@"):
        return str(paths[value[1:]])
    if isinstance(value, dict):
        return {k: _resolve(v, paths) for k, v in value.items()}
    return value


def _with(base: dict, method: str, key: str, value) -> dict:
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in base.items()}
    if key in FIELDS:
        out[key] = value
    else:
        out.setdefault("extra", {})[key] = value
    return out


@pytest.mark.parametrize("method, key, base, value, channels", CASES,
                         ids=[f"{m}-{k}" if m != "*" else k for m, k, *_ in CASES])
def test_key_reaches_the_run(method, key, base, value, channels, paths, tmp_path):
    base = _resolve(base, paths)
    changed = _resolve(_with(base, method, key, value), paths)
    a, b = observe(base, channels, tmp_path), observe(changed, channels, tmp_path)
    assert all(c in a for c in channels), f"channels {channels} not observed: {sorted(a)}"
    still = [c for c in channels if a.get(c) == b.get(c)]
    assert not still, f"{method} {key}: {base.get(key, base.get('extra', {}).get(key))!r} -> {value!r} left " \
                      f"{still} unchanged"


def test_the_probe_is_deterministic(paths, tmp_path):
    """The same config observed twice gives the same fingerprints (else a 'change' above
    could be noise)."""
    a = loop({**SMALL, "batch_size": 32}, tmp_path / "a")
    b = loop({**SMALL, "batch_size": 32}, tmp_path / "b")
    assert a == b
    assert cheap(from_dict(dict(SMALL))) == cheap(from_dict(dict(SMALL)))


def test_every_key_is_covered():
    """Every RunConfig key and every recipe's extra key has a case, a HOW check or a NO_EFFECT
    reason (a new key without one fails here)."""
    cased = {(m, k) for m, k, *_ in CASES}
    core = set(FIELDS) - {"extra"}
    missing = sorted(k for k in core if ("*", k) not in cased and k not in HOW)
    assert not missing, f"config keys with no case: {missing}"
    extras = {(m, k) for m, r in METHODS.items() for k in r.known_extra()}
    missing = sorted(e for e in extras if e not in cased and e not in NO_EFFECT)
    assert not missing, f"recipe extra keys with no case and no NO_EFFECT reason: {missing}"
    assert not set(NO_EFFECT) & cased, "a key is both tested for an effect and listed as having none"
    assert set(POSTHOC_IDLE) <= set(FIELDS)
    assert all(isinstance(why, str) and why for why in NO_EFFECT.values())
    # IGNORED / IGNORED_EXTRA name real keys
    assert {k for k, *_ in IGNORED} <= core
    assert {k for k, *_ in IGNORED_EXTRA} <= {k for _, k in extras}


@pytest.mark.parametrize("method", POSTHOC)
def test_no_effect_entries_have_none(method, paths, tmp_path):
    """The NO_EFFECT and POSTHOC_IDLE claims hold: a post-hoc run given other training keys and
    sampler knobs fits and predicts the same."""
    base = _resolve(_s2(method, **CB), paths)
    a = observe(base, ["export"], tmp_path)
    b = observe({**base, **POSTHOC_IDLE}, ["export"], tmp_path)
    assert (a["export"], a["predict"]) == (b["export"], b["predict"])
    assert {k for (m, k) in NO_EFFECT if m == method} <= set(POSTHOC_IDLE["extra"])


@pytest.mark.parametrize("cfg, needle", [
    (_s2("la_posthoc", extra={"la_tau": 0.5}), "extra key 'la_tau' = 0.5 is ignored by this run"),
    ({**SMALL, "method": "ldam_drw", "epochs": 1, "extra": {"drw_beta": 0.99}},
     "extra key 'drw_beta' = 0.99 is ignored by this run"),
])
def test_keys_a_run_would_ignore_are_refused(cfg, needle, paths):
    """Found by the cases above: la_posthoc's la_tau (tau is chosen on val unless la_tau_from is
    fixed) and ldam_drw's drw_beta in a run that never reaches drw_epoch were accepted and did nothing."""
    with pytest.raises(ConfigError, match=re.escape(needle)):
        from_dict(_resolve(cfg, paths))


# ------------------------------------------------------------------------------ where and how fast


def test_where_and_how_keys(tmp_path, monkeypatch, capsys):
    """run_dir: where the files go; run_name: the folder under runs/ when run_dir is empty;
    eval_every: which metrics.csv rows carry test columns; progress: the start-up lines."""
    import pandas as pd

    import ltlab
    from ltlab.training import logs

    real = T.build_data
    monkeypatch.setattr(T, "build_data", lambda cfg, device: _shrink(real(cfg, device)))
    monkeypatch.chdir(tmp_path)
    logs.to_stderr()
    common = {**SMALL, "epochs": 3, "batch_size": 64}
    a = ltlab.fit({**common, "run_dir": str(tmp_path / "there"), "eval_every": 1, "progress": False})
    quiet = capsys.readouterr().err
    b = ltlab.fit({**common, "run_name": "named", "eval_every": 2, "progress": True})
    loud = capsys.readouterr().err
    assert a == tmp_path / "there" and (a / "summary.json").is_file()
    assert b.resolve() == (tmp_path / "runs" / "named").resolve() and (b / "summary.json").is_file()
    assert not (tmp_path / "runs" / "demo_ce_if100_s0").exists()
    ma, mb = pd.read_csv(a / "metrics.csv"), pd.read_csv(b / "metrics.csv")
    assert ma["test_top1"].notna().tolist() == [True, True, True]
    assert mb["test_top1"].notna().tolist() == [False, True, True]     # epoch 2, and always the last
    assert "effective batch" not in quiet and "effective batch" in loud


def test_device_reaches_the_loop(tmp_path):
    """device=cuda is resolved by the loop: without a CUDA device it is refused there."""
    if torch.cuda.is_available():
        rec = loop({**SMALL, "device": "cuda", "amp": "off"}, tmp_path / "cuda")
        assert rec["init"]
        return
    with pytest.raises(ConfigError, match="'device' = 'cuda': no CUDA device"):
        loop({**SMALL, "device": "cuda"}, tmp_path / "cuda")
