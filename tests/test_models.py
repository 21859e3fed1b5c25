import pytest
import torch

from ltlab.models import build_model, num_parameters, resnet32


def test_resnet32_parameter_count():
    # LDAM-DRW's ResNet-32 with option-A shortcuts: 464,154 parameters for 10 classes
    # (conv/bn 0.46 M + a 64x10 linear head); no shortcut carries parameters.
    model = build_model("resnet32", 10)
    n = num_parameters(model)
    assert n == 464154
    assert num_parameters(model.head) == 64 * 10 + 10
    assert not any("shortcut" in name for name, _ in model.named_parameters())


@pytest.mark.parametrize("name, blocks, count", [("resnet8", 1, 75290), ("resnet20", 3, 269722)])
def test_smaller_cifar_resnets(name, blocks, count):
    """ResNet-(6n+2) of He et al. 2016 (sec. 4.2): ResNet-20 has 0.27 M parameters there."""
    model = build_model(name, 10)
    assert num_parameters(model) == count
    assert [len(s) for s in (model.backbone.layer1, model.backbone.layer2, model.backbone.layer3)] == [blocks] * 3
    out = model.eval()(torch.randn(2, 3, 32, 32))
    assert out["logits"].shape == (2, 10) and out["features"].shape == (2, 64)


def test_resnet32_shapes_and_features():
    model = build_model("resnet32", 100).eval()
    out = model(torch.randn(4, 3, 32, 32))
    assert out["logits"].shape == (4, 100) and out["features"].shape == (4, 64)
    assert resnet32().out_dim == 64


def test_option_a_shortcut_zero_pads_channels():
    from ltlab.models.resnet_cifar import PadShortcut

    x = torch.randn(2, 16, 8, 8)
    y = PadShortcut(8)(x)
    assert y.shape == (2, 32, 4, 4)
    assert torch.equal(y[:, 8:24], x[:, :, ::2, ::2]) and y[:, :8].abs().sum() == 0 and y[:, 24:].abs().sum() == 0


def test_cosine_head_bounded():
    model = build_model("resnet32", 10, head="cosine", scale=30.0).eval()
    logits = model(torch.randn(3, 3, 32, 32))["logits"]
    assert logits.abs().max() <= 30.0 + 1e-4


@pytest.mark.parametrize("model", ["resnet32", "resnet20", "resnet8"])
def test_linear_classifier_init_follows_the_cifar_originals(model):
    """LDAM-DRW / MiSLAS resnet32 apply kaiming_normal_ to the Linear classifier too: std sqrt(2/64)."""
    import torch

    from ltlab.methods import METHODS
    from ltlab.methods.resolve import from_dict

    class D:
        num_classes = 100
    torch.manual_seed(0)
    w = METHODS["ce"].build_model(from_dict({"method": "ce", "model": model}), D).head.fc.weight
    assert abs(w.std().item() - (2 / 64) ** 0.5) < 0.01                   # torch's default: std 1/(8 sqrt 3) = 0.072
    assert w.abs().max().item() > 1 / 8                                   # outside torch's uniform(-1/8, 1/8)


def test_cosine_head_is_scale_times_cosine():
    """logits = s cos(f, w_c) exactly: s sets the range (a head that ignores s, or drops the
    normalisation, fails), and the largest |logit| is reached by a feature along a weight."""
    import torch.nn.functional as F

    for s in (16.0, 30.0):
        model = build_model("resnet32", 10, head="cosine", scale=s).eval()
        with torch.no_grad():
            out = model(torch.randn(3, 3, 32, 32))
            cos = F.normalize(out["features"], dim=1) @ F.normalize(model.head.weight, dim=0)
            assert torch.allclose(out["logits"], s * cos, atol=1e-5)
            along = model.head(model.head.weight[:, 2:3].T * 7.0)["logits"]   # a feature along class 2's weight
        assert along[0, 2].item() == pytest.approx(s, rel=1e-5) and along.abs().max().item() <= s + 1e-4
