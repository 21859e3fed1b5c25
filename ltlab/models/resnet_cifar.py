"""CIFAR ResNets for 32x32 images: ResNet-32 as in LDAM-DRW (Cao et al., NeurIPS 2019), ResNet-20.

He et al. (2016, sec. 4.2) CIFAR ResNet-(6n+2): a 3x3 conv to 16 channels, three stages of n
basic blocks (16/32/64 channels, strides 1/2/2), global average pooling to a 64-d feature.
Shortcuts where the shape changes are option A: subsample by 2 and zero-pad the new channels.
ResNet-32 (n = 5) has about 0.46 M parameters; ResNet-20 (n = 3, about 0.27 M) costs about 60%
of its compute and ResNet-8 (n = 1, about 0.08 M) about 20%, for quick CPU runs.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class PadShortcut(nn.Module):
    """Option-A shortcut: every 2nd pixel, planes/4 zero channels on each side (no parameters)."""

    def __init__(self, pad: int):
        super().__init__()
        self.pad = pad

    def forward(self, x):
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = PadShortcut(planes // 4)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


def make_stage(in_planes: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
    layers = [BasicBlock(in_planes, planes, stride)]
    layers += [BasicBlock(planes, planes, 1) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


def kaiming_init(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight)


class ResNetCifar(nn.Module):
    """Backbone only: image -> (N, 64) feature. The classifier is a separate head."""

    def __init__(self, blocks=(5, 5, 5), widths=(16, 32, 64)):
        super().__init__()
        self.conv1 = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.layer1 = make_stage(widths[0], widths[0], blocks[0], 1)
        self.layer2 = make_stage(widths[0], widths[1], blocks[1], 2)
        self.layer3 = make_stage(widths[1], widths[2], blocks[2], 2)
        self.out_dim = widths[2]
        kaiming_init(self)

    def stem(self, x):
        return self.layer1(F.relu(self.bn1(self.conv1(x))))

    def forward(self, x):
        x = self.layer3(self.layer2(self.stem(x)))
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)


def resnet32() -> ResNetCifar:
    return ResNetCifar((5, 5, 5))


def resnet20() -> ResNetCifar:
    return ResNetCifar((3, 3, 3))


def resnet8() -> ResNetCifar:
    return ResNetCifar((1, 1, 1))
