"""RunConfig: one flat, validated record of everything a run depends on.

Precedence (lowest to highest): dataclass defaults < the method recipe's defaults
(paper hyperparameters, possibly per dataset) < the user's YAML / notebook parameters <
``key=value`` overrides. Unknown keys and wrong types raise ConfigError naming the key and
what is allowed; papermill only warns about unknown parameters, ltlab refuses them.
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ltlab.config.checks import check_ranges
from ltlab.config.errors import ConfigError
from ltlab.io import atomic_write_text

DATASETS = ("demo", "cifar10_lt", "cifar100_lt", "folder", "imagenet_lt", "places_lt", "inat18", "list")
DEVICES = ("auto", "cpu", "cuda")
SCHEDULES = ("multistep", "cosine", "constant")
PROFILES = ("exp", "step")
AMP = ("auto", "bf16", "off")
# auto: the demo's / a folder's val/ or a benchmark's val list; CIFAR-LT: 'unused', a balanced split
# from the CIFAR training images outside the long-tailed subset (the subset stays the LDAM-DRW one);
# carve: held out of the training subset itself (changes the protocol's counts); none: no split.
VAL_SPLITS = ("auto", "unused", "carve", "none")
# The demo set has 1,236 training images (10 optimizer steps an epoch): the default ResNet-32 at a
# recipe's 200-epoch length is neither what it can support nor a first run's minute. Where a user
# leaves them unset, a demo run trains ResNet-8 for 40 epochs (the recipe's schedule compressed to
# them, ltlab.config.epochs): ce reached 30.5 ± 1.3% top-1 over seeds 0 and 1 (2026-12-04), where
# ResNet-32 for 20 epochs reached 19.9% and for 1 epoch diverged (logits of 1e5).
# 'epochs' is what a user's epochs means for the recipe (MiSLAS: stage one's); a stage-two run on
# a stage one keeps its recipe's own length and its stage one's model.
DEMO_DEFAULTS = {"model": "resnet8", "epochs": 40}
# Keys a config.yaml saved before they existed lacks (key: the date it came): such a file still
# reloads as a saved config (every key present), not as a partial one whose ignored keys are refused.
ADDED_LATER = {"warmup_min_steps": "2026-12-04"}


@dataclass
class RunConfig:
    # --- data -------------------------------------------------------------------------
    dataset: str = "demo"            # demo | cifar10_lt | cifar100_lt | folder | imagenet_lt | places_lt | inat18 | list
    data_root: str = ""              # folder with torchvision's cifar-*-py or train/<class>/ + test/<class>/
    imb_factor: float = 100.0        # head count / tail count (>= 1); 1 = balanced
    imb_profile: str = "exp"         # exp (LDAM-DRW) | step (half the classes at img_max, half at img_max/IF)
    lt_seed: int = 0                 # numpy RandomState seed of the long-tailed subset (LDAM-DRW protocol)
    val_split: str = "auto"          # auto | unused | carve | none: where the validation split comes from (below)
    val_per_class: int = 20          # images a class in an unused / carve validation split (0 = no split)
    # split lists (imagenet_lt | places_lt | inat18 | list): 'relative/path label' lines, plain or .gz,
    # paths relative to data_root; "" = the benchmark's own list (ltlab.data.lists)
    train_list: str = ""             # imagenet_lt / inat18 look for it under data_root (it is not shipped)
    val_list: str = ""               # optional for list; imagenet_lt / places_lt ship theirs
    test_list: str = ""              # required for list; the benchmarks ship theirs
    img_size: int = 224              # list datasets: train RandomResizedCrop(img_size); test Resize(img_size*256/224) + CenterCrop
    num_workers: int = 8             # list datasets: DataLoader worker processes per training process
    # --- model ------------------------------------------------------------------------
    model: str = "resnet32"          # resnet32 | resnet20 | resnet8 | resnet50 | resnext50_32x4d | resnet152
    weights: str = ""                # local torchvision state_dict (.pth) for the backbone; nothing is ever downloaded
    # --- method -----------------------------------------------------------------------
    method: str = "ce"               # see ltlab.methods.METHODS
    stage1_run: str = ""             # run directory of the stage-one run (stage-two methods)
    sampler: str = "instance"        # instance | class_balanced | sqrt | progressive
    mixup_alpha: float = 0.0         # Beta(alpha, alpha) mixup; 0 = off
    # --- optimisation -----------------------------------------------------------------
    epochs: int = 200
    batch_size: int = 128            # images per step (global)
    accum_steps: int = 1             # gradient accumulation: each process runs batch_size/(processes*accum_steps) images a pass
    lr: float = 0.1                  # peak learning rate for batch_size
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 2e-4
    schedule: str = "multistep"      # multistep | cosine | constant, after warm-up
    warmup_epochs: int = 5           # linear warm-up: lr * e / warmup_epochs for epochs e <= warmup_epochs (e from 1)
    warmup_min_steps: int = 100      # optimizer steps: a shorter warm-up ramps per step over this many instead
                                     # (at most half the run); 0 = off. Full-length recipes warm up for longer.
    milestones: list = field(default_factory=lambda: [160, 180])  # multistep: lr *= lr_gamma after each (e > m)
    lr_gamma: float = 0.01           # LDAM-DRW divides by 100 per step; MiSLAS / BalPoE use 0.1
    # --- run ----------------------------------------------------------------------------
    seed: int = 0                    # seeds model init, shuffling, augmentation and mixup
    device: str = "auto"             # auto (cuda if present, else cpu) | cpu | cuda
    amp: str = "auto"                # auto: bf16 autocast on cuda, fp32 on cpu | bf16 | off
    channels_last: bool = True
    sync_bn: bool = True             # under torchrun: BatchNorm statistics over the global batch, as on one GPU
    compile: str = "auto"            # auto (cuda: graphs; cpu: on from 2,000 steps) | on | graphs (+ CUDA graphs) | off
    eval_every: int = 10             # evaluate on the test split every k epochs (and always at the end)
    run_dir: str = ""                # default runs/<run_name>
    run_name: str = ""               # default <dataset>_<method>_if<IF>_s<seed>
    progress: bool = True            # tqdm bars (quiet when TQDM_DISABLE=1)
    extra: dict = field(default_factory=dict)  # method-specific knobs, validated by the recipe

    # --------------------------------------------------------------------------------
    def resolved_run_dir(self) -> Path:
        if self.run_dir:
            return Path(self.run_dir)
        return Path("runs") / (self.run_name or self.default_name())

    def default_name(self) -> str:
        imb = f"{self.imb_factor:g}"
        return f"{self.dataset}_{self.method}_if{imb}_s{self.seed}"

    def to_dict(self) -> dict:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def save(self, path: Path) -> None:
        atomic_write_text(path, yaml.safe_dump(self.to_dict(), sort_keys=False))


FIELDS = {f.name: f for f in dataclasses.fields(RunConfig)}
TYPES = typing.get_type_hints(RunConfig)


def coerce_value(key: str, value, typ):
    """Accept a value of the field's type (ints for floats too); anything else is an error."""
    ok = {
        bool: lambda v: isinstance(v, bool),
        int: lambda v: isinstance(v, int) and not isinstance(v, bool),
        float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        str: lambda v: isinstance(v, str),
        list: lambda v: isinstance(v, (list, tuple)),
        dict: lambda v: isinstance(v, dict),
    }[typ]
    if not ok(value):
        raise ConfigError(f"config key '{key}' = {value!r} ({type(value).__name__}): expected {typ.__name__}")
    if typ is float:
        return float(value)
    if typ is list:
        return list(value)
    return value


