"""Decoupling: tau-norm and NCM (pure numpy) by hand, the stage-two heads, and stage-two demo
runs on top of the shared 2-epoch CE demo run (conftest.demo_run, which has the demo val split)."""
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml
from conftest import demo_config, small_demo

import ltlab
from ltlab.config import ConfigError, RunConfig
from ltlab.evaluation.posthoc_classifier import (
    TAU_GRID,
    choose_tau,
    ncm_centroids,
    ncm_logits,
    ncm_transform,
    tau_norm_logits,
    tau_norm_weights,
)
from ltlab.methods import METHODS
from ltlab.methods import decoupling as D
from ltlab.methods.resolve import from_dict
from ltlab.models import build_model
from ltlab.models.checkpoints import load_checkpoint


# ------------------------------------------------------------------------------ tau-norm
def test_tau_norm_weights_hand_case():
    W = np.array([[3.0, 4.0], [0.0, 2.0]])                  # row norms 5 and 2
    assert tau_norm_weights(W, 0.0) == pytest.approx(W)
    assert tau_norm_weights(W, 1.0) == pytest.approx(np.array([[0.6, 0.8], [0.0, 1.0]]))
    assert tau_norm_weights(W, 0.5) == pytest.approx(np.array([[3 / 5 ** 0.5, 4 / 5 ** 0.5], [0.0, 2 / 2 ** 0.5]]))
    assert tau_norm_weights(np.zeros((2, 3)), 1.0) == pytest.approx(np.zeros((2, 3)))


def test_tau_zero_is_the_plain_classifier_without_bias():
    rng = np.random.default_rng(0)
    W, b, x = rng.normal(size=(5, 8)), rng.normal(size=5), rng.normal(size=(20, 8))
    linear = torch.nn.Linear(8, 5)
    with torch.no_grad():
        linear.weight.copy_(torch.tensor(W))
        linear.bias.copy_(torch.tensor(b))
        plain = linear(torch.tensor(x, dtype=torch.float32)).numpy()
    # tau 0: exactly x W^T, i.e. the stage-one logits minus the bias
    assert tau_norm_logits(x, W, 0.0) == pytest.approx(plain - b, abs=1e-5)
    assert TAU_GRID.tolist() == [round(0.1 * i, 1) for i in range(21)]


def test_choose_tau_hand_case():
    # class 0 has a 3x longer weight: at tau 0 a point nearer to class 1 (x = (1, 1.5)) goes to class 0;
    # from tau 1 (unit rows) it goes to class 1, where it belongs
    W = np.array([[3.0, 0.0], [0.0, 1.0]])
    feats = np.array([[1.0, 1.5], [2.0, 0.1], [0.2, 1.0]])
    labels = np.array([1, 0, 1])
    tau, taus, scores = choose_tau(feats, labels, W)
    assert taus.tolist() == TAU_GRID.tolist() and len(scores) == 21
    assert scores[0] == pytest.approx(0.75) and scores[-1] == pytest.approx(1.0)
    # for x = (1, 1.5): logit_0 = 3^(1-tau), logit_1 = 1.5, tied at tau = 1 - log 1.5 / log 3 = 0.631;
    # every tau from 0.7 up scores 1.0 and the tie goes to the smallest
    assert tau == 0.7 and scores[7] == 1.0 and scores[6] == pytest.approx(0.75)
    with pytest.raises(ValueError, match="metric"):
        choose_tau(feats, labels, W, metric="test accuracy")


def test_tau_norm_head_matches_numpy():
    rng = np.random.default_rng(1)
    W, x = rng.normal(size=(4, 6)), rng.normal(size=(10, 6)).astype(np.float32)
    head = D.TauNormHead(W, 0.7)
    assert head(torch.from_numpy(x))["logits"].numpy() == pytest.approx(tau_norm_logits(x, W, 0.7), abs=1e-4)


# ------------------------------------------------------------------------------ NCM
def _clusters(n=30, seed=0, d=5, c=4):
    # the same centres for every seed (train and test); off-origin, so centring matters for cl2n
    centres = np.random.default_rng(99).normal(size=(c, d)) * 10 + 20
    y = np.repeat(np.arange(c), n)
    return centres[y] + np.random.default_rng(seed).normal(size=(len(y), d)), y


@pytest.mark.parametrize("variant", ["un", "l2n", "cl2n"])
def test_ncm_separable_clusters_are_perfect(variant):
    xtr, ytr = _clusters(seed=0)
    xte, yte = _clusters(seed=1)
    centroids, mean = ncm_centroids(xtr, ytr, 4, variant)
    assert (ncm_logits(xte, centroids, mean, variant).argmax(1) == yte).all()


