"""Side by side: two optimizer steps of the focal and CB-focal baselines in LDAM-DRW's own code
against ltlab's `focal` and `cb` (extra.cb_loss=focal) recipes.

The original (kaidic/LDAM-DRW): losses.py's FocalLoss(weight=per_cls_weights, gamma=1) as
cifar_train.py builds it (train_rule None for focal, 'Reweight' for CB focal: beta 0.9999, the
weights normalised to sum to the number of classes), stepped with its SGD (momentum 0.9, wd 2e-4).
ltlab: the recipe's config, recipe.build_model / build_loss and training.loop.train_one_epoch
at the lr of epoch 1. The network is ltlab's ResNet-32 on both sides (a copy, same weights): the
loss, the weights and the step are what is compared.

    python scripts/side_by_side_focal.py --repo PATH_TO_AN_LDAM_DRW_CHECKOUT

Expected: focal agrees to rounding; CB focal differs by the original's p = exp(-w_y CE) in the
focusing term (ltlab uses the softmax p_y; ltlab/methods/losses.py FocalLoss), a few percent of
the loss at initialisation. Only losses.py of the checkout is read, at run time.
"""
import argparse
import copy
import importlib.util
from types import SimpleNamespace

import numpy as np
import torch
from side_by_side_common import two_sgd_steps

from ltlab.methods.base import METHODS
from ltlab.methods.resolve import from_dict
from ltlab.training.schedule import lr_at

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("--repo", required=True, help="a checkout of kaidic/LDAM-DRW")
repo = ap.parse_args().repo
spec = importlib.util.spec_from_file_location("ldam_losses", f"{repo}/losses.py")
LL = importlib.util.module_from_spec(spec)
spec.loader.exec_module(LL)

counts = [int(5000 * 0.01 ** (i / 9)) for i in range(10)]          # CIFAR-10-LT IF 100: 5000 .. 50
data = SimpleNamespace(num_classes=10, train_counts=np.array(counts))
beta = 0.9999                                                       # cifar_train.py, train_rule 'Reweight'
w = (1.0 - beta) / (1.0 - np.power(beta, counts))
w = torch.tensor(w / w.sum() * len(counts), dtype=torch.float64)

g = torch.Generator().manual_seed(1)
x = torch.randn(128, 3, 32, 32, generator=g, dtype=torch.float64)
y = torch.randint(0, 10, (128,), generator=g)
batches = [(x, y), (x.flip(0), y.flip(0))]

for name, overrides, their_weight in (("focal", {"method": "focal"}, None),
                                      ("cb focal", {"method": "cb", "extra": {"cb_loss": "focal"}}, w)):
    torch.manual_seed(0)
    cfg = from_dict({"dataset": "cifar10_lt", **overrides})
    recipe = METHODS[cfg.method]
    ours = recipe.build_model(cfg, data).double()
    theirs = copy.deepcopy(ours)
    loss_o = recipe.build_loss(cfg, data).double()
    if their_weight is not None:
        print(f"{name}: class weights ltlab {loss_o.weight.numpy().round(4)}, LDAM-DRW {their_weight.numpy().round(4)}")
    crit = LL.FocalLoss(weight=their_weight, gamma=1)
    with torch.no_grad():
        z = copy.deepcopy(ours)(x)["logits"]    # a copy: a train-mode forward moves BN's running stats
        print(f"{name}: loss on the same logits, ltlab {loss_o({'logits': z}, y).item():.7f} "
              f"LDAM-DRW {crit(z, y).item():.7f}")
    mean_o, mean_t, worst = two_sgd_steps(ours, theirs, crit, batches, cfg, recipe, loss_o,
                                          momentum=0.9, weight_decay=2e-4)   # cifar_train.py's SGD
    print(f"{name}: lr {lr_at(cfg, 1)}, wd {cfg.weight_decay}, momentum {cfg.momentum}; mean loss of the two steps "
          f"ltlab {mean_o:.7f} LDAM-DRW {mean_t:.7f}; weights after two steps, max |diff| {worst}")
