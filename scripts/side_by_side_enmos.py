"""Side by side: two optimizer steps of EnMos on CIFAR-10-LT in its own code against ltlab's.

The original (pengr0925/EnMos_debias, checked at 7dd5cb5): DotProduct_MOS from
models/EnergyMosClassifier.py (3 linear heads, bias-free softmax gate) and
Energy_based_Debias_Loss from loss/EnergyDebiasMosLoss.py, stepped as run_networks.py steps
them: batch_forward (features, then classifier(features, labels)), batch_loss, batch_backward
(clip_grad_norm_ to 5 for each network, feat_model and classifier apart, then one SGD with a
parameter group per network; lr 0.1, momentum 0.9, wd 2e-4 from
config/cifar10_lt_im100/En_debias_11.yaml, which names no nesterov: SGD's default, off).
ltlab: the enmos recipe's config, recipe.build_model / build_loss and
training.loop.train_one_epoch at the lr of epoch 1 (which clips through recipe.clip_gradients).

The feature network is ltlab's LDAM ResNet-32 on both sides (a copy, same weights): the repo's
CIFAR backbone (models/resnetcifar10.py) is named by a config no code path can run (no CIFAR
dataset class), so the recipe documents it as a deviation and this script compares what the
repo does run: the head, the gate, the loss, the clipping and the step.

    python scripts/side_by_side_enmos.py --repo PATH_TO_AN_ENMOS_DEBIAS_CHECKOUT

Only models/EnergyMosClassifier.py, loss/EnergyDebiasMosLoss.py and utils.py of the checkout
are read; nothing of the original is in this repository: it is imported from --repo at run time.
"""
import argparse
import copy
import importlib.util
import sys
from types import SimpleNamespace

import numpy as np
import torch

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("--repo", required=True, help="a checkout of pengr0925/EnMos_debias")
repo = ap.parse_args().repo
sys.path.insert(0, repo)


def _load(name: str, path: str):
    spec = importlib.util.spec_from_file_location(name, f"{repo}/{path}")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


MOS = _load("enmos_classifier", "models/EnergyMosClassifier.py")
EL = _load("enmos_loss", "loss/EnergyDebiasMosLoss.py")
torch.autograd.set_detect_anomaly(False)   # the loss module turns it on at import; it only slows


class _CpuTorch:
    """The loss builds its class-bias tensor with device='cuda'; this machine has none. Every
    other name is torch's own."""
    def __getattr__(self, name):
        return getattr(torch, name)

    @staticmethod
    def tensor(*a, device=None, **k):
        return torch.tensor(*a, **k)


EL.torch = _CpuTorch()

from side_by_side_common import Once  # noqa: E402

from ltlab.methods.base import METHODS  # noqa: E402
from ltlab.methods.resolve import from_dict  # noqa: E402
from ltlab.training import loop as L  # noqa: E402
from ltlab.training.schedule import lr_at  # noqa: E402

torch.manual_seed(0)
cfg = from_dict({"method": "enmos", "dataset": "cifar10_lt"})
print("ltlab enmos:", cfg.model, "lr", cfg.lr, "wd", cfg.weight_decay, "mom", cfg.momentum, "nesterov", cfg.nesterov,
      "bs", cfg.batch_size, "sched", cfg.schedule, cfg.milestones, cfg.lr_gamma, "warmup", cfg.warmup_epochs)
recipe = METHODS[cfg.method]
counts = [int(5000 * 0.01 ** (i / 9)) for i in range(10)]          # CIFAR-10-LT IF 100: 5000 .. 50
labels = np.repeat(np.arange(10), counts)                          # the loss reads the labels' counts
data = SimpleNamespace(num_classes=10, train_counts=np.array(counts))
ours = recipe.build_model(cfg, data).double()
ours.head.float()   # MixtureHead computes in float32 whatever the features' dtype; the original's head runs in float64
K, C = ours.head.components, ours.head.num_classes

feat_model = copy.deepcopy(ours.backbone)
classifier = MOS.DotProduct_MOS(num_classes=C, feat_dim=ours.head.fc.in_features, num_components=K).double()


