"""Coverage of ltlab's 95% intervals on real predictions (issue 23, item 6): the larger measurement
behind tests/test_coverage_real.py, reported in docs/results.md ("How sure is a number").

The archived CE run's 10,000 test predictions are the population (ltlab.evaluation.coverage).
Settings:

1. single-run and paired intervals (A = CE, B = cRT) on 50 images a class, and the reweighting
   estimators on forward50-shifted samples of 2,000 images, with the known prior and with
   the prior EM estimates from the sample (calibration 'auto', fitted on the run's val split);
2. the same with B = la_posthoc and backward50-shifted samples;
3. single-run intervals on 10 and 200 images a class (how coverage moves with the sample);
4. EM's prior intervals (evaluation.prior_intervals, val images resampled too): the test set is
   split in two halves, one a "val" population (balanced), one a test population; each draw
   takes 20 val images a class and a shifted test sample from them, fits the 'auto'
   calibration on the val sample and checks the per-class intervals against the shifted
   population's prior (the true prior of what was sampled);
5. the reweighting estimators with the EM-estimated prior as a user runs them: the same two
   halves, each draw takes 20 val images a class and a shifted sample of 2,000 test images,
   fits the 'ts' calibration on the val sample (what 'auto' chooses for this run on its val
   split; a BCTS refit costs ~100x a TS one, too slow for hundreds of draws here) and refits it
   on val resamples inside the interval (reweighting.estimate_target_accuracy with val_logits);
   the truth is the test half's balanced and group accuracy.

    .venv/bin/python scripts/coverage_real.py [--draws 1000] [--resamples 400] [--prior-draws 100]
                                              [--out coverage_real.json]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ltlab.evaluation import calibrated_em as CE  # noqa: E402
from ltlab.evaluation import coverage, prior_intervals  # noqa: E402
from ltlab.evaluation import reweighting as R  # noqa: E402
from ltlab.evaluation.run_dir import load_run  # noqa: E402
from ltlab.evaluation.shift import model_prior_counts, parse_shift, shift_subset  # noqa: E402

RESULTS = REPO / "experiments" / "results" / "cifar10_lt_if100"


def _shift_prior(y, name):
    sub = shift_subset(y, *parse_shift(name))
    return np.bincount(y[sub], minlength=int(y.max()) + 1) / sub.size


def prior_coverage(z, y, pi, draws, resamples, shift="forward50", val_per_class=20, test_n=2000, seed=0):
    """Setting 4: per-class coverage of EM's prior intervals with the calibration refitted on val
    resamples. Returns (coverage, mean |TV|, how often 'auto' chose each calibration)."""
    half = _halves(y, seed)
    zv_pop, yv_pop, zt_pop, yt_pop = z[half], y[half], z[~half], y[~half]
    s = _shift_prior(y, shift)
    hits, tvs, chosen = [], [], {}
    for d in range(draws):
        rng = np.random.default_rng([seed, d])
        vidx = np.concatenate([rng.choice(np.flatnonzero(yv_pop == k), val_per_class) for k in np.unique(yv_pop)])
        tidx = R.draw_shifted_sample(yt_pop, s, test_n, seed=int(rng.integers(2**31)))
        cal = CE.fit_calibration("auto", zv_pop[vidx], yv_pop[vidx], pi)
        chosen[cal.method] = chosen.get(cal.method, 0) + 1
        res = prior_intervals.em_prior_intervals(zt_pop[tidx], cal, zv_pop[vidx], yv_pop[vidx], true_prior=s,
                                                 n_resamples=resamples, seed=d)
        hits.append((res.ci[:, 0] <= s) & (s <= res.ci[:, 1]))
        tvs.append(res.tv)
    h = np.array(hits)
    return {"per_class": h.mean(0).round(3).tolist(), "mean": float(h.mean()), "mean_tv": float(np.mean(tvs)),
            "auto_chose": chosen, "draws": draws, "shift": shift, "val_per_class": val_per_class, "test_n": test_n}


def _halves(y, seed=0):
    rng0 = np.random.default_rng(seed)
    half = np.zeros(y.size, dtype=bool)
    for k in np.unique(y):                            # half of each class as the val population
        idx = rng0.permutation(np.flatnonzero(y == k))
        half[idx[: idx.size // 2]] = True
    return half


def em_refit_coverage(z, y, tc, pi, shift, draws, resamples, seed=0):
    """Setting 5: coverage of the EM-prior reweighting intervals with the calibration fitted on
    each draw's val sample and refitted on its resamples."""
    half = _halves(y, seed)
    cal = CE.fit_calibration("ts", z[half], y[half], pi)    # dr's temperature only
    return coverage.simulate_coverage(z[~half], y[~half], tc, shift_prior=_shift_prior(y, shift), draws=draws,
                                      fraction=0.05, shifted_n=2000, n_resamples=resamples,
                                      temperature=cal.temperature, em_method="ts", model_prior=pi,
                                      val=(z[half], y[half]), val_per_class=20, seed=seed)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--draws", type=int, default=1000)
    ap.add_argument("--resamples", type=int, default=400)
    ap.add_argument("--prior-draws", type=int, default=100)
    ap.add_argument("--em-draws", type=int, default=200, help="draws of setting 5 (0 skips it)")
    ap.add_argument("--out", default="")
    args = ap.parse_args(argv)

    ce = load_run(RESULTS / "ce" / "seed0")
    test, val = ce.predictions("test"), ce.predictions("val")
    z, y, tc = test["logits"], test["labels"], test["train_counts"]
    pi = model_prior_counts(ce.config, tc, test)
    cal = CE.fit_calibration("auto", val["logits"], val["labels"], pi)
    report = {"calibration": cal.describe()}
    t0 = time.time()
    settings = (("crt, forward50", "crt", "forward50", 0), ("la_posthoc, backward50", "la_posthoc", "backward50", 2))
    for name, other, shift, seed in settings:
        b = load_run(RESULTS / other / "seed0").predictions("test")["logits"]
        report[name] = coverage.simulate_coverage(z, y, tc, b, shift_prior=_shift_prior(y, shift), draws=args.draws,
                                                  fraction=0.05, shifted_n=2000, n_resamples=args.resamples,
                                                  temperature=cal.temperature, calibration=cal, seed=seed)
        print(f"{name}: {time.time() - t0:.0f} s", flush=True)
    for frac in (0.01, 0.2):
        report[f"single, {int(frac * 1000)} a class"] = coverage.simulate_coverage(
            z, y, tc, draws=args.draws, fraction=frac, n_resamples=args.resamples, seed=1)
        print(f"fraction {frac}: {time.time() - t0:.0f} s", flush=True)
    if args.prior_draws:
        report["em prior"] = prior_coverage(z, y, pi, args.prior_draws, min(args.resamples, 200))
        print(f"prior: {time.time() - t0:.0f} s", flush=True)
    for shift in ("forward50", "backward50") if args.em_draws else ():
        report[f"em refit, {shift}"] = em_refit_coverage(z, y, tc, pi, shift, args.em_draws, min(args.resamples, 200))
        print(f"em refit {shift}: {time.time() - t0:.0f} s", flush=True)
    report["command"] = "python scripts/coverage_real.py " + " ".join(argv if argv is not None else sys.argv[1:])
    report["seconds"] = round(time.time() - t0)
    text = json.dumps(report, indent=1, default=float)
    if args.out:
        Path(args.out).write_text(text)
    for key, r in report.items():
        if isinstance(r, dict) and "single" in r:
            for part in ("single", "paired", "reweighting", "reweighting_empirical", "reweighting_em",
                         "reweighting_em_refit"):
                if part in r:
                    print(f"{key} | {part} | " + ", ".join(f"{k} {v:.3f}" for k, v in r[part].items()))
    if "em prior" in report:
        print("em prior |", json.dumps(report["em prior"]))
    return report


if __name__ == "__main__":
    main()