def test_ncm_cl2n_hand_case():
    x = np.array([[1.0, 0.0], [3.0, 0.0], [2.0, 2.0], [2.0, 4.0]])
    y = np.array([0, 0, 1, 1])
    centroids, mean = ncm_centroids(x, y, 2, "cl2n")
    assert mean == pytest.approx([2.0, 1.5])
    # centred: (-1,-1.5), (1,-1.5), (0,.5), (0,2.5); normalised then averaged, not re-normalised
    a = 1 / np.sqrt(1 + 1.5 ** 2)
    assert centroids == pytest.approx(np.array([[0.0, -1.5 * a], [0.0, 1.0]]))
    logits = ncm_logits(np.array([[2.0, 3.0]]), centroids, mean, "cl2n")   # phi(x) = (0, 1)
    assert logits == pytest.approx(np.array([[-(1 + 1.5 * a) ** 2, 0.0]]))
    with pytest.raises(ValueError, match="no training feature"):
        ncm_centroids(x, y, 3)
    with pytest.raises(ValueError, match="variant"):
        ncm_transform(x, mean, "cosine")


def test_ncm_head_matches_numpy():
    xtr, ytr = _clusters()
    centroids, mean = ncm_centroids(xtr, ytr, 4, "cl2n")
    head = D.NCMHead(centroids, mean, "cl2n")
    x = _clusters(seed=2)[0]
    got = head(torch.tensor(x, dtype=torch.float32))["logits"].numpy()
    assert got == pytest.approx(ncm_logits(x, centroids, mean, "cl2n"), abs=1e-4)


# ------------------------------------------------------------------------------ LWS / BN
def test_lws_head_scales_the_frozen_classifier():
    inner = torch.nn.Linear(6, 3)
    head = D.LWSHead(_Lin(inner), 3)
    x = torch.randn(5, 6)
    assert torch.allclose(head(x)["logits"], inner(x))               # f = 1: the stage-one classifier
    with torch.no_grad():
        head.scale.copy_(torch.tensor([2.0, 0.5, -1.0]))
    expect = torch.tensor([2.0, 0.5, -1.0]) * (x @ inner.weight.T + inner.bias)
    assert torch.allclose(head(x)["logits"], expect, atol=1e-6)
    assert [n for n, p in head.named_parameters() if p.requires_grad] == ["scale"]


class _Lin(torch.nn.Module):
    def __init__(self, fc):
        super().__init__()
        self.fc = fc

    def forward(self, f):
        return {"logits": self.fc(f)}


@pytest.mark.parametrize("bn_mode, backbone_training", [("update", True), ("frozen", False)])
def test_bn_mode_sets_backbone_mode(bn_mode, backbone_training):
    model = build_model("resnet32", 10)
    recipe = METHODS["crt"]
    recipe.setup(model, SimpleNamespace(extra={"bn_mode": bn_mode}), None)
    model.eval()
    recipe.train_mode(model)
    assert model.head.training and model.backbone.training is backbone_training


# ------------------------------------------------------------------------------ config
def _fake_stage1(tmp_path, **cfg):
    run = tmp_path / "s1"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump(RunConfig(**cfg).to_dict()))
    (run / "summary.json").write_text("{}")
    (run / "checkpoint.pt").write_bytes(b"")
    return run


def test_tau_norm_refuses_a_stage1_without_val(tmp_path):
    run = _fake_stage1(tmp_path, dataset="cifar10_lt", val_per_class=0)
    with pytest.raises(ConfigError, match="val_per_class"):
        from_dict({"method": "tau_norm", "stage1_run": str(run)})


def test_tau_norm_refuses_a_cosine_stage1(tmp_path):
    run = _fake_stage1(tmp_path, method="ldam_drw")
    with pytest.raises(ConfigError, match="cosine head"):
        from_dict({"method": "tau_norm", "stage1_run": str(run)})


def test_stage2_defaults(tmp_path):
    run = _fake_stage1(tmp_path, dataset="cifar10_lt", val_per_class=20, imb_factor=50.0)
    cfg = from_dict({"method": "crt", "stage1_run": str(run)})
    assert (cfg.dataset, cfg.imb_factor, cfg.val_per_class) == ("cifar10_lt", 50.0, 20)      # inherited
    assert (cfg.epochs, cfg.schedule, cfg.warmup_epochs, cfg.lr, cfg.batch_size, cfg.sampler) == \
        (10, "cosine", 0, 0.1, 128, "class_balanced")
    assert METHODS["crt"].opt(cfg, "bn_mode") == "update" and METHODS["lws"].opt(cfg, "bn_mode") == "update"
    assert METHODS["tau_norm"].trains is False and METHODS["ncm"].trains is False
    with pytest.raises(ConfigError, match="'bn_mode' = 'eval'"):
        from_dict({"method": "lws", "stage1_run": str(run), "extra": {"bn_mode": "eval"}})
    with pytest.raises(ConfigError, match="'ncm_variant' = 'cos'"):
        from_dict({"method": "ncm", "stage1_run": str(run), "extra": {"ncm_variant": "cos"}})
    with pytest.raises(ConfigError, match="stage-two method"):
        from_dict({"method": "crt"})


