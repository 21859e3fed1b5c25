"""The loop's hooks into two-stage recipes and parameter groups (issue 26, item 3), through the
real training loop on a shrunk demo set.

Stage switches: cRT and LWS start from the stage-one backbone, frozen (out of the optimizer, its
weights unchanged), cRT with a freshly initialised classifier, LWS with stage one's classifier
frozen under a scale of 1; MiSLAS fine-tunes stage one's classifier (not re-initialised) under a
learnable scale; batch norm runs in train mode (statistics re-estimated, weights frozen) or eval
mode as each recipe's knob says. tau-norm and NCM train nothing and see stage one's features.
MiSLAS without stage1_run trains its own stage one first and reuses it once finished.
Parameter groups: every optimizer step runs at the schedule's lr times its group's lr_scale.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml
from conftest import small_demo
from torch import nn

import ltlab
import ltlab.training.loop as T
from ltlab.config import ConfigError
from ltlab.methods.resolve import from_dict
from ltlab.training import distributed as D
from ltlab.training import schedule

SHRINK = dict(train_every=20, test_cap=3, val_cap=5)
BASE = {"device": "cpu", "progress": False, "compile": "off", "eval_every": 1}


@pytest.fixture(scope="module")
def stage1(tmp_path_factory):
    """A finished 1-epoch CE stage one (ResNet-8) on the shrunk demo set, and its weights."""
    run_dir = tmp_path_factory.mktemp("s1") / "run"
    with pytest.MonkeyPatch.context() as mp:
        small_demo(mp, **SHRINK)
        ltlab.fit({**BASE, "dataset": "demo", "model": "resnet8", "epochs": 1, "run_dir": str(run_dir)})
    return run_dir, torch.load(run_dir / "checkpoint.pt", weights_only=True)["model"]


@pytest.fixture
def epochs(monkeypatch):
    """Run records of every training epoch: the state before and after it, which parameters the
    optimizer holds (with their group's lr_scale), each module's train/eval mode at its first
    forward, and every optimizer step's learning rates."""
    small_demo(monkeypatch, **SHRINK)
    records = []
    real = T.train_one_epoch

    def spy(model, steps, loss_fn, optimizer, recipe, **kw):
        net = D.unwrap(model)
        names = {id(p): n for n, p in net.named_parameters()}
        rec = {"epoch": kw["epoch"], "modes": {}, "lrs": [],
               "groups": [{"lr_scale": g.get("lr_scale", 1.0), "params": {names[id(p)] for p in g["params"]}}
                          for g in optimizer.param_groups],
               "before": {k: v.clone() for k, v in net.state_dict().items()}}
        def seen(mod, inp, n):
            rec["modes"].setdefault(n, mod.training)   # (a pre-hook returning a value would replace the input)

        hooks = [m.register_forward_pre_hook(lambda mod, inp, n=n: seen(mod, inp, n))
                 for n, m in net.named_modules() if isinstance(m, nn.BatchNorm2d) or n in ("backbone", "head")]
        step = optimizer.step

        def counted(*a, **k):
            rec["lrs"].append([g["lr"] for g in optimizer.param_groups])
            return step(*a, **k)
        optimizer.step = counted
        try:
            out = real(model, steps, loss_fn, optimizer, recipe, **kw)
        finally:
            del optimizer.step
            for h in hooks:
                h.remove()
        rec["after"] = {k: v.clone() for k, v in net.state_dict().items()}
        rec["steps"] = len(steps)
        records.append(rec)
        return out

    monkeypatch.setattr(T, "train_one_epoch", spy)
    return records


def _part(state, prefix):
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def _same(a: dict, b: dict, keys=None) -> bool:
    keys = a.keys() if keys is None else keys
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in keys)


def _bn_stats(state):
    return {k: v for k, v in state.items() if k.endswith(("running_mean", "running_var"))}


def _fit(method, stage1_dir, tmp_path, **kw):
    return ltlab.fit({**BASE, "method": method, "stage1_run": str(stage1_dir), "epochs": 2,
                      "run_dir": str(tmp_path / method), **kw})


# ------------------------------------------------------------------------------ cRT / LWS


