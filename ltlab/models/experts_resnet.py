"""Multi-expert torchvision ResNets of BalPoE (ResNet-50, ResNeXt-50 32x4d, ResNet-152).

Sanchez Aimar et al., CVPR 2023 (emasa/BalPoE-CalibratedLT, ``model/fb_resnets/Expert_ResNet.py``,
``share_layer3`` off): shared stem (conv1, BN, max-pool) + layer1 + layer2; per expert its
own full-width layer3 + layer4, global average pooling and a cosine classifier scaled by
s = 30. The output dict is that of ltlab.models.experts.ExpertResNetCifar, so BalPoE's loss
and inference rule work unchanged: 'expert_logits' (E, N, C), 'logits' (their mean, the
product of experts), 'features' (the E pooled expert features concatenated, (N, 2048 E)).

Each expert's layers are taken from a freshly built torchvision network, so their blocks,
widths, groups and initialisation are torchvision's own. No weights are downloaded;
``load_backbone_state`` copies a local torchvision checkpoint into the shared trunk and
into every expert (BalPoE itself trains from scratch).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ltlab.models.experts import ExpertResNetCifar, MultiExpert
from ltlab.models.heads import CosineHead

TRUNK = ("conv1", "bn1", "layer1", "layer2")     # shared by all experts
BRANCH = ("layer3", "layer4")                    # one copy per expert
ARCHS = ("resnet50", "resnext50_32x4d", "resnet152")


def _torchvision_net(arch: str) -> nn.Module:
    import torchvision

    if arch not in ARCHS:
        raise ValueError(f"expert ResNet {arch!r}: expected one of {', '.join(ARCHS)}")
    return getattr(torchvision.models, arch)(weights=None)


class ResNetExpert(nn.Module):
    def __init__(self, arch: str, num_classes: int, scale: float = 30.0):
        super().__init__()
        net = _torchvision_net(arch)
        self.layer3, self.layer4 = net.layer3, net.layer4
        self.feat_dim = net.fc.in_features
        self.head = CosineHead(self.feat_dim, num_classes, scale=scale)

    def features(self, h):
        return torch.flatten(F.adaptive_avg_pool2d(self.layer4(self.layer3(h)), 1), 1)


class ExpertResNet(MultiExpert):
    def __init__(self, arch: str, num_classes: int, experts: int = 3, scale: float = 30.0):
        super().__init__()
        if experts < 1:
            raise ValueError(f"experts = {experts}: need at least one")
        trunk = _torchvision_net(arch)
        self.conv1, self.bn1, self.relu, self.maxpool = trunk.conv1, trunk.bn1, trunk.relu, trunk.maxpool
        self.layer1, self.layer2 = trunk.layer1, trunk.layer2
        self.experts = nn.ModuleList(ResNetExpert(arch, num_classes, scale) for _ in range(experts))
        self.feat_dim = self.experts[0].feat_dim
        self.out_dim = self.feat_dim * experts

    def stem(self, x):
        return self.layer2(self.layer1(self.maxpool(self.relu(self.bn1(self.conv1(x))))))

    def load_backbone_state(self, state: dict) -> None:
        """A torchvision ResNet state_dict (fc removed): trunk keys into the shared layers,
        layer3/layer4 keys into every expert. Raises KeyError naming what does not fit."""
        trunk = {k: v for k, v in state.items() if k.split(".")[0] in TRUNK}
        branch = {k: v for k, v in state.items() if k.split(".")[0] in BRANCH}
        other = sorted(set(state) - set(trunk) - set(branch))
        if other:
            raise KeyError(f"unexpected keys {other[:3]}")
        mine = {k: v for k, v in self.state_dict().items() if k.split(".")[0] in TRUNK}
        missing = sorted(set(mine) - set(trunk))
        if missing:
            raise KeyError(f"missing keys {missing[:3]}")
        self.load_state_dict({**self.state_dict(), **trunk})
        for e in self.experts:
            mine = e.state_dict()
            lacking = sorted(k for k in mine if k.split(".")[0] in BRANCH and k not in branch)
            if lacking:
                raise KeyError(f"missing keys {lacking[:3]}")
            e.load_state_dict({**mine, **branch})


def build_expert_model(name: str, num_classes: int, experts: int = 3, scale: float = 30.0) -> nn.Module:
    """BalPoE's multi-expert network for ``cfg.model``: a CIFAR ResNet (32 as in the paper; 20 and 8,
    the same split with fewer blocks a stage, for the demo set) or a torchvision ResNet."""
    if name in CIFAR_BLOCKS:
        return ExpertResNetCifar(num_classes, experts=experts, blocks=CIFAR_BLOCKS[name], scale=scale)
    return ExpertResNet(name, num_classes, experts=experts, scale=scale)


CIFAR_BLOCKS = {"resnet32": (5, 5, 5), "resnet20": (3, 3, 3), "resnet8": (1, 1, 1)}   # blocks a stage
EXPERT_MODELS = tuple(CIFAR_BLOCKS) + ARCHS
