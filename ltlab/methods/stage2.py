"""Two-stage runs: a stage-two recipe starts from a finished stage-one run directory.

The stage-two run has its own run directory and artifacts; it inherits the stage-one run's
data settings (dataset, root, imbalance, subset seed, validation split, backbone) so both
stages see the same training set, and refuses a stage-one run that did not finish.
"""
from __future__ import annotations

from pathlib import Path

from ltlab.config import ConfigError
from ltlab.evaluation.run_dir import RunFileError, read_yaml
from ltlab.methods.base import METHODS, Recipe
from ltlab.methods.resolve import from_dict
from ltlab.models.checkpoints import load_checkpoint

DATA_KEYS = ("dataset", "data_root", "imb_factor", "imb_profile", "lt_seed", "val_split", "val_per_class", "model",
             "train_list", "val_list", "test_list", "img_size")


def read_stage1_config(stage1_run) -> dict:
    path = Path(stage1_run)
    if not path.is_dir():
        raise ConfigError(f"config key 'stage1_run' = '{stage1_run}': no such run directory")
    if not (path / "summary.json").is_file() or not (path / "checkpoint.pt").is_file():
        raise ConfigError(f"config key 'stage1_run' = '{stage1_run}': the stage-one run did not finish "
                          "(no summary.json / checkpoint.pt); finish it first")
    if not (path / "config.yaml").is_file():
        raise ConfigError(f"config key 'stage1_run' = '{stage1_run}': the run directory has no config.yaml "
                          "(it is incomplete): point stage1_run at a run directory ltlab train wrote")
    try:
        return read_yaml(path / "config.yaml")
    except RunFileError as e:
        raise ConfigError(f"config key 'stage1_run' = '{stage1_run}': {e}") from None


class Stage2Recipe(Recipe):
    needs_stage1 = True
    takes_stage1 = True
    stage2_defaults = {"epochs": 10, "schedule": "cosine", "warmup_epochs": 0, "sampler": "class_balanced",
                       "eval_every": 5}

    def defaults(self, user: dict) -> dict:
        d = dict(self.stage2_defaults)
        if user.get("stage1_run"):
            s1 = read_stage1_config(user["stage1_run"])
            d.update({k: s1[k] for k in DATA_KEYS if k in s1})
        return d

    def check(self, cfg) -> None:
        super().check(cfg)
        s1 = read_stage1_config(cfg.stage1_run)
        bad = [k for k in DATA_KEYS if k in s1 and s1[k] != getattr(cfg, k)]
        if bad:
            raise ConfigError(f"stage-two config differs from its stage-one run '{cfg.stage1_run}' in "
                              f"{', '.join(bad)}: both stages must see the same data and backbone")

    def stage1_model(self, cfg, data):
        """The stage-one model with its final weights, on the CPU."""
        s1 = read_stage1_config(cfg.stage1_run)
        try:
            s1cfg = from_dict({k: v for k, v in s1.items()})
        except ConfigError as e:
            raise ConfigError(f"stage-one run '{cfg.stage1_run}' (its config.yaml): {e}") from None
        model = METHODS[s1cfg.method].build_model(s1cfg, data)
        state = load_checkpoint(Path(cfg.stage1_run) / "checkpoint.pt")
        shapes = {k: tuple(v.shape) for k, v in state["model"].items()}
        mine = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        mismatch = [k for k in mine if k in shapes and shapes[k] != mine[k]]
        if mismatch:
            raise ConfigError(f"stage-one checkpoint '{cfg.stage1_run}' does not fit this data: parameter "
                              f"'{mismatch[0]}' has shape {shapes[mismatch[0]]}, expected {mine[mismatch[0]]} "
                              f"({data.num_classes} classes); class-count mismatch between data and checkpoint")
        model.load_state_dict(state["model"])
        return model

    def build_model(self, cfg, data):
        return self.stage1_model(cfg, data)

    def parameters(self, model, cfg):
        for p in model.backbone.parameters():
            p.requires_grad_(False)
        return [p for p in model.head.parameters() if p.requires_grad]

    def train_mode(self, model) -> None:
        model.train()
        model.backbone.eval()   # frozen features: BN running statistics stay as in stage one
