"""Side by side: two optimizer steps of BalPoE on CIFAR-10-LT in its own code against ltlab's.

The original (emasa/BalPoE-CalibratedLT, checked at ca607ae, config
configs/mixup/standard_training/config_cifar10_ir100_bs-experts.json): the 3-expert ResNet_s of
model/ldam_drw_resnets/expert_resnet_cifar.py (use_norm, s = 30), BSExpertLoss with tau [0, 1, 2]
from model/loss.py, and utils/combiner.py's Combiner in mixup mode (alpha 0.8), stepped as
trainer/trainer.py steps it, SGD (lr 0.1, momentum 0.9, Nesterov, wd 5e-4) with the lr its
CustomLR LambdaLR gives the first epoch (warm-up 1/5). ltlab: the balpoe recipe's config,
recipe.build_model / parameters / build_loss and training.loop.train_one_epoch for epoch 1. Same
weights (copied across in float64, matched by name), the same batch and class counts, the same
mixup lambda and permutation (ltlab's epoch rng, handed to the original's draws).

    python scripts/side_by_side_balpoe.py --repo PATH_TO_A_BALPOE_CHECKOUT

Only model/ and utils/combiner.py of the checkout are read; nothing of the original is in this
repository: it is imported from --repo at run time.
"""
import argparse
import importlib.util
import sys
from types import SimpleNamespace

import numpy as np
import torch

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("--repo", required=True, help="a checkout of emasa/BalPoE-CalibratedLT")
repo = ap.parse_args().repo
sys.path.insert(0, repo)
from model.ldam_drw_resnets import expert_resnet_cifar as ER  # noqa: E402  (the original's model)
from model.loss import BSExpertLoss  # noqa: E402

# utils/__init__ pulls in the whole utils package; the combiner alone needs model.metric only
_spec = importlib.util.spec_from_file_location("balpoe_combiner", f"{repo}/utils/combiner.py")
CB = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(CB)

from side_by_side_common import Once, mixup_draws  # noqa: E402

from ltlab.methods.base import METHODS  # noqa: E402
from ltlab.methods.resolve import from_dict  # noqa: E402
from ltlab.training import loop as L  # noqa: E402
from ltlab.training.schedule import lr_at  # noqa: E402

torch.manual_seed(0)
cfg = from_dict({"method": "balpoe", "dataset": "cifar10_lt"})
print("ltlab balpoe:", cfg.model, "lr", cfg.lr, "wd", cfg.weight_decay, "mom", cfg.momentum, "nesterov", cfg.nesterov,
      "mixup", cfg.mixup_alpha, "bs", cfg.batch_size, "sched", cfg.schedule, cfg.milestones, cfg.warmup_epochs)
recipe = METHODS[cfg.method]
counts = [int(5000 * 0.01 ** (i / 9)) for i in range(10)]          # CIFAR-10-LT IF 100: 5000 .. 50
data = SimpleNamespace(num_classes=10, train_counts=np.array(counts))
ours = recipe.build_model(cfg, data).double()
theirs = ER.ResNet_s(ER.BasicBlock, [5, 5, 5], num_experts=3, num_classes=10, reduce_dimension=False,
                     use_norm=True, returns_feat=True).double()


def their_name(k: str) -> str:
    """ltlab's parameter name -> the original's: experts.K.layer2 -> layer2s.K, head -> linears.K."""
    parts = k.split(".")
    if parts[0] != "experts":
        return k
    e, rest = parts[1], parts[2:]
    if rest[0] == "head":
        return f"linears.{e}." + ".".join(rest[1:])
    return f"{rest[0]}s.{e}." + ".".join(rest[1:])


src, dst = ours.state_dict(), theirs.state_dict()
assert sorted(their_name(k) for k in src) == sorted(dst), "the two models' tensors do not pair up"
for k, v in src.items():
    assert dst[their_name(k)].shape == v.shape, k
    dst[their_name(k)].copy_(v)
theirs.load_state_dict(dst)
print("parameters: ltlab", sum(p.numel() for p in ours.parameters()), "BalPoE", sum(p.numel() for p in theirs.parameters()))

g = torch.Generator().manual_seed(1)
x = torch.randn(128, 3, 32, 32, generator=g, dtype=torch.float64)
y = torch.randint(0, 10, (128,), generator=g)
ours.eval()
theirs.eval()
with torch.no_grad():
    d0 = (recipe.inference(ours(x)) - theirs(x)["output"]).abs().max().item()
print("eval-mode logits (mean over experts), max |diff|:", d0)

opt_o = torch.optim.SGD(recipe.parameters(ours, cfg), lr=cfg.lr, momentum=cfg.momentum,
                        weight_decay=cfg.weight_decay, nesterov=cfg.nesterov)
loss_o = recipe.build_loss(cfg, data).double()


batches = [(x, y), (x.flip(0), y.flip(0))]
L.set_lr(opt_o, lr_at(cfg, 1))
draws = mixup_draws(cfg, batches)
mean_o, _ = L.train_one_epoch(ours, Once(batches), loss_o, opt_o, recipe, epoch=1, seed=cfg.seed,
                              mixup_alpha=cfg.mixup_alpha)

# the original's first epoch: LambdaLR(lr_lambda) at epoch 0 = 1 * (0 + 1) / warmup_epoch
opt_m = torch.optim.SGD(theirs.parameters(), lr=0.1, weight_decay=5e-4, momentum=0.9, nesterov=True)
lr_lambda = lambda e: (1.0 if e < 160 else 0.1 if e < 180 else 0.01) * (float(1 + e) / 5 if e < 5 else 1.0)  # noqa: E731
sched = torch.optim.lr_scheduler.LambdaLR(opt_m, lr_lambda)
crit = BSExpertLoss(cls_num_list=counts, tau_list=[0, 1.0, 2.0]).double()
comb = CB.Combiner({"trainer": {"epochs": 200}, "combiner": {"mode": "mixup", "mixup": {"alpha": 0.8}},
                    "add_extra_info": True, "arch": {"args": {"num_experts": 3}}, "loss": {}})
comb.update(1)
theirs.train()
losses_m = []
real_beta, real_perm = CB.np.random.beta, CB.torch.randperm
for (xb, yb), (lam, perm) in zip(batches, draws):
    CB.np.random.beta = lambda a, b, lam=lam: lam          # noqa: E731  the same draws as ltlab's epoch rng
    CB.torch.randperm = lambda n, perm=perm: perm          # noqa: E731
    opt_m.zero_grad()
    _, loss_dict, _ = comb.forward(theirs, crit, xb, yb)
    loss_dict["loss"].backward()
    opt_m.step()
    losses_m.append(loss_dict["loss"].item())
CB.np.random.beta, CB.torch.randperm = real_beta, real_perm
print("lr epoch 1: ltlab", lr_at(cfg, 1), "BalPoE", opt_m.param_groups[0]["lr"])
print("mean loss of the two steps: ltlab", mean_o, "BalPoE", float(np.mean(losses_m)))
after = theirs.state_dict()
diffs = [(k, (v - after[their_name(k)]).abs().max().item()) for k, v in ours.state_dict().items()
         if v.dtype.is_floating_point]
worst = max(diffs, key=lambda d: d[1])
print("after two steps, max |diff| over", len(diffs), "tensors (weights, BN stats):", worst)
