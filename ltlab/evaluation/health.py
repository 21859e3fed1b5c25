"""Is a finished run a model at all? Two symptoms a newcomer's short run can show, in one line each.

- Blown-up logits: a run that diverged, or whose BatchNorm running statistics have not settled
  (they start at mean 0, variance 1 and move 10% a step), predicts with logits in the thousands;
  every confidence is then 1.0 and the energy / calibration pages show nothing but saturation.
  Trained CIFAR-10-LT runs of the archive stay under 65 (LDAM's scale s = 30 caps its logits);
  the diverged 1-epoch ResNet-32 runs of issue 26 reached 1e3 to 1e7.
- Chance accuracy: top-1 not above 1/K by a one-sided binomial test at the 1% level. On a
  balanced test set 1/K is what guessing gets; on a shifted one the test also says so.

The checks read saved logits only (no torch): the CLI prints them when ``ltlab train`` ends, the
run page shows them, and tests use them on short runs of every method.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from scipy.stats import binomtest

from ltlab.evaluation.run_dir import PROVENANCE_FILE, read_predictions

LOGIT_LIMIT = 1000.0   # |logit| above which a run counts as blown up (trained runs: < 65)
CHANCE_ALPHA = 0.01    # one-sided binomial test of top-1 against 1/K


def check_logits(logits, labels, *, steps: int | None = None) -> list[str]:
    """One-line warnings about ``logits`` (N x K) of a test split: [] for a healthy run.

    ``steps``: the run's optimizer steps, named in the likely cause."""
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels)
    n, k = z.shape
    ran = f" ({steps} optimizer steps)" if steps else ""
    out = []
    finite = np.isfinite(z)
    if not finite.all():
        out.append(f"{int((~finite.all(1)).sum())} of {n} test images have non-finite logits: the run diverged{ran}; "
                   "lower the lr or train longer with a warm-up")
        z = np.where(finite, z, 0.0)
    top = float(np.abs(z).max()) if z.size else 0.0
    if top > LOGIT_LIMIT:
        out.append(f"logits up to {top:.3g} (trained runs stay under {LOGIT_LIMIT:g}): confidences are saturated at 1.0; "
                   f"likely cause: the run diverged or its BatchNorm statistics have not settled{ran}; "
                   "train longer, lower the lr or use a smaller model (dataset=demo defaults to resnet8)")
    correct = int((z.argmax(1) == y).sum()) if n else 0
    if n and binomtest(correct, n, 1.0 / k, alternative="greater").pvalue >= CHANCE_ALPHA:
        out.append(f"top-1 {correct / n:.1%} is not above chance (1/{k} = {1 / k:.1%}, binomial test, "
                   f"{n} test images): the model has not learned{ran}; train for more epochs")
    return out


def run_steps(run_dir) -> int | None:
    """Optimizer steps the run trained for, from its provenance (runs from 2026-12-04 on)."""
    try:
        sched = json.loads((Path(run_dir) / PROVENANCE_FILE).read_text())["schedule"]
        return int(sched["steps_per_epoch"]) * int(sched["epochs"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def check_run(run_dir) -> list[str]:
    """check_logits on a finished run's predictions/test.npz."""
    test = read_predictions(Path(run_dir) / "predictions" / "test.npz")
    return check_logits(test["logits"], test["labels"], steps=run_steps(run_dir))
