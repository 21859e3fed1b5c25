"""Range and applicability checks of config values, as tables.

A value of the right type can still be impossible (``seed=-3``, which only numpy notices after
the run has started, ``momentum=1.5``, ``lr=.inf``) or be ignored by the run it is given to
(``data_root`` for the shipped demo, ``milestones`` with a cosine schedule). Both are refused
with one line naming the key, the value and what is allowed (ltlab.config.ConfigError).
"""
from __future__ import annotations

import math
import re
from pathlib import Path

from ltlab.config.errors import ConfigError

SEED_MAX = 2**32 - 1          # numpy.random.seed / RandomState accept [0, 2**32 - 1]
SMALL = ("demo", "cifar10_lt", "cifar100_lt", "folder")
CIFAR = ("cifar10_lt", "cifar100_lt")
LISTS = ("imagenet_lt", "places_lt", "inat18", "list")
# run names become folder names: no separators, no leading dot ('..' would leave runs/)
NAME_RE = re.compile(r"^[A-Za-z0-9_+=,-][A-Za-z0-9._+=,-]*$")


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


# config key -> (test, what is allowed); the lead's checks in config.validate run first
RANGES = {
    "seed": (lambda v: 0 <= v <= SEED_MAX, f"an integer in 0..{SEED_MAX} (numpy's seed range)"),
    # the validation split draws with lt_seed + 1 (ltlab.data.VAL_SEED_OFFSET)
    "lt_seed": (lambda v: 0 <= v <= SEED_MAX - 1, f"an integer in 0..{SEED_MAX - 1} (numpy's seed range, "
                                                   "lt_seed + 1 seeds the validation split)"),
    "imb_factor": (_finite, "a finite number >= 1"),
    "lr": (_finite, "a finite number > 0"),
    "weight_decay": (_finite, "a finite number >= 0"),
    "mixup_alpha": (_finite, "a finite number >= 0 (0 = off)"),
    "momentum": (lambda v: 0 <= v < 1, "a number in [0, 1)"),
    "lr_gamma": (lambda v: 0 < v <= 1, "a number in (0, 1] (the lr is multiplied by it at each milestone)"),
    "img_size": (lambda v: 8 <= v <= 4096, "an integer in 8..4096 (pixels)"),
    "run_name": (lambda v: v == "" or bool(NAME_RE.match(v)),
                 "letters, digits and . _ - + = , (a folder name under runs/, not starting with '.')"),
}


def _refuse(key, value, allowed: str):
    return ConfigError(f"config key '{key}' = {value!r}: {allowed}")


def check_ranges(cfg) -> None:
    """Every value in RANGES, then the pairs that only fail together."""
    for key, (ok, allowed) in RANGES.items():
        value = getattr(cfg, key)
        if not ok(value):
            raise _refuse(key, value, f"must be {allowed}")
    if cfg.nesterov and cfg.momentum == 0:
        raise _refuse("nesterov", True, "needs momentum > 0 (torch's SGD refuses Nesterov without momentum); "
                                        "set momentum or nesterov=false")
    if cfg.run_dir and Path(cfg.run_dir).exists() and not Path(cfg.run_dir).is_dir():
        raise _refuse("run_dir", cfg.run_dir, "is an existing file; a run directory must be a folder (or absent)")


# extra knob -> (test, what is allowed), whichever method declares it; types are checked first
EXTRA_RANGES = {
    "focal_gamma": (lambda v: v >= 0, "a number >= 0"),
    "ldam_max_m": (lambda v: v > 0, "a number > 0"),
    "ldam_s": (lambda v: v > 0, "a number > 0"),
    "tde_alpha": (lambda v: v >= 0, "a number >= 0 (0 = De-confound)"),
    "tde_tau": (lambda v: v > 0, "a number > 0"),
    "tde_gamma": (lambda v: v >= 0, "a number >= 0"),
    "tde_mu": (lambda v: 0 <= v <= 1, "a number in [0, 1]"),
    "mislas_eps_head": (lambda v: 0 <= v < 1, "a number in [0, 1)"),
    "mislas_eps_tail": (lambda v: 0 <= v < 1, "a number in [0, 1)"),
    "mislas_las_power": (lambda v: v > 0, "a number > 0"),
    "mislas_lr_factor": (lambda v: v > 0, "a number > 0"),
    "balpoe_taus": (lambda v: all(_finite(t) for t in v), "a non-empty list of finite numbers"),
}