def check_choice(key, value, allowed):
    if value not in allowed:
        raise ConfigError(f"config key '{key}' = {value!r}: allowed values are {', '.join(allowed)}")


def validate_fields(cfg: RunConfig) -> RunConfig:
    """Every check that needs no registry (methods, models, samplers: ltlab.methods.resolve)."""
    check_choice("dataset", cfg.dataset, DATASETS)
    check_choice("device", cfg.device, DEVICES)
    check_choice("schedule", cfg.schedule, SCHEDULES)
    check_choice("imb_profile", cfg.imb_profile, PROFILES)
    check_choice("amp", cfg.amp, AMP)
    check_choice("val_split", cfg.val_split, VAL_SPLITS)
    _check_val(cfg)
    check_choice("compile", cfg.compile, ("auto", "on", "graphs", "off"))
    if not cfg.imb_factor >= 1:
        raise ConfigError(f"config key 'imb_factor' = {cfg.imb_factor!r}: must be >= 1 (100 means head/tail = 100)")
    for key in ("epochs", "batch_size", "eval_every"):
        if getattr(cfg, key) <= 0:
            raise ConfigError(f"config key '{key}' = {getattr(cfg, key)!r}: must be a positive integer")
    for key in ("lr",):
        if not getattr(cfg, key) > 0:
            raise ConfigError(f"config key '{key}' = {getattr(cfg, key)!r}: must be > 0")
    for key in ("weight_decay", "mixup_alpha", "momentum", "warmup_epochs", "warmup_min_steps", "val_per_class"):
        if getattr(cfg, key) < 0:
            raise ConfigError(f"config key '{key}' = {getattr(cfg, key)!r}: must be >= 0")
    for key, low in (("accum_steps", 1), ("img_size", 8), ("num_workers", 0)):
        if getattr(cfg, key) < low:
            raise ConfigError(f"config key '{key}' = {getattr(cfg, key)!r}: must be an integer >= {low}")
    if cfg.batch_size % cfg.accum_steps:
        raise ConfigError(f"config key 'batch_size' = {cfg.batch_size} is not divisible by accum_steps = "
                          f"{cfg.accum_steps}: the effective batch must split into equal micro-batches")
    if not all(isinstance(m, int) and not isinstance(m, bool) and m > 0 for m in cfg.milestones):
        raise ConfigError(f"config key 'milestones' = {cfg.milestones!r}: must be a list of positive integers (epochs)")
    check_ranges(cfg)
    check_schedule(cfg)
    return cfg


