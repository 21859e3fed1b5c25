import math

import numpy as np
import pytest
import torch
from conftest import small_demo

from ltlab.config import ConfigError
from ltlab.evaluation.posthoc_tde import choose_alpha, from_predictions, tde_logits
from ltlab.methods.resolve import from_dict
from ltlab.models.causal_norm import CausalNormHead


def _hand_tde(x, w, d, alpha, tau, gamma, heads):
    """The formula of methods.md sec. 2 written out with loops, one sample and class at a time."""
    n, c, h = x.shape[0], w.shape[0], x.shape[1] // heads
    out = np.zeros((n, c))
    for i in range(n):
        for j in range(c):
            s = 0.0
            for k in range(heads):
                xk, wk, dk = x[i, k * h:(k + 1) * h], w[j, k * h:(k + 1) * h], d[k * h:(k + 1) * h]
                cos = xk @ dk / (np.linalg.norm(xk) * np.linalg.norm(dk))
                s += (xk / np.linalg.norm(xk) - alpha * cos * dk / np.linalg.norm(dk)) @ (wk / (np.linalg.norm(wk) + gamma))
            out[i, j] = tau / heads * s
    return out


def test_deconfounded_logits_hand_case():
    head = CausalNormHead(4, 2, tau=16, gamma=1 / 32, heads=2)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[3.0, 4.0, 1.0, 0.0], [0.0, 1.0, 0.0, 2.0]]))
    x = torch.tensor([[1.0, 0.0, 0.0, 2.0]])
    z = head.eval()(x)["logits"][0]
    # chunks: x = (1, 0 | 0, 1) after normalising; w_0 = (3,4)/5.03125 | (1,0)/1.03125; w_1 = (0,1)/1.03125 | (0,2)/2.03125
    expect = [8 * (3 / 5.03125 + 0), 8 * (0 + 2 / 2.03125)]
    assert torch.allclose(z, torch.tensor(expect), atol=1e-5)


def test_alpha_zero_equals_deconfounded_logits():
    torch.manual_seed(0)
    head = CausalNormHead(8, 5, heads=2, alpha=0.0)
    head.direction.copy_(torch.randn(8))
    x = torch.randn(6, 8)
    with torch.no_grad():
        out = head.eval()(x)
    assert torch.equal(out["tde_logits"], out["logits"])
    np_z = tde_logits(x.numpy(), head.weight.detach().numpy(), head.direction.numpy(), 0.0)
    assert np.allclose(np_z, out["logits"].numpy(), atol=1e-5)


@pytest.mark.parametrize("alpha, heads", [(1.5, 2), (1.0, 1), (3.0, 4)])
def test_tde_matches_the_formula(alpha, heads):
    rng = np.random.default_rng(1)
    x, w, d = rng.normal(size=(4, 8)), rng.normal(size=(3, 8)), rng.normal(size=8)
    expect = _hand_tde(x, w, d, alpha, 16.0, 1 / 32, heads)
    assert np.allclose(tde_logits(x, w, d, alpha, heads=heads), expect, atol=1e-10)
    head = CausalNormHead(8, 3, heads=heads, alpha=alpha).eval()
    with torch.no_grad():
        head.weight.copy_(torch.as_tensor(w, dtype=torch.float32))
        head.direction.copy_(torch.as_tensor(d, dtype=torch.float32))
    with torch.no_grad():
        out = head(torch.as_tensor(x, dtype=torch.float32))
    assert np.allclose(out["tde_logits"].numpy(), expect, atol=1e-4)
    assert torch.allclose(out["tde_logits"], out["logits"] - alpha * out["tde_effect"], atol=1e-5)


def test_direction_moving_sum_without_one_minus_mu():
    head = CausalNormHead(4, 3, mu=0.9)
    assert "direction" in head.state_dict() and torch.equal(head.direction, torch.zeros(4))
    f1, f2 = torch.randn(5, 4), torch.randn(7, 4)
    head.train()
    head(f1)
    assert torch.allclose(head.direction, f1.mean(0))
    head(f2.requires_grad_())
    assert torch.allclose(head.direction, 0.9 * f1.mean(0) + f2.mean(0), atol=1e-6)
    assert not head.direction.requires_grad
    before = head.direction.clone()
    head.eval()(torch.randn(3, 4))
    assert torch.equal(head.direction, before)          # evaluation never moves it


def test_zero_direction_and_zero_chunk_stay_finite():
    head = CausalNormHead(4, 2).eval()                  # direction still all zeros
    out = head(torch.tensor([[0.0, 0.0, 1.0, 2.0]]))
    assert torch.isfinite(out["tde_logits"]).all() and torch.equal(out["tde_logits"], out["logits"])


