"""Model factory: backbone (image -> feature) + head (feature -> dict of tensors)."""
from __future__ import annotations

from pathlib import Path

import torch.nn as nn

from ltlab.config import ConfigError
from ltlab.models.heads import HEADS, CosineHead, LinearHead
from ltlab.models.resnet_cifar import ResNetCifar, resnet8, resnet20, resnet32


def _torchvision(name: str):
    def build():
        import torchvision

        net = getattr(torchvision.models, name)(weights=None)
        dim = net.fc.in_features
        net.fc = nn.Identity()
        net.out_dim = dim
        return net

    return build


# name -> backbone constructor; every backbone has .out_dim (the feature size)
MODELS = {
    "resnet32": resnet32,
    "resnet20": resnet20,
    "resnet8": resnet8,
    "resnet50": _torchvision("resnet50"),
    "resnext50_32x4d": _torchvision("resnext50_32x4d"),
    "resnet152": _torchvision("resnet152"),
}


class LTNet(nn.Module):
    """backbone + head; forward returns the head's dict plus the pooled 'features'."""

    def __init__(self, backbone: nn.Module, head: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, x):
        f = self.backbone(x)
        out = self.head(f)
        out["features"] = f
        return out


def build_backbone(name: str) -> nn.Module:
    return MODELS[name]()


def build_model(name: str, num_classes: int, head: str = "linear", **head_kwargs) -> LTNet:
    backbone = build_backbone(name)
    return LTNet(backbone, HEADS[head](backbone.out_dim, num_classes, **head_kwargs))


def num_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


_PREFIXES = ("module.", "_orig_mod.", "backbone.")   # DDP, torch.compile and LTNet wrappers


def load_weights(model: nn.Module, path: str) -> None:
    """Copy a local backbone checkpoint (e.g. torchvision's resnet50-*.pth) into ``model``.

    Nothing is downloaded: ``path`` is a file the user has. The checkpoint's classifier
    (``fc.*``, ImageNet's 1,000 classes; ``head.*`` of an ltlab checkpoint) is dropped, since
    the run's head is built for its own classes; every other backbone tensor must fit, or a
    ConfigError names what does not.
    Works for LTNet backbones and for the multi-expert ResNets (shared trunk + every expert).
    """
    import torch


    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError(f"config key 'weights' = '{path}': no such file (ltlab never downloads weights; "
                          "point it at a local state_dict, e.g. torchvision's resnet50-*.pth)")
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for non-checkpoints
        raise ConfigError(f"config key 'weights' = '{path}': not a readable state_dict ({type(e).__name__})") from None
    for key in ("state_dict", "model"):   # training checkpoints nest the weights
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    clean = {}
    for k, v in state.items():
        while k.startswith(_PREFIXES):
            k = k.split(".", 1)[1]
        if not k.startswith(("fc.", "head.")):   # torchvision's / an ltlab run's classifier
            clean[k] = v
    try:
        if hasattr(model, "load_backbone_state"):
            model.load_backbone_state(clean)
        elif isinstance(getattr(model, "backbone", None), nn.Module):
            model.backbone.load_state_dict(clean)
        else:
            raise KeyError(f"{type(model).__name__} has no backbone to load")
    except (KeyError, RuntimeError) as e:
        lines = [ln.strip() for ln in str(e).strip().splitlines()[:2]]   # the header and the first mismatch
        first = " ".join(lines)[:240] or type(e).__name__
        raise ConfigError(f"config key 'weights' = '{path}' does not fit this model ({first})") from None


__all__ = ["MODELS", "HEADS", "LTNet", "LinearHead", "CosineHead", "ResNetCifar", "build_model",
           "build_backbone", "num_parameters", "resnet8", "resnet20", "resnet32", "load_weights"]