def check_schedule(cfg) -> None:
    """Refuse a schedule that cannot happen within ``cfg.epochs`` (one line, key and value)."""
    if cfg.warmup_epochs > cfg.epochs:
        raise ConfigError(f"config key 'warmup_epochs' = {cfg.warmup_epochs} is longer than the run "
                          f"(epochs = {cfg.epochs}): the lr would never reach its peak; use 0..{cfg.epochs}")
    if cfg.schedule == "multistep":
        late = [m for m in cfg.milestones if m >= cfg.epochs]
        if late:
            raise ConfigError(f"config key 'milestones' = {cfg.milestones!r}: milestone {late[0]} cannot happen in a "
                              f"{cfg.epochs}-epoch run (the lr changes for epochs e > m); use values in "
                              f"1..{cfg.epochs - 1}, or leave milestones unset to scale the recipe's")
        if list(cfg.milestones) != sorted(cfg.milestones):
            raise ConfigError(f"config key 'milestones' = {cfg.milestones!r}: must be in increasing order")


def _check_val(cfg: RunConfig) -> None:
    """val_split / val_per_class where they apply; a value given where it would be ignored is refused."""
    cifar = cfg.dataset in ("cifar10_lt", "cifar100_lt")
    if cfg.val_split == "unused" and not cifar:
        raise ConfigError(f"config key 'val_split' = 'unused' with dataset '{cfg.dataset}': only cifar10_lt and "
                          f"cifar100_lt have training images outside the long-tailed subset; use auto, carve or none")
    if cfg.val_split == "carve" and not (cifar or cfg.dataset == "folder"):
        raise ConfigError(f"config key 'val_split' = 'carve' with dataset '{cfg.dataset}': carving applies to "
                          f"cifar10_lt, cifar100_lt and folder; this dataset ships its own val split (auto) or none")
    drawn = cfg.val_split in ("unused", "carve") or (cfg.val_split == "auto" and cifar)
    default = FIELDS["val_per_class"].default
    if not drawn and cfg.val_per_class not in (0, default):
        raise ConfigError(f"config key 'val_per_class' = {cfg.val_per_class!r} does not apply to dataset "
                          f"'{cfg.dataset}' with val_split '{cfg.val_split}' (its val split is shipped or absent): "
                          f"drop it, or use val_split=carve (cifar10_lt, cifar100_lt, folder)")


def unknown_key(key: str) -> ConfigError:
    near = difflib.get_close_matches(key, FIELDS, n=1)
    hint = f" (did you mean '{near[0]}'?)" if near else ""
    return ConfigError(f"unknown config key '{key}'{hint}; allowed keys: {', '.join(FIELDS)}")


def parse_override(text: str) -> tuple[str, object]:
    """'key=value' with value parsed as YAML (so 3, 0.1, true, [1, 2] keep their types)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    if key.startswith("extra."):
        return key, value
    if key not in FIELDS:
        raise unknown_key(key)
    # a str field given something YAML reads as a number keeps the literal text (run_name=1)
    if TYPES[key] is str and not isinstance(value, str):
        value = raw
    # YAML 1.1 reads 1e-3 (no dot) as a string; a float field takes Python's reading of it
    if TYPES[key] is float and isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            pass
    return key, value


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML keeps the last of two equal keys without a word; a config that says lr twice is refused."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key '{key}' appears twice (line {key_node.start_mark.line + 1})", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_yaml(path) -> dict:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file '{p}' not found")
    try:
        data = yaml.load(p.read_text(), Loader=_UniqueKeyLoader) or {}
    except UnicodeDecodeError:
        raise ConfigError(f"config file '{p}' is not text (UTF-8): expected YAML of key: value lines") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"config file '{p}' is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file '{p}' must hold a mapping of key: value, got {type(data).__name__}")
    return data
