"""How an enmos run uses its mixture: each component's gate weight and accuracy on the test split.

    python scripts/mixture_gate.py RUN_DIR        # a run directory that still holds checkpoint.pt

An archived run keeps predictions, not weights, so this needs the training run's own directory
(the results queue's, or one trained again from the archived config.yaml). It prints the mean gate
weight of each component (overall and by true class), each component's top-1 alone, and the
saved mixture's top-1 next to logit adjustment's Bayes rule applied to the training-time mixture
(which includes log(C pi) in every component): the two agree exactly when one component carries
the mixture, since then the mixture is a single logit-adjusted softmax.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import yaml

from ltlab.data import build_data
from ltlab.methods import METHODS
from ltlab.methods.resolve import from_dict
from ltlab.models.checkpoints import load_checkpoint


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--data-root", default="", help="overrides the config's data_root")
    args = ap.parse_args()
    raw = yaml.safe_load((args.run_dir / "config.yaml").read_text())
    if raw.get("method") != "enmos":
        raise SystemExit(f"run {args.run_dir}: method {raw.get('method')!r}, expected enmos")
    raw.update(device="cpu", run_dir=str(args.run_dir), **({"data_root": args.data_root} if args.data_root else {}))
    cfg = from_dict(raw)
    data = build_data(cfg, torch.device("cpu"))
    model = METHODS["enmos"].build_model(cfg, data)
    model.load_state_dict(load_checkpoint(args.run_dir / "checkpoint.pt")["model"])
    model.eval()

    z, gate, logits, y = [], [], [], []
    with torch.no_grad():
        for x, t in data.eval_loader("test", 500):
            out = model(x)
            z.append(out["component_logits"].float())
            gate.append(out["gate"].float())
            logits.append(out["logits"].float())
            y.append(t)
    z, gate, y = torch.cat(z, 1), torch.cat(gate), torch.cat(y)   # z: (K, N, C)
    saved = torch.cat(logits).exp()                                 # what the run saves, as probabilities
    log_prior = torch.log(torch.as_tensor(np.asarray(data.train_counts, dtype=np.float64)).float())
    log_prior = log_prior - torch.logsumexp(log_prior, 0)
    trained = (gate.t()[..., None] * (z + log_prior).softmax(-1)).sum(0)
    bayes = trained / log_prior.exp()                               # logit adjustment's rule, unnormalised

    def top1(p) -> float:
        return 100 * (p.argmax(1) == y).float().mean().item()

    print(f"{args.run_dir}: {z.shape[0]} components, {len(y)} test images")
    print(f"mixture as saved: top-1 {top1(saved):.1f}; training mixture divided by the prior: {top1(bayes):.1f}; "
          f"same argmax on {100 * (saved.argmax(1) == bayes.argmax(1)).float().mean().item():.1f}% of images")
    for k in range(z.shape[0]):
        by_class = [gate[y == c, k].mean().item() for c in range(data.num_classes)]
        print(f"component {k}: mean gate {gate[:, k].mean().item():.3f}, top-1 alone {top1(z[k]):.1f}, "
              f"gate by true class {np.round(by_class, 2).tolist()}")


if __name__ == "__main__":
    main()
