"""``ltlab compare A B``: is run A better than run B on the same test images, and how sure is that?

Two run directories: the difference A - B of balanced accuracy, top-1, few-shot accuracy and ECE,
each with a paired stratified bootstrap interval over the same test images (both runs resampled
together; ltlab.evaluation.paired), and McNemar's exact test on which images each gets right.
Two folders of seed runs (e.g. an archive's ``ce/`` and ``crt/``): the same differences from each
run's summary.json, matched by seed, with a paired t-interval over seeds. Every line ends with its
conclusion in words.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ltlab.config import ConfigError
from ltlab.evaluation import paired
from ltlab.evaluation.run_dir import is_finished, read_json, read_predictions, read_yaml

METRICS = ("balanced_acc", "top1", "few", "ece")


def _seed_runs(folder: Path) -> dict:
    """{seed: summary} of every finished run under folder."""
    out = {}
    for f in sorted(folder.rglob("summary.json")):
        cfg_file = f.parent / "config.yaml"
        cfg = read_yaml(cfg_file) if cfg_file.is_file() else {}
        seed = cfg.get("seed")
        if seed in out:
            raise ConfigError(f"'{folder}' holds two runs of seed {seed}: compare one configuration at a time")
        out[seed] = read_json(f)
    return out


def _test_predictions(run: Path) -> dict:
    f = run / "predictions" / "test.npz"
    if not f.is_file():
        raise ConfigError(f"run '{run}' has no predictions/test.npz: nothing to compare image by image")
    return read_predictions(f)


def compare_runs(a, b, *, n_resamples: int = 2000, seed: int = 0, level: float = 0.95) -> dict:
    """The comparison as data: {"kind": "images" | "seeds", "metrics": {...}, "lines": [...]}."""
    a, b = Path(a), Path(b)
    for p in (a, b):
        if not p.is_dir():
            raise ConfigError(f"'{p}' is not a directory: give two run directories or two folders of seed runs")
    if is_finished(a) and is_finished(b):
        for p in (a, b):
            read_json(p / "summary.json")   # a finished run's summary must be readable, even if not used here
        pa, pb = _test_predictions(a), _test_predictions(b)
        if pa["labels"].shape != pb["labels"].shape or not np.array_equal(pa["labels"], pb["labels"]):
            raise ConfigError(f"'{a}' and '{b}' were not scored on the same test images (labels differ): "
                              "a paired comparison needs the same test split in the same order")
        res = paired.paired_bootstrap(pa["logits"], pb["logits"], pa["labels"], pa["train_counts"],
                                      n_resamples=n_resamples, seed=seed, level=level)
        mc = res["mcnemar"]
        lines = [res[k]["text"] for k in METRICS]
        lines.append(f"McNemar (exact): A right where B is wrong on {mc['b']} images, the reverse on {mc['c']}, "
                     f"of {mc['n']}: p = {mc['p_value']:.3g}")
        lines.append(f"({level:.0%} paired percentile bootstrap over the {mc['n']} test images, stratified by "
                     f"class, {n_resamples} resamples, seed {seed})")
        return {"kind": "images", "metrics": {k: res[k] for k in METRICS}, "mcnemar": mc, "lines": lines}
    if is_finished(a) or is_finished(b):
        raise ConfigError("give two run directories or two folders of seed runs, not one of each")
    ra, rb = _seed_runs(a), _seed_runs(b)
    if not ra or not rb:
        empty = a if not ra else b
        raise ConfigError(f"'{empty}' holds no finished run (no summary.json under it)")
    out, lines = {}, []
    for k in METRICS:
        va = {s: r.get(k) for s, r in ra.items() if r.get(k) is not None}
        vb = {s: r.get(k) for s, r in rb.items() if r.get(k) is not None}
        res = paired.paired_seeds(va, vb, level=level, name=paired.NAMES[k],
                                  higher_is_better=k not in paired.LOWER_IS_BETTER)
        out[k] = res
        lines.append(res["text"])
    return {"kind": "seeds", "metrics": out, "lines": lines}
