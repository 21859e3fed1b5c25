"""Model factory: backbone (image -> feature) + head (feature -> dict of tensors)."""
from __future__ import annotations

import torch.nn as nn

from ltlab.models.heads import HEADS, CosineHead, LinearHead
from ltlab.models.resnet_cifar import ResNetCifar, resnet32


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


__all__ = ["MODELS", "HEADS", "LTNet", "LinearHead", "CosineHead", "ResNetCifar", "build_model",
           "build_backbone", "num_parameters", "resnet32"]
