"""Side by side: two optimizer steps of Balanced Softmax in its authors' code against ltlab's
`balanced_softmax` recipe (and `logit_adjust`, whose default tau = 1 is the same loss).

The original (jiawei-ren/BalancedMetaSoftmax-Classification): loss/BalancedSoftmaxLoss.py's
balanced_softmax_loss(labels, logits, sample_per_class, 'mean'), i.e. CE(z + log n_y), fed the
CIFAR-10-LT IF 100 class counts. ltlab: the recipe's config, recipe.build_model / build_loss and
training.loop.train_one_epoch at the lr of epoch 1. Both sides step with ltlab's SGD settings
(lr, momentum 0.9, weight decay 2e-4) on ltlab's ResNet-32 (a copy, same weights), so the loss and
its gradient are what is compared; the original's own protocol (batch 512, weight decay 5e-4,
13,000 iterations with warmup and cosine, AutoAugment + Cutout) is printed, not stepped.

    python scripts/side_by_side_balanced_softmax.py --repo PATH_TO_A_BALMS_CHECKOUT

Both run in float64, except that ltlab's loss casts the logits to float32 (as under bf16 autocast).
Expected: the losses agree to that float32 rounding (log n_y and ltlab's log pi_y differ by the
constant log N, which softmax cancels), the weights after two steps to about 1e-9. Only
loss/BalancedSoftmaxLoss.py of the checkout is read, at run time.
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
ap.add_argument("--repo", required=True, help="a checkout of jiawei-ren/BalancedMetaSoftmax-Classification")
repo = ap.parse_args().repo
spec = importlib.util.spec_from_file_location("balms_loss", f"{repo}/loss/BalancedSoftmaxLoss.py")
BL = importlib.util.module_from_spec(spec)
spec.loader.exec_module(BL)

counts = [int(5000 * 0.01 ** (i / 9)) for i in range(10)]          # CIFAR-10-LT IF 100: 5000 .. 50
data = SimpleNamespace(num_classes=10, train_counts=np.array(counts))
spc = torch.tensor(counts)

g = torch.Generator().manual_seed(1)
x = torch.randn(128, 3, 32, 32, generator=g, dtype=torch.float64)
y = torch.randint(0, 10, (128,), generator=g)
batches = [(x, y), (x.flip(0), y.flip(0))]

for method in ("balanced_softmax", "logit_adjust"):
    torch.manual_seed(0)
    cfg = from_dict({"dataset": "cifar10_lt", "method": method})
    recipe = METHODS[cfg.method]
    ours = recipe.build_model(cfg, data).double()
    theirs = copy.deepcopy(ours)
    loss_o = recipe.build_loss(cfg, data).double()
    with torch.no_grad():
        z = copy.deepcopy(ours)(x)["logits"]    # a copy: a train-mode forward moves BN's running stats
        print(f"{method}: loss on the same logits, ltlab {loss_o({'logits': z}, y).item():.7f} "
              f"BALMS {BL.balanced_softmax_loss(y, z, spc, 'mean').item():.7f}")
    mean_o, mean_t, worst = two_sgd_steps(
        ours, theirs, lambda z, y: BL.balanced_softmax_loss(y, z, spc, "mean"), batches, cfg, recipe, loss_o)
    print(f"{method}: lr {lr_at(cfg, 1)}, wd {cfg.weight_decay}, batch {cfg.batch_size}, {cfg.epochs} epochs; "
          f"mean loss of the two steps ltlab {mean_o:.7f} BALMS {mean_t:.7f}; "
          f"weights after two steps, max |diff| {worst}")
print("BALMS's own CIFAR protocol (config/CIFAR10_LT/balanced_softmax_imba200.yaml): batch 512, "
      "13,000 iterations (~537 epochs of 12,406 images), lr 0.05 after 800 warmup iterations, cosine, "
      "weight decay 5e-4, AutoAugment + Cutout; its softmax_imba200.yaml is the same protocol with plain CE")