@pytest.mark.parametrize("bn_mode", ["update", "frozen"])
def test_crt_new_classifier_on_a_frozen_backbone(bn_mode, stage1, epochs, tmp_path):
    s1_dir, s1 = stage1
    _fit("crt", s1_dir, tmp_path, extra={"bn_mode": bn_mode})
    first, last = epochs[0], epochs[-1]
    assert [r["epoch"] for r in epochs] == [1, 2]
    # the stage-one backbone, BN statistics included; a classifier of its own, not stage one's
    assert _same(_part(first["before"], "backbone."), _part(s1, "backbone."))
    assert first["before"]["head.fc.weight"].shape == s1["head.fc.weight"].shape
    assert not torch.equal(first["before"]["head.fc.weight"], s1["head.fc.weight"])
    assert "head.fc.bias" in first["before"]
    # only the classifier trains; the backbone's weights never move
    assert [g["params"] for g in first["groups"]] == [{"head.fc.weight", "head.fc.bias"}]
    backbone_weights = [k for k in _part(s1, "backbone.") if not k.endswith(("running_mean", "running_var",
                                                                            "num_batches_tracked"))]
    assert _same(_part(last["after"], "backbone."), _part(s1, "backbone."), backbone_weights)
    assert not torch.equal(last["after"]["head.fc.weight"], first["before"]["head.fc.weight"])
    # BN: statistics re-estimated on the class-balanced batches ('update', Decoupling's code) or kept
    bn = {n: t for n, t in first["modes"].items() if n.startswith("backbone.") and n != "backbone"}
    assert bn and set(bn.values()) == {bn_mode == "update"}
    moved = not _same(_bn_stats(_part(last["after"], "backbone.")), _bn_stats(_part(s1, "backbone.")))
    assert moved == (bn_mode == "update")
    assert first["modes"]["head"] is True


@pytest.mark.parametrize("bn_mode", ["update", "frozen"])
def test_lws_scales_the_frozen_stage_one_classifier(bn_mode, stage1, epochs, tmp_path):
    s1_dir, s1 = stage1
    run = _fit("lws", s1_dir, tmp_path, extra={"bn_mode": bn_mode})
    first, last = epochs[0], epochs[-1]
    assert _same(_part(first["before"], "head.inner."), _part(s1, "head."))       # stage one's classifier
    assert torch.equal(first["before"]["head.scale"], torch.ones(10))
    assert [g["params"] for g in first["groups"]] == [{"head.scale"}]
    assert _same(_part(last["after"], "head.inner."), _part(s1, "head."))        # ... frozen
    assert not torch.equal(last["after"]["head.scale"], torch.ones(10))
    bn = {n: t for n, t in first["modes"].items() if n.startswith("backbone.") and n != "backbone"}
    assert set(bn.values()) == {bn_mode == "update"}
    # the exported classifier is the scaled stage-one one
    with np.load(run / "predictions" / "test.npz") as z:
        np.testing.assert_allclose(z["classifier_weight"],
                                   z["lws_scale"][:, None] * s1["head.fc.weight"].numpy(), rtol=1e-6)


# ------------------------------------------------------------------------------ MiSLAS stage two


@pytest.mark.parametrize("shift_bn", [False, True])
def test_mislas_fine_tunes_stage_ones_classifier(shift_bn, stage1, epochs, tmp_path):
    s1_dir, s1 = stage1
    _fit("mislas", s1_dir, tmp_path, extra={"mislas_shift_bn": shift_bn})
    first, last = epochs[0], epochs[-1]
    assert _same(_part(first["before"], "backbone."), _part(s1, "backbone."))
    assert _same(_part(first["before"], "head.inner."), _part(s1, "head."))      # not re-initialised
    assert torch.equal(first["before"]["head.scale"], torch.ones(10))
    cfg = from_dict({"method": "mislas", "stage1_run": str(s1_dir), "extra": {"mislas_shift_bn": shift_bn}})
    factor = cfg.extra["mislas_lr_factor"]
    assert [(g["lr_scale"], g["params"]) for g in first["groups"]] == \
        [(factor, {"head.inner.fc.weight", "head.inner.fc.bias"}), (1.0, {"head.scale"})]
    assert not torch.equal(last["after"]["head.inner.fc.weight"], s1["head.fc.weight"])   # fine-tuned
    bn = {n: t for n, t in first["modes"].items() if n.startswith("backbone.") and n != "backbone"}
    assert set(bn.values()) == {shift_bn}          # shifted BN: statistics re-estimated, else eval mode
    after = _part(last["after"], "backbone.")
    assert _same(_bn_stats(after), _bn_stats(_part(s1, "backbone."))) == (not shift_bn)
    weights = [k for k in after if k not in _bn_stats(after) and not k.endswith("num_batches_tracked")]
    assert _same(after, _part(s1, "backbone."), weights)


