import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import small_demo

from ltlab.config import ConfigError
from ltlab.methods.losses import LogitAdjustedCE
from ltlab.methods.losses_multi import BalPoELoss, expert_taus
from ltlab.methods.resolve import from_dict
from ltlab.models import num_parameters
from ltlab.models.experts import ExpertResNetCifar

COUNTS = np.array([50, 20, 5, 1])


def test_tau_list_spacing():
    assert expert_taus(3) == [0.0, 1.0, 2.0]
    assert expert_taus(5, 0.0, 2.0) == pytest.approx([0.0, 0.5, 1.0, 1.5, 2.0])
    t = expert_taus(4, -1.0, 3.0)
    assert t == pytest.approx([-1.0, 1 / 3, 5 / 3, 3.0]) and np.mean(t) == pytest.approx(1.0)
    assert expert_taus(1) == [1.0]                  # documented choice: the midpoint


def test_one_expert_tau_one_is_balanced_softmax():
    torch.manual_seed(0)
    z, y = torch.randn(8, 4), torch.randint(0, 4, (8,))
    ours = BalPoELoss(COUNTS, [1.0])({"expert_logits": z[None]}, y)
    assert torch.allclose(ours, LogitAdjustedCE(COUNTS, tau=1.0)({"logits": z}, y))


def test_loss_is_mean_over_experts_of_logit_adjusted_ce():
    torch.manual_seed(1)
    z, y = torch.randn(3, 8, 4), torch.randint(0, 4, (8,))
    log_pi = torch.log(torch.tensor(COUNTS / COUNTS.sum(), dtype=torch.float32))
    hand = sum(F.cross_entropy(z[k] + tau * log_pi, y) for k, tau in enumerate([0.0, 1.0, 2.0])) / 3
    assert torch.allclose(BalPoELoss(COUNTS, [0, 1, 2])({"expert_logits": z}, y), hand, atol=1e-6)
    with pytest.raises(ValueError, match="experts"):
        BalPoELoss(COUNTS, [0, 1])({"expert_logits": z}, y)


def test_expert_model_layout_and_averaged_logits():
    torch.manual_seed(0)
    model = ExpertResNetCifar(10, experts=3).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 32, 32))
    assert out["expert_logits"].shape == (3, 2, 10) and out["features"].shape == (2, 192)
    assert torch.allclose(out["logits"], out["expert_logits"].mean(0))
    assert out["expert_logits"].abs().max() <= 30 + 1e-4                    # cosine classifier, s = 30
    assert not torch.equal(out["expert_logits"][0], out["expert_logits"][1])
    # one expert is LDAM's ResNet-32 with a bias-free cosine head: 464,154 - 10 biases
    assert num_parameters(ExpertResNetCifar(10, experts=1)) == 464144
    shared = num_parameters(model.conv1) + num_parameters(model.bn1) + num_parameters(model.layer1)
    assert num_parameters(model) == shared + 3 * num_parameters(model.experts[0])


def test_recipe_defaults_and_checks():
    c10 = from_dict({"method": "balpoe", "dataset": "cifar10_lt"})
    c100 = from_dict({"method": "balpoe", "dataset": "cifar100_lt"})
    assert c10.mixup_alpha == 0.8 and c100.mixup_alpha == 0.4 and from_dict({"method": "balpoe"}).mixup_alpha == 0.8
    assert c10.nesterov and c10.weight_decay == 5e-4 and c10.lr_gamma == 0.1 and c10.milestones == [160, 180]
    assert (c10.lr, c10.batch_size, c10.warmup_epochs, c10.epochs) == (0.1, 128, 5, 200)
    from ltlab.methods import METHODS

    r = METHODS["balpoe"]
    assert r.taus(c10) == [0.0, 1.0, 2.0]
    assert r.taus(from_dict({"method": "balpoe", "extra": {"balpoe_experts": 5, "balpoe_tau_min": -1,
                                                             "balpoe_tau_max": 3}})) == [-1.0, 0.0, 1.0, 2.0, 3.0]
    assert r.taus(from_dict({"method": "balpoe", "extra": {"balpoe_taus": [0, 1.25, 2.5]}})) == [0.0, 1.25, 2.5]
    with pytest.raises(ConfigError, match="balpoe_taus"):
        from_dict({"method": "balpoe", "extra": {"balpoe_taus": [0, 1], "balpoe_experts": 3}})
    # the torchvision ResNets have multi-expert versions too (ltlab.models.experts_resnet)
    assert from_dict({"method": "balpoe", "model": "resnet50"}).model == "resnet50"


def test_known_test_prior_correction():
    """BalPoE's known-prior rule through its own path: a balpoe run's source prior is
    pi^(1 - mean tau) (from the exported balpoe_taus), and the correction adds log q minus that:
    z + log q - (1 - mean tau) log pi, up to a per-row constant, derived here by hand."""
    from ltlab.evaluation.posthoc import prior_correct
    from ltlab.evaluation.shift import model_prior_counts
    from ltlab.methods import METHODS

    z = np.random.default_rng(0).normal(size=(5, 4))
    q = np.array([0.1, 0.2, 0.3, 0.4])
    log_pi = np.log(COUNTS / COUNTS.sum())
    for taus, mean_tau in (([0.0, 1.0, 2.0], 1.0), ([0.0, 1.0, 3.0], 4 / 3), ([0.5], 0.5)):
        cfg = from_dict({"method": "balpoe", "extra": {"balpoe_taus": taus}})
        assert METHODS["balpoe"].taus(cfg) == taus
        src = model_prior_counts(cfg.to_dict(), COUNTS, {"balpoe_taus": np.array(taus)})
        out = prior_correct(z, src, q)
        diff = out - (z + np.log(q) - (1 - mean_tau) * log_pi)
        assert np.allclose(diff, diff[:, :1]), taus
        if mean_tau != 1.0:   # the ensemble's prior is not the uniform one: log q alone is wrong
            plain = out - (z + np.log(q))
            assert not np.allclose(plain, plain[:, :1])


def test_end_to_end_saved_logits_are_the_expert_mean(tmp_path, monkeypatch):
    import ltlab.training.loop as T
    from ltlab.methods import METHODS
    from ltlab.models.checkpoints import load_checkpoint
    from ltlab.training.loop import fit

    small_demo(monkeypatch, train_cap=8, test_cap=3, val_cap=2)
    cfg = {"method": "balpoe", "dataset": "demo", "device": "cpu", "epochs": 1, "run_dir": str(tmp_path / "b"),
           "progress": False, "extra": {"balpoe_experts": 2}}
    run = fit(cfg)
    assert (run / "summary.json").is_file()
    pred = np.load(run / "predictions" / "test.npz")
    assert np.array_equal(pred["balpoe_taus"], [0.0, 2.0]) and pred["features"].shape[1] == 128
    c = from_dict(cfg)
    data = T.build_data(c, "cpu")
    model = METHODS["balpoe"].build_model(c, data)
    model.load_state_dict(load_checkpoint(run / "checkpoint.pt")["model"])
    with torch.no_grad():
        out = model.eval()(next(iter(data.eval_loader("test")))[0])
    assert np.allclose(out["expert_logits"].mean(0).numpy(), pred["logits"][: out["logits"].shape[0]], atol=1e-4)
