"""Multi-expert ResNet-32 of BalPoE.

Sanchez Aimar et al., "Balanced Product of Calibrated Experts for Long-Tailed Recognition", CVPR
2023 (emasa/BalPoE-CalibratedLT, ``model/ldam_drw_resnets/expert_resnet_cifar.py``).

Shared: conv1 + BN + layer1 (16 channels). Per expert: its own layer2 (32), layer3 (64),
global average pooling and a cosine classifier scaled by s = 30 (LDAM's NormedLinear).
Blocks and option-A shortcuts are ltlab's ResNetCifar pieces, so with one expert the
network is exactly LDAM's ResNet-32 with a cosine head.

Output dict: 'expert_logits' (E, N, C), 'logits' = their mean over experts (the product
of experts: softmax of the mean logit), and 'features' = the E pooled 64-d expert features
concatenated in expert order, (N, 64 E). Concatenation (rather than the mean) keeps each
expert's feature recoverable for post-hoc analyses; with E = 1 it is the usual 64-d feature.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ltlab.models.heads import CosineHead
from ltlab.models.resnet_cifar import ResNetCifar, kaiming_init, make_stage


class Expert(nn.Module):
    def __init__(self, num_classes: int, blocks=(5, 5), widths=(16, 32, 64), scale: float = 30.0):
        super().__init__()
        self.layer2 = make_stage(widths[0], widths[1], blocks[0], 2)
        self.layer3 = make_stage(widths[1], widths[2], blocks[1], 2)
        self.head = CosineHead(widths[2], num_classes, scale=scale)

    def features(self, h):
        return torch.flatten(F.adaptive_avg_pool2d(self.layer3(self.layer2(h)), 1), 1)


class MultiExpert(nn.Module):
    """BalPoE's forward over a shared trunk (`stem`) and `experts` that each have `features`
    and a cosine `head`: expert logits (E, N, C), their mean, and the concatenated features."""

    def forward(self, x):
        h = self.stem(x)
        feats = [e.features(h) for e in self.experts]
        # cosine logits in fp32 under autocast too: the heads' matmul would otherwise run in bf16
        with torch.autocast(x.device.type, enabled=False):
            z = torch.stack([e.head(f.float())["logits"] for e, f in zip(self.experts, feats)])
        return {"expert_logits": z, "logits": z.mean(0), "features": torch.cat(feats, 1)}


class ExpertResNetCifar(MultiExpert):
    def __init__(self, num_classes: int, experts: int = 3, blocks=(5, 5, 5), widths=(16, 32, 64),
                 scale: float = 30.0):
        super().__init__()
        if experts < 1:
            raise ValueError(f"experts = {experts}: need at least one")
        trunk = ResNetCifar(blocks, widths)
        self.conv1, self.bn1, self.layer1 = trunk.conv1, trunk.bn1, trunk.layer1
        self.experts = nn.ModuleList(Expert(num_classes, blocks[1:], widths, scale) for _ in range(experts))
        self.feat_dim = widths[2]
        self.out_dim = widths[2] * experts
        kaiming_init(self.experts)

    def stem(self, x):
        return self.layer1(F.relu(self.bn1(self.conv1(x))))