def check_extra_pairs(extra: dict) -> None:
    """Knobs that are only wrong together."""
    lo, hi = extra.get("balpoe_tau_min"), extra.get("balpoe_tau_max")
    if lo is not None and hi is not None and lo > hi:
        raise ConfigError(f"extra key 'balpoe_tau_min' = {lo!r} is above balpoe_tau_max = {hi!r}: "
                          "the taus are spaced from min up to max")


def check_extra_value(key: str, value, typ) -> None:
    """One extra knob of the right type: finite if a number, within EXTRA_RANGES."""
    if typ is float and not _finite(value):
        raise ConfigError(f"extra key '{key}' = {value!r}: must be a finite number")
    rule = EXTRA_RANGES.get(key)
    if rule and not rule[0](value):
        raise ConfigError(f"extra key '{key}' = {value!r}: must be {rule[1]}")


# key -> (the runs that ignore it, why); a value the user gave that differs from the default
IGNORED = (
    ("data_root", lambda c: c.dataset == "demo", "the demo set is shipped with ltlab (data/demo)"),
    ("lt_seed", lambda c: c.dataset not in CIFAR, "only cifar10_lt / cifar100_lt draw a long-tailed subset"),
    ("imb_profile", lambda c: c.dataset not in CIFAR,
     "only cifar10_lt / cifar100_lt draw a long-tailed subset"),
    ("imb_factor", lambda c: c.dataset in ("folder", *LISTS),
     "an image folder or a list dataset is taken as it is (already long-tailed)"),
    ("train_list", lambda c: c.dataset not in LISTS, "split lists apply to imagenet_lt, places_lt, inat18, list"),
    ("val_list", lambda c: c.dataset not in LISTS, "split lists apply to imagenet_lt, places_lt, inat18, list"),
    ("test_list", lambda c: c.dataset not in LISTS, "split lists apply to imagenet_lt, places_lt, inat18, list"),
    ("img_size", lambda c: c.dataset in SMALL, "small datasets keep their own image size (32 px for CIFAR)"),
    ("num_workers", lambda c: c.dataset in SMALL, "small datasets are loaded on the device, without workers"),
    ("warmup_min_steps", lambda c: c.warmup_epochs == 0, "there is no warm-up to lengthen (warmup_epochs 0)"),
    ("milestones", lambda c: c.schedule != "multistep", "milestones apply to schedule multistep only"),
    ("lr_gamma", lambda c: c.schedule != "multistep", "lr_gamma applies to schedule multistep only"),
    ("weights", lambda c: bool(c.stage1_run), "a stage-two run starts from its stage one's weights"),
)

# extra knob -> (the runs that ignore it, why)
IGNORED_EXTRA = (
    ("cb_epoch", lambda c, x: c.sampler != "class_balanced", "it sets the class_balanced sampler's epoch"),
    ("cb_per_class", lambda c, x: c.sampler != "class_balanced", "it tunes the class_balanced sampler"),
    ("focal_gamma", lambda c, x: c.method == "cb" and x.get("cb_loss", "softmax") != "focal",
     "method cb uses it with cb_loss focal only"),
    ("balpoe_tau_min", lambda c, x: "balpoe_taus" in x, "balpoe_taus lists every tau"),
    ("balpoe_tau_max", lambda c, x: "balpoe_taus" in x, "balpoe_taus lists every tau"),
    ("mislas_las_power", lambda c, x: x.get("mislas_las_shape", "concave") != "exp",
     "it is the power of mislas_las_shape exp only"),
    ("mislas_stage1", lambda c, x: bool(c.stage1_run), "stage1_run names a finished stage one"),
    ("la_tau", lambda c, x: c.method == "la_posthoc" and x.get("la_tau_from", "val") != "fixed",
     "method la_posthoc uses it with la_tau_from fixed only (val chooses tau on the validation split)"),
    ("drw_beta", lambda c, x: c.method == "ldam_drw" and x.get("drw_epoch", 160) >= c.epochs,
     "the re-weighting starts after drw_epoch, which this run never passes (drw_epoch >= epochs)"),
)
