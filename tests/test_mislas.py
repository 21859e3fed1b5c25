import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import small_demo

from ltlab.config import ConfigError
from ltlab.methods import METHODS
from ltlab.methods.losses_multi import LabelAwareSmoothing, las_epsilons
from ltlab.methods.mislas import ScaledClassifier, mislas_table, stage1_config
from ltlab.methods.resolve import from_dict


# ------------------------------------------------------------------ label-aware smoothing
def test_las_epsilon_head_tail_and_concave_midpoint():
    counts = [100, 55, 10]           # r = 1, 0.5, 0
    eps = las_epsilons(counts, eps_head=0.4, eps_tail=0.1, shape="concave")
    assert eps[0] == pytest.approx(0.4) and eps[2] == pytest.approx(0.1)
    assert eps[1] == pytest.approx(0.1 + 0.3 * math.sin(math.pi / 4))          # 0.3121
    assert las_epsilons(counts, 0.4, 0.1, "linear")[1] == pytest.approx(0.25)
    convex = las_epsilons(counts, 0.4, 0.1, "convex")
    assert convex[0] == pytest.approx(0.4) and convex[2] == pytest.approx(0.1)
    assert convex[1] == pytest.approx(0.4 - 0.3 * math.cos(math.pi / 4))        # below linear: convex
    assert las_epsilons(counts, 0.4, 0.1, "exp", power=2)[1] == pytest.approx(0.1 + 0.3 * 0.25)
    assert np.allclose(las_epsilons([7, 7], 0.3, 0.0), 0.3)                    # documented choice: r = 1


def test_las_with_zero_eps_is_ce_and_hand_case():
    torch.manual_seed(0)
    z, y = torch.randn(6, 3), torch.tensor([0, 1, 2, 2, 1, 0])
    assert torch.allclose(LabelAwareSmoothing([100, 55, 10], 0.0, 0.0)({"logits": z}, y), F.cross_entropy(z, y))
    loss = LabelAwareSmoothing([100, 55, 10], 0.4, 0.1)({"logits": z[:1]}, y[:1])     # class 0: eps = 0.4
    logp = F.log_softmax(z[0], 0)
    assert loss == pytest.approx(float(0.6 * -logp[0] + 0.4 * -logp.mean()), rel=1e-6)


def test_table_per_dataset_and_imbalance():
    assert mislas_table("demo", 100) == {"mislas_eps_head": 0.3, "mislas_eps_tail": 0.0, "mislas_lr_factor": 0.5,
                                         "mislas_shift_bn": False}
    assert mislas_table("cifar100_lt", 100) == {"mislas_eps_head": 0.4, "mislas_eps_tail": 0.1,
                                                "mislas_lr_factor": 0.2, "mislas_shift_bn": True}
    assert mislas_table("cifar10_lt", 50)["mislas_eps_head"] == 0.2
    assert mislas_table("cifar100_lt", 20)["mislas_eps_head"] == 0.2          # nearest in log IF: 10
    cfg = from_dict({"method": "mislas", "dataset": "cifar100_lt", "imb_factor": 10})
    assert cfg.extra["mislas_lr_factor"] == 0.1 and cfg.extra["mislas_shift_bn"] is True


def test_stage_two_defaults_and_stage_one_recipe(tmp_path):
    cfg = from_dict({"method": "mislas", "dataset": "cifar10_lt", "run_dir": str(tmp_path / "m")})  # not the demo's
    assert (cfg.epochs, cfg.schedule, cfg.warmup_epochs, cfg.lr, cfg.batch_size) == (10, "cosine", 0, 0.1, 128)
    assert cfg.sampler == "class_balanced" and cfg.mixup_alpha == 0 and cfg.extra["cb_epoch"] == "n"
    s1 = stage1_config(cfg)
    assert s1["method"] == "ce" and s1["mixup_alpha"] == 1.0 and s1["run_dir"] == str(tmp_path / "m_stage1")
    assert (s1["epochs"], s1["milestones"], s1["lr_gamma"], s1["weight_decay"]) == (200, [160, 180], 0.1, 2e-4)
    with pytest.raises(ConfigError, match="mixup"):
        from_dict({"method": "mislas", "mixup_alpha": 1.0})
    with pytest.raises(ConfigError, match="mislas_stage1"):
        from_dict({"method": "mislas", "extra": {"mislas_stage1": {"method": "ldam_drw"}}})