def test_mislas_trains_its_own_stage_one_then_reuses_it(epochs, tmp_path):
    """Without stage1_run: stage one (ce, mixup 1.0) into <run_dir>_stage1, then stage two on it;
    run again, the finished stage one is reused; asked for a different one, refused."""
    run_dir = tmp_path / "m"
    cfg = {**BASE, "method": "mislas", "dataset": "demo", "model": "resnet8", "epochs": 2, "run_dir": str(run_dir)}
    ltlab.fit(cfg)
    s1_dir = tmp_path / "m_stage1"
    s1cfg = yaml.safe_load((s1_dir / "config.yaml").read_text())
    assert (s1cfg["method"], s1cfg["mixup_alpha"], s1cfg["epochs"]) == ("ce", 1.0, 2)
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["stage1_run"] == str(s1_dir)
    s1 = torch.load(s1_dir / "checkpoint.pt", weights_only=True)["model"]
    stage_two = [r for r in epochs if "head.scale" in r["before"]]
    assert [r["epoch"] for r in epochs] == [1, 2, 1] and len(stage_two) == 1
    assert _same(_part(stage_two[0]["before"], "backbone."), _part(s1, "backbone."))
    mtime = (s1_dir / "checkpoint.pt").stat().st_mtime_ns
    epochs.clear()
    ltlab.fit(cfg, restart=True)
    assert [r["epoch"] for r in epochs] == [1] and (s1_dir / "checkpoint.pt").stat().st_mtime_ns == mtime
    with pytest.raises(ConfigError, match="differs in lr"):
        ltlab.fit({**cfg, "extra": {"mislas_stage1": {"lr": 0.05}}}, restart=True)


# ------------------------------------------------------------------------------ post-hoc


@pytest.mark.parametrize("method", ["tau_norm", "ncm"])
def test_post_hoc_recipes_train_nothing_and_see_stage_ones_features(method, stage1, epochs, tmp_path):
    s1_dir, s1 = stage1
    run = _fit(method, s1_dir, tmp_path)
    assert epochs == [] and not (run / "checkpoint.pt").exists()
    for split in ("val", "test"):
        with np.load(run / "predictions" / f"{split}.npz") as a, np.load(s1_dir / "predictions" / f"{split}.npz") as b:
            np.testing.assert_array_equal(a["features"], b["features"])
    if method == "tau_norm":
        with np.load(run / "predictions" / "test.npz") as z:
            np.testing.assert_array_equal(z["classifier_weight"], s1["head.fc.weight"].numpy())


# ------------------------------------------------------------------------------ lr_scale


def test_every_step_runs_at_the_schedule_lr_times_lr_scale(stage1, epochs, tmp_path):
    """MiSLAS's groups (classifier at lr_factor x lr, scale at lr), through a per-step warm-up and a
    cosine decay: each optimizer step's group lrs are lr_at_step x lr_scale."""
    s1_dir, _ = stage1
    kw = {"epochs": 4, "batch_size": 16, "warmup_epochs": 1, "warmup_min_steps": 100,
          "extra": {"mislas_lr_factor": 0.3}}
    _fit("mislas", s1_dir, tmp_path, **kw)
    cfg = from_dict({"method": "mislas", "stage1_run": str(s1_dir), **kw})
    spe = epochs[0]["steps"]
    assert spe > 1 and schedule.warmup_steps(cfg, spe) > spe     # the ramp spans epochs
    seen = []
    for rec in epochs:
        assert [g["lr_scale"] for g in rec["groups"]] == [0.3, 1.0]
        assert len(rec["lrs"]) == spe
        for s, lrs in enumerate(rec["lrs"]):
            lr = schedule.lr_at_step(cfg, rec["epoch"], s, spe)
            assert lrs == pytest.approx([0.3 * lr, lr], rel=1e-12), (rec["epoch"], s)
            seen.append(lr)
    assert len(set(seen)) > spe        # the lr did change from step to step and epoch to epoch


def test_set_lr_scales_each_group():
    params = [nn.Parameter(torch.zeros(1)) for _ in range(3)]
    opt = torch.optim.SGD([{"params": [params[0]], "lr_scale": 0.5}, {"params": [params[1]]},
                           {"params": [params[2]], "lr_scale": 2.0}], lr=1.0)
    T.set_lr(opt, 0.1)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.05, 0.1, 0.2])


def test_the_stage_one_is_left_as_it_was(stage1):
    """(the module's stage one is shared by the runs above: none of them may write into it)"""
    s1_dir, s1 = stage1
    assert _same(torch.load(s1_dir / "checkpoint.pt", weights_only=True)["model"], s1)