def their_state() -> dict:
    """The original's tensors under ltlab's names: its K heads stacked as row blocks of ltlab's one
    Linear (block k is head k), its gate `prior` as ltlab's gate."""
    return {**{f"backbone.{k}": v for k, v in feat_model.state_dict().items()},
            "head.fc.weight": torch.cat([c.weight for c in classifier.components]),
            "head.fc.bias": torch.cat([c.bias for c in classifier.components]),
            "head.gate.weight": classifier.prior.weight}


with torch.no_grad():
    for k in range(K):
        classifier.components[k].weight.copy_(ours.head.fc.weight[k * C:(k + 1) * C])
        classifier.components[k].bias.copy_(ours.head.fc.bias[k * C:(k + 1) * C])
    classifier.prior.weight.copy_(ours.head.gate.weight)
assert sorted(their_state()) == sorted(ours.state_dict()), "the two models' tensors do not pair up"
networks = {"feat_model": feat_model, "classifier": classifier}
print("parameters: ltlab", sum(p.numel() for p in ours.parameters()),
      "EnMos", sum(p.numel() for n in networks.values() for p in n.parameters()))

g = torch.Generator().manual_seed(1)
x = torch.randn(128, 3, 32, 32, generator=g, dtype=torch.float64)
y = torch.randint(0, 10, (128,), generator=g)


def their_forward(xb, yb):
    logits, w = classifier(feat_model(xb), yb)
    return logits, w


ours.eval()
for n in networks.values():
    n.eval()
with torch.no_grad():
    logits_m, w_m = their_forward(x, y)
    p_m = EL.Energy_based_Debias_Loss(None, K, labels).calculate_probs(logits_m, w_m)   # run_networks' test path
    p_o = recipe.inference(ours(x)).exp()
print("eval-mode predicted probabilities (no prior term), max |diff|:", (p_o - p_m).abs().max().item())

batches = [(x, y), (x.flip(0), y.flip(0))]
before = copy.deepcopy(ours.state_dict())
opt_o = torch.optim.SGD(recipe.parameters(ours, cfg), lr=cfg.lr, momentum=cfg.momentum,
                        weight_decay=cfg.weight_decay, nesterov=cfg.nesterov)
loss_o = recipe.build_loss(cfg, data).double()
L.set_lr(opt_o, lr_at(cfg, 1))
mean_o, _ = L.train_one_epoch(ours, Once(batches), loss_o, opt_o, recipe, epoch=1, seed=cfg.seed)

# run_networks.py: one SGD, a parameter group per network; the lr is ltlab's epoch-1 warm-up lr, so
# the two sides take the same step (the original's own schedule is compared in the docstring of
# ltlab/methods/enmos.py, not here)
opt_m = torch.optim.SGD([{"params": n.parameters(), "lr": lr_at(cfg, 1), "momentum": 0.9, "weight_decay": 2e-4}
                         for n in networks.values()])
crit = EL.Energy_based_Debias_Loss(None, K, labels)
for n in networks.values():
    n.train()
losses_m, norms = [], []
for xb, yb in batches:
    logits, w = their_forward(xb, yb)                                     # batch_forward
    loss = crit(logits, yb, w)                                          # batch_loss (weight 1.0)
    opt_m.zero_grad()                                                   # batch_backward
    loss.backward()
    norms.append([round(torch.nn.utils.clip_grad_norm_(n.parameters(), max_norm=5).item(), 2)
                  for n in networks.values()])
    opt_m.step()
    losses_m.append(loss.item())
print("lr epoch 1:", lr_at(cfg, 1), "| the original's gradient norms before clipping to 5, (feat_model, classifier) "
      "per step:", norms)
print("mean loss of the two steps: ltlab", mean_o, "EnMos", float(np.mean(losses_m)))

after = their_state()
diffs = [(name, (v - after[name]).abs().max().item()) for name, v in ours.state_dict().items()
         if v.dtype.is_floating_point]
worst = max(diffs, key=lambda d: d[1])
print("after two steps, max |diff| over", len(diffs), "tensors (weights, BN stats):", worst)
moved = max((p - before[k]).abs().max().item() for k, p in ours.named_parameters())
print("for scale, the largest change the two steps made to a weight:", moved)