def test_scaled_classifier_starts_as_the_inner_head():
    from ltlab.models.heads import LinearHead

    inner = LinearHead(4, 3)
    head = ScaledClassifier(inner, 3)
    f = torch.randn(2, 4)
    assert torch.equal(head(f)["logits"], inner(f)["logits"])
    with torch.no_grad():
        head.scale.copy_(torch.tensor([1.0, 2.0, 0.5]))
    assert torch.allclose(head(f)["logits"], inner(f)["logits"] * torch.tensor([1.0, 2.0, 0.5]))


# ------------------------------------------------------------------ end to end
def _params(state, frozen=True):
    """Backbone weights (conv, BN affine) or BN running statistics of a state dict."""
    stats = ("running_mean", "running_var")
    return {k: v for k, v in state.items() if k.startswith("backbone.") and (k.endswith(stats) != frozen)
            and not k.endswith("num_batches_tracked")}


def test_end_to_end_both_stages_and_shifted_bn(tmp_path, monkeypatch):
    from ltlab.data import build_data
    from ltlab.models.checkpoints import load_checkpoint
    from ltlab.training.loop import fit

    small_demo(monkeypatch, train_cap=8, test_cap=3, val_cap=2)
    base = {"method": "mislas", "dataset": "demo", "device": "cpu", "epochs": 1, "progress": False}
    run = fit({**base, "run_dir": str(tmp_path / "m"),
               "extra": {"mislas_shift_bn": True, "mislas_stage1": {"epochs": 1}}})
    s1_dir = tmp_path / "m_stage1"
    for d in (s1_dir, run):
        assert (d / "summary.json").is_file() and (d / "predictions" / "test.npz").is_file()
    assert json.loads((s1_dir / "summary.json").read_text())["method"] == "ce"
    assert json.loads((run / "summary.json").read_text())["method"] == "mislas"
    s1 = load_checkpoint(s1_dir / "checkpoint.pt")
    assert s1["config"]["mixup_alpha"] == 1.0
    s1 = s1["model"]
    s2 = load_checkpoint(run / "checkpoint.pt")
    assert s2["config"]["stage1_run"] == str(s1_dir)
    s2 = s2["model"]
    # shift BN: conv and BN affine weights bitwise unchanged, running statistics re-estimated
    for k, v in _params(s1).items():
        assert torch.equal(v, s2[k]), k
    assert any(not torch.equal(v, s2[k]) for k, v in _params(s1, frozen=False).items())
    # the stage-one classifier was fine-tuned, not re-initialised, under a learned scale
    assert not torch.equal(s1["head.fc.weight"], s2["head.inner.fc.weight"])
    assert not torch.equal(s2["head.scale"], torch.ones(10))
    pred = np.load(run / "predictions" / "test.npz")
    assert "lws_scale" in pred and "classifier_weight" in pred

    # stage two alone from that stage one, shift BN off (the CIFAR-10 default): running stats kept too
    cfg = from_dict({**base, "stage1_run": str(s1_dir), "run_dir": str(tmp_path / "m2")})
    assert cfg.extra["mislas_shift_bn"] is False
    recipe = METHODS["mislas"]
    model = recipe.build_model(cfg, build_data(cfg, "cpu"))
    assert torch.equal(model.head.inner.fc.weight, s1["head.fc.weight"]) and torch.equal(model.head.scale, torch.ones(10))
    groups = recipe.parameters(model, cfg)
    assert [g["lr_scale"] for g in groups] == [0.5, 1.0] and groups[1]["params"] == [model.head.scale]
    assert not any(p.requires_grad for p in model.backbone.parameters())
    run2 = fit(cfg)
    s3 = load_checkpoint(run2 / "checkpoint.pt")["model"]
    for k, v in {**_params(s1), **_params(s1, frozen=False)}.items():
        assert torch.equal(v, s3[k]), k

    # a finished stage one is reused only if it matches, epochs included
    with pytest.raises(ConfigError, match="differs in epochs"):
        fit({**base, "run_dir": str(tmp_path / "m"), "extra": {"mislas_stage1": {"epochs": 2}}}, restart=True)
