"""Side by side: two optimizer steps of MiSLAS's stage one in its own code against ltlab's.

The original (Jia-Research-Lab/MiSLAS, checked at 0fc381e): resnet32_fe + Classifier from
models/resnet_cifar.py, methods.mixup_data / mixup_criterion, nn.CrossEntropyLoss, SGD over both
networks with the lr of train_stage1.adjust_learning_rate for its epoch 0. ltlab: the mislas
recipe's stage-one config, recipe.build_model / parameters / build_loss and
training.loop.train_one_epoch for epoch 1. Same weights (copied across in float64), same batch,
the same mixup lambda and permutation (ltlab's epoch rng, handed to the original's draws).

    python scripts/side_by_side_mislas.py --repo PATH_TO_A_MISLAS_CHECKOUT

Nothing of the original is in this repository: it is imported from --repo at run time.
"""
import argparse
import ast
import math
import sys
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn as nn

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("--repo", required=True, help="a checkout of Jia-Research-Lab/MiSLAS")
repo = ap.parse_args().repo
sys.path.insert(0, repo)
import methods as MM  # noqa: E402  (the original's mixup)
from models import resnet_cifar as RC  # noqa: E402  (the original's model)

# the original's lr schedule: only adjust_learning_rate of train_stage1.py, whose imports need CUDA set-ups
_tree = ast.parse(open(f"{repo}/train_stage1.py").read())
_fn = next(n for n in _tree.body if isinstance(n, ast.FunctionDef) and n.name == "adjust_learning_rate")
_ns = {"math": math}
exec(compile(ast.Module([_fn], []), "train_stage1.py", "exec"), _ns)
adjust_learning_rate = _ns["adjust_learning_rate"]
from side_by_side_common import Once, mixup_draws  # noqa: E402

from ltlab.methods.base import METHODS  # noqa: E402
from ltlab.methods.mislas import stage1_config  # noqa: E402
from ltlab.methods.resolve import from_dict  # noqa: E402
from ltlab.training import loop as L  # noqa: E402
from ltlab.training.schedule import lr_at  # noqa: E402

torch.manual_seed(0)
cfg = from_dict(stage1_config(from_dict({"method": "mislas", "dataset": "cifar10_lt"})))
print("ltlab stage one:", cfg.method, cfg.model, "lr", cfg.lr, "wd", cfg.weight_decay, "mom", cfg.momentum,
      "nesterov", cfg.nesterov, "mixup", cfg.mixup_alpha, "bs", cfg.batch_size, "sched", cfg.schedule, cfg.milestones, cfg.warmup_epochs)
recipe = METHODS[cfg.method]
data = SimpleNamespace(num_classes=10)
ours = recipe.build_model(cfg, data).double()
fe, cl = RC.resnet32_fe().double(), RC.Classifier(feat_in=64, num_classes=10).double()
src = ours.state_dict()
ours_items = list(src.items())
fe_sd, cl_sd = fe.state_dict(), cl.state_dict()
assert len(ours_items) == len(fe_sd) + len(cl_sd), "the two models' tensors do not pair up"
nfe = len(fe_sd)
for i, (k, v) in enumerate(ours_items):
    tk = list(fe_sd)[i] if i < nfe else list(cl_sd)[i - nfe]
    tgt = fe_sd if i < nfe else cl_sd
    assert tgt[tk].shape == v.shape, (k, tk)
    tgt[tk].copy_(v)
fe.load_state_dict(fe_sd)
cl.load_state_dict(cl_sd)
print("parameters: ltlab", sum(p.numel() for p in ours.parameters()), "MiSLAS", sum(p.numel() for p in fe.parameters()) + sum(p.numel() for p in cl.parameters()))

g = torch.Generator().manual_seed(1)
x = torch.randn(128, 3, 32, 32, generator=g, dtype=torch.float64)
y = torch.randint(0, 10, (128,), generator=g)
for m in (ours, fe, cl):
    m.eval()
with torch.no_grad():
    d0 = (recipe.inference(ours(x)) - cl(fe(x))).abs().max().item()
print("eval-mode logits, max |diff|:", d0)

# two steps of epoch 1 (MiSLAS epoch 0): lr, mixup, loss, SGD with momentum and weight decay
opt_o = torch.optim.SGD(recipe.parameters(ours, cfg), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=cfg.nesterov)
loss_o = recipe.build_loss(cfg, data)


batches = [(x, y), (x.flip(0), y.flip(0))]
L.set_lr(opt_o, lr_at(cfg, 1))
draws = mixup_draws(cfg, batches)
mean_o, _ = L.train_one_epoch(ours, Once(batches), loss_o, opt_o, recipe, epoch=1, seed=cfg.seed, mixup_alpha=cfg.mixup_alpha)

# config/cifar10/cifar10_imb001_stage1_mixup.yaml: lr 0.1, momentum 0.9, weight_decay 2e-4, cos False
conf = SimpleNamespace(cos=False, lr=0.1)
opt_m = torch.optim.SGD([{"params": fe.parameters()}, {"params": cl.parameters()}], 0.1, momentum=0.9, weight_decay=2e-4)
adjust_learning_rate(opt_m, 0, conf)
crit = nn.CrossEntropyLoss()
fe.train()
cl.train()
losses_m = []
real_beta, real_perm = np.random.beta, torch.randperm
for (xb, yb), (lam, perm) in zip(batches, draws):
    np.random.beta = lambda a, b, lam=lam: lam          # noqa: E731  the same draws as ltlab's epoch rng
    torch.randperm = lambda n, perm=perm: perm          # noqa: E731
    mx, ya, yb2, lm = MM.mixup_data(xb, yb, alpha=1.0, use_cuda=False)
    out = cl(fe(mx))
    loss = MM.mixup_criterion(crit, out, ya, yb2, lm)
    opt_m.zero_grad()
    loss.backward()
    opt_m.step()
    losses_m.append(loss.item())
np.random.beta, torch.randperm = real_beta, real_perm
print("lr epoch 1: ltlab", lr_at(cfg, 1), "MiSLAS", opt_m.param_groups[0]["lr"])
print("mean loss of the two steps: ltlab", mean_o, "MiSLAS", float(np.mean(losses_m)))
theirs = list(fe.state_dict().values()) + list(cl.state_dict().values())
diffs = [(k, (v - t).abs().max().item()) for (k, v), t in zip(ours.state_dict().items(), theirs) if v.dtype.is_floating_point]
worst = max(diffs, key=lambda d: d[1])
print("after two steps, max |diff| over", len(diffs), "tensors (weights, BN stats):", worst)