# ------------------------------------------------------------------------------ demo runs
def _stage2(tmp_path, stage1, method, **kw):
    kw.setdefault("epochs", 1)
    run_dir = ltlab.fit(demo_config(tmp_path / method, method=method, stage1_run=str(stage1), **kw))
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["method"] == method
    return ltlab.load_run(run_dir)


def _bn_buffers(state):
    return {k: v for k, v in state.items() if k.startswith("backbone.") and "running" in k}


def test_crt_demo_run(tmp_path, demo_run, monkeypatch):
    small_demo(monkeypatch, train_every=4, test_cap=20)
    run = _stage2(tmp_path, demo_run, "crt", extra={"cb_epoch": "n"})
    s1 = load_checkpoint(demo_run / "checkpoint.pt")["model"]
    s2 = load_checkpoint(run.path / "checkpoint.pt")["model"]
    weights = [k for k in s1 if k.startswith("backbone.") and "running" not in k and "num_batches" not in k]
    assert all(torch.equal(s1[k], s2[k]) for k in weights)                     # backbone frozen
    assert not torch.equal(s1["head.fc.weight"], s2["head.fc.weight"])          # classifier retrained
    bn1, bn2 = _bn_buffers(s1), _bn_buffers(s2)
    assert any(not torch.equal(bn1[k], bn2[k]) for k in bn1)                    # bn_mode update: re-estimated
    test = run.predictions("test")
    assert test["classifier_bias"].shape == (10,)


def test_lws_demo_run(tmp_path, demo_run, monkeypatch):
    small_demo(monkeypatch, train_every=4, test_cap=20)
    run = _stage2(tmp_path, demo_run, "lws", extra={"cb_epoch": "n", "bn_mode": "frozen"})
    s1 = load_checkpoint(demo_run / "checkpoint.pt")["model"]
    s2 = load_checkpoint(run.path / "checkpoint.pt")["model"]
    assert all(torch.equal(v, s2[k]) for k, v in s1.items() if k.startswith("backbone."))   # stats too
    assert torch.equal(s1["head.fc.weight"], s2["head.inner.fc.weight"])
    test = run.predictions("test")
    f = test["lws_scale"]
    assert not np.allclose(f, 1.0)
    W1 = s1["head.fc.weight"].numpy()
    assert test["classifier_weight"] == pytest.approx(f[:, None] * W1, abs=1e-6)
    logits = test["features"] @ test["classifier_weight"].T + test["classifier_bias"]
    assert test["logits"] == pytest.approx(logits, abs=1e-3)


def test_tau_norm_demo_run_chooses_tau_on_val_only(tmp_path, demo_run, monkeypatch):
    seen = []

    def spy(val_features, val_labels, W, taus, metric):
        seen.append(len(val_labels))
        return choose_tau(val_features, val_labels, W, taus, metric)

    monkeypatch.setattr(D, "choose_tau", spy)
    run = _stage2(tmp_path, demo_run, "tau_norm")
    assert seen == [200]                                   # the demo val split, never the 1,000 test images
    assert not (run.path / "metrics.csv").exists()         # post-hoc: no epoch ran
    s1_val = ltlab.load_run(demo_run).predictions("val")
    test = run.predictions("test")
    # the exported curve is reproducible from stage one's saved val features alone
    tau, grid, scores = choose_tau(s1_val["features"], s1_val["labels"], test["classifier_weight"])
    assert float(test["tau"]) == tau and test["tau_grid"] == pytest.approx(grid)
    assert test["tau_val_acc"] == pytest.approx(scores)
    assert test["logits"] == pytest.approx(tau_norm_logits(test["features"], test["classifier_weight"], tau),
                                           abs=1e-3)


def test_ncm_demo_run(tmp_path, demo_run, monkeypatch):
    import ltlab.methods.decoupling as D

    seen = []

    def spy(features, labels, C, variant):
        seen.append((np.asarray(features), np.asarray(labels)))
        return ncm_centroids(features, labels, C, variant)

    monkeypatch.setattr(D, "ncm_centroids", spy)
    run = _stage2(tmp_path, demo_run, "ncm")
    test = run.predictions("test")
    # the centroids are the means of the 1,236 training images' features, never the test split's
    (feats, labels), = seen
    assert np.bincount(labels, minlength=10).tolist() == test["train_counts"].tolist()
    assert feats.shape == (1236, 64)
    want, mean = ncm_centroids(feats, labels, 10, "cl2n")
    assert test["ncm_centroids"] == pytest.approx(want, abs=1e-5)
    assert test["ncm_mean"] == pytest.approx(feats.mean(0), abs=1e-5)
    assert not np.allclose(test["ncm_mean"], test["features"].mean(0), atol=1e-3)
    assert test["ncm_centroids"].shape == (10, 64)
    expect = ncm_logits(test["features"], test["ncm_centroids"], test["ncm_mean"], "cl2n")
    assert test["logits"] == pytest.approx(expect, abs=1e-3)
