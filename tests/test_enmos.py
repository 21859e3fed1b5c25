import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import small_demo

from ltlab.methods.losses import LogitAdjustedCE
from ltlab.methods.losses_multi import MixtureDebiasNLL
from ltlab.methods.resolve import from_dict
from ltlab.models.mixture import MixtureHead

COUNTS = np.array([60, 25, 10, 5])


def _np_logsumexp(a, axis):
    m = a.max(axis=axis, keepdims=True)
    return np.squeeze(m, axis) + np.log(np.exp(a - m).sum(axis=axis))


def test_gate_has_no_bias_and_heads_do():
    head = MixtureHead(8, 4, components=3)
    names = dict(head.named_parameters())
    assert head.gate.bias is None and "gate.bias" not in names
    assert head.fc.bias is not None and head.gate.weight.shape == (3, 8)


def test_outputs_are_the_mixture():
    torch.manual_seed(0)
    head = MixtureHead(8, 4, components=3)
    with torch.no_grad():
        out = head(torch.randn(5, 8))
    z, w = out["component_logits"], out["gate"]
    assert z.shape == (3, 5, 4) and w.shape == (5, 3) and torch.allclose(w.sum(1), torch.ones(5))
    mix = (w.t()[..., None] * F.softmax(z, -1)).sum(0)
    assert torch.allclose(out["logits"].exp(), mix, atol=1e-6)
    assert torch.allclose(torch.logsumexp(out["logits"], 1), torch.zeros(5), atol=1e-6)


def test_one_component_reduces_to_logit_adjusted_ce():
    torch.manual_seed(1)
    head = MixtureHead(8, 4, components=1)
    f, y = torch.randn(16, 8), torch.randint(0, 4, (16,))
    out = head(f)
    assert torch.equal(out["gate"], torch.ones(16, 1))
    assert torch.allclose(out["logits"], F.log_softmax(head.fc(f), 1), atol=1e-6)
    ours = MixtureDebiasNLL(COUNTS)(out, y)
    la = LogitAdjustedCE(COUNTS, tau=1.0)({"logits": out["component_logits"][0]}, y)
    assert torch.allclose(ours, la, atol=1e-5)


def test_debias_nll_hand_case_and_log_c_cancels():
    z = torch.tensor([[[1.0, 0.0, -1.0, 2.0]], [[0.5, 0.5, 0.0, 0.0]]])      # K = 2, N = 1, C = 4
    w = torch.tensor([[0.25, 0.75]])
    y = torch.tensor([2])
    pi = COUNTS / COUNTS.sum()
    p = sum(w[0, k].item() * np.exp(z[k, 0].numpy() + np.log(pi)) / np.exp(z[k, 0].numpy() + np.log(pi)).sum()
            for k in range(2))
    loss = MixtureDebiasNLL(COUNTS)({"component_logits": z, "gate": w}, y)
    assert loss.item() == pytest.approx(-np.log(p[2] + 1e-12), rel=1e-5)


def test_recipe_defaults():
    cfg = from_dict({"method": "enmos", "dataset": "cifar10_lt"})
    assert (cfg.batch_size, cfg.lr, cfg.weight_decay, cfg.epochs) == (128, 0.1, 2e-4, 200)
    assert cfg.milestones == [160, 180] and cfg.lr_gamma == 0.01 and cfg.sampler == "instance"


def test_end_to_end_prediction_without_prior(tmp_path, monkeypatch):
    from ltlab.training.loop import fit

    small_demo(monkeypatch, train_cap=8, test_cap=3, val_cap=2)
    run = fit({"method": "enmos", "dataset": "demo", "device": "cpu", "epochs": 1, "run_dir": str(tmp_path / "e"),
               "progress": False})
    assert (run / "summary.json").is_file()
    p = np.load(run / "predictions" / "test.npz")
    f = p["features"].astype(np.float64)
    z = np.einsum("nd,kcd->knc", f, p["mos_weight"]) + p["mos_bias"][:, None, :]     # (K, N, C)
    g = f @ p["mos_gate"].T
    log_w = g - _np_logsumexp(g, 1)[:, None]
    log_sm = z - _np_logsumexp(z, 2)[..., None]
    expect = _np_logsumexp(log_w.T[..., None] + log_sm, 0)                          # no log(C pi) term
    assert np.allclose(p["logits"], expect, atol=1e-4)


def _grads(net, backbone_norm, head_norm):
    """Fill every gradient so that the backbone's and the head's total norms are the given ones."""
    for part, norm in ((net.backbone, backbone_norm), (net.head, head_norm)):
        ps = list(part.parameters())
        n = sum(p.numel() for p in ps)
        for p in ps:
            p.grad = torch.full_like(p, norm / n ** 0.5)


def _norm(part):
    return torch.sqrt(sum((p.grad ** 2).sum() for p in part.parameters())).item()


def test_enmos_clips_backbone_and_head_separately_like_the_original():
    """EnMos_debias's batch_backward clips feat_model and classifier each to max-norm 5."""
    from ltlab.methods import METHODS
    from ltlab.models import LTNet, build_backbone

    backbone = build_backbone("resnet32")
    net = LTNet(backbone, MixtureHead(backbone.out_dim, 4, components=3))
    _grads(net, backbone_norm=100.0, head_norm=2.0)
    METHODS["enmos"].clip_gradients(net)
    assert _norm(net.backbone) == pytest.approx(5.0, rel=1e-4)
    assert _norm(net.head) == pytest.approx(2.0, rel=1e-4)    # a global clip would shrink it to ~0.1
    _grads(net, backbone_norm=3.0, head_norm=40.0)
    METHODS["enmos"].clip_gradients(torch.compile(net, backend="eager"))   # wrappers unwrapped
    assert _norm(net.backbone) == pytest.approx(3.0, rel=1e-4) and _norm(net.head) == pytest.approx(5.0, rel=1e-4)
    # the base convention: one norm over all parameters
    ce = METHODS["ce"]
    ce.clip_grad_norm = 5.0
    try:
        _grads(net, backbone_norm=30.0, head_norm=40.0)
        ce.clip_gradients(net)
    finally:
        ce.clip_grad_norm = None
    assert _norm(net.backbone) == pytest.approx(3.0, rel=1e-4) and _norm(net.head) == pytest.approx(4.0, rel=1e-4)