def test_fp32_under_bf16_autocast_and_compile():
    torch.manual_seed(0)
    head = CausalNormHead(8, 4)
    x = torch.randn(5, 8).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = head.eval()(x)
    assert out["logits"].dtype == torch.float32
    assert torch.allclose(out["logits"], head(x.float())["logits"], atol=1e-6)
    # the buffer update must survive graph capture (torch.compile runs the training forward)
    compiled = torch.compile(head.train(), backend="aot_eager")
    f = torch.randn(5, 8)
    head.direction.zero_()
    compiled(f)
    compiled(f)
    assert torch.allclose(head.direction, 1.9 * f.mean(0), atol=1e-6)


def test_recipe_defaults_and_checks():
    c10 = from_dict({"method": "tde", "dataset": "cifar10_lt"})
    c100 = from_dict({"method": "tde", "dataset": "cifar100_lt"})
    assert c10.extra["tde_alpha"] == 1.0 and c100.extra["tde_alpha"] == 1.5
    assert from_dict({"method": "tde"}).extra["tde_alpha"] == 1.0          # demo = CIFAR-10-LT
    assert (c10.batch_size, c10.lr, c10.weight_decay, c10.epochs, c10.warmup_epochs) == (256, 0.2, 5e-4, 200, 5)
    assert c10.milestones == [120, 160] and c10.lr_gamma == 0.01 and c10.sampler == "instance"
    assert from_dict({"method": "tde", "extra": {"tde_alpha": 2}}).extra["tde_alpha"] == 2
    with pytest.raises(ConfigError, match="tde_heads"):
        from_dict({"method": "tde", "extra": {"tde_heads": 0}})


def test_end_to_end_posthoc_reproduces_saved_logits(tmp_path, monkeypatch):
    from ltlab.models.checkpoints import load_checkpoint
    from ltlab.training.loop import fit

    small_demo(monkeypatch, train_cap=8, test_cap=3, val_cap=2)
    run = fit({"method": "tde", "dataset": "demo", "device": "cpu", "epochs": 1, "run_dir": str(tmp_path / "tde"),
               "progress": False, "extra": {"tde_alpha": 1.5}})
    assert (run / "summary.json").is_file()
    pred = dict(np.load(run / "predictions" / "test.npz"))
    assert float(pred["tde_alpha"]) == 1.5 and int(pred["tde_heads"]) == 2
    assert np.allclose(from_predictions(pred), pred["logits"], atol=1e-4)
    # the direction was updated in training and went into the checkpoint
    state = load_checkpoint(run / "checkpoint.pt")["model"]
    assert np.array_equal(state["head.direction"].numpy(), pred["tde_direction"])
    assert np.abs(pred["tde_direction"]).sum() > 0
    # alpha changes post hoc; alpha 0 is the de-confounded model
    z0 = from_predictions(pred, 0.0)
    assert not np.allclose(z0, pred["logits"])
    alpha, scores = choose_alpha(dict(np.load(run / "predictions" / "val.npz")), alphas=[0.0, 1.0, 2.0])
    assert alpha in (0.0, 1.0, 2.0) and set(scores) == {0.0, 1.0, 2.0} and all(0 <= s <= 1 for s in scores.values())
    assert math.isfinite(pred["logits"].sum())


def _handmade_val():
    """Two classes, one head, the direction d along class 0's weight. A class-1 image
    x = (2, 1, 0, 0) is classified right iff 2 (1 - alpha) < 1 (alpha > 0.5); a class-0 image
    x = (1, 0, 0.5, 0) iff its class-0 logit cos(x, d) (1 - alpha) > 0 (alpha < 1). So only
    alphas in (0.5, 1) reach balanced accuracy 1; the others score 0.5."""
    return {"labels": np.array([0, 0, 1, 1]),
            "features": np.array([[1, 0, 0.5, 0], [1, 0, 0.5, 0], [2, 1, 0, 0], [2, 1, 0, 0]], dtype=np.float32),
            "tde_weight": np.array([[1, 0, 0, 0], [0, 1, 0, 0]], dtype=np.float32),
            "tde_direction": np.array([1, 0, 0, 0], dtype=np.float32),
            "tde_tau": 16.0, "tde_gamma": 1 / 32, "tde_heads": 1, "tde_alpha": 0.0}


def test_choose_alpha_picks_the_alpha_the_data_favour():
    alpha, scores = choose_alpha(_handmade_val(), alphas=[0.0, 0.25, 0.75, 1.5])
    assert scores == {0.0: 0.5, 0.25: 0.5, 0.75: 1.0, 1.5: 0.5}
    assert alpha == 0.75


def test_choose_alpha_ties_go_to_the_smallest_alpha():
    for grid in ([0.6, 0.75, 0.9], [0.9, 0.75, 0.6]):   # all three reach 1.0, in either order
        alpha, scores = choose_alpha(_handmade_val(), alphas=grid)
        assert set(scores.values()) == {1.0} and alpha == 0.6
    alpha, _ = choose_alpha(_handmade_val())             # the default grid 0, 0.1, ..., 3
    assert alpha == 0.6
