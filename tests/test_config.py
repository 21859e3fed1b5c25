import pytest
import yaml

from ltlab.config import ConfigError
from ltlab.methods import resolve as C


def test_defaults_and_method_defaults_layering():
    cfg = C.from_dict({"method": "ce", "epochs": 3})
    assert cfg.epochs == 3 and cfg.lr == 0.1 and cfg.dataset == "demo"
    assert cfg.resolved_run_dir().as_posix() == "runs/demo_ce_if100_s0"


@pytest.mark.parametrize("d, needle", [
    ({"epoch": 3}, "unknown config key 'epoch' (did you mean 'epochs'?)"),
    ({"epochs": "ten"}, "'epochs' = 'ten' (str): expected int"),
    ({"epochs": 2.5}, "'epochs' = 2.5 (float): expected int"),
    ({"epochs": True}, "expected int"),
    ({"imb_factor": 0.5}, "'imb_factor' = 0.5: must be >= 1"),
    ({"epochs": 0}, "'epochs' = 0: must be a positive integer"),
    ({"batch_size": -4}, "'batch_size' = -4: must be a positive integer"),
    ({"method": "magic"}, "'method' = 'magic': allowed values are"),
    ({"model": "vgg"}, "'model' = 'vgg': allowed values are"),
    ({"dataset": "mnist"}, "'dataset' = 'mnist': allowed values are"),
    ({"device": "tpu"}, "'device' = 'tpu': allowed values are auto, cpu, cuda"),
    ({"lr": 0}, "'lr' = 0.0: must be > 0"),
    ({"milestones": [160, "x"]}, "milestones"),
    ({"extra": {"nope": 1}}, "unknown extra key 'nope' for method 'ce'"),
])
def test_bad_input_one_clear_line(d, needle):
    with pytest.raises(ConfigError) as e:
        C.from_dict(d)
    msg = str(e.value)
    assert needle in msg and "\n" not in msg


def test_int_accepted_for_float():
    assert C.from_dict({"imb_factor": 50}).imb_factor == 50.0


def test_yaml_and_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump({"epochs": 5, "method": "ce"}))
    cfg = C.load(p, ["epochs=7", "lr=0.05", "milestones=[2, 4]", "run_name=1"])
    assert cfg.epochs == 7 and cfg.lr == 0.05 and cfg.milestones == [2, 4] and cfg.run_name == "1"
    with pytest.raises(ConfigError, match="unknown config key 'lrate'"):
        C.load(p, ["lrate=0.1"])
    with pytest.raises(ConfigError, match="expected key=value"):
        C.load(p, ["epochs"])


def test_yaml_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        C.load(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        C.load(bad)


def test_roundtrip_saved_config(tmp_path):
    cfg = C.from_dict({"epochs": 4, "extra": {}})
    cfg.save(tmp_path / "config.yaml")
    again = C.from_dict(yaml.safe_load((tmp_path / "config.yaml").read_text()))
    assert again == cfg


def test_shipped_train_config_loads():
    from conftest import REPO

    cfg = C.load(REPO / "experiments" / "cifar10_lt_ce.yaml", ["seed=1"])
    assert cfg.dataset == "cifar10_lt" and cfg.method == "ce" and cfg.epochs == 200 and cfg.seed == 1


def test_precedence_method_defaults_then_yaml_then_key_value(tmp_path):
    """tde's recipe differs from the global defaults (batch 256, lr 0.2, weight decay 5e-4,
    lr_gamma 0.01); a YAML file overrides the recipe, key=value overrides the YAML."""
    from ltlab.config import RunConfig
    from ltlab.methods.resolve import load

    glob = RunConfig()
    assert (glob.batch_size, glob.lr, glob.weight_decay, glob.lr_gamma) != (256, 0.2, 5e-4, 0.01)
    (tmp_path / "c.yaml").write_text("method: tde\nlr: 0.05\nweight_decay: 0.001\n")
    cfg = load(tmp_path / "c.yaml", ["lr=0.02", "seed=3"])
    assert cfg.lr == 0.02                                   # key=value beats the YAML
    assert cfg.weight_decay == 0.001                        # the YAML beats the recipe
    assert cfg.batch_size == 256 and cfg.lr_gamma == 0.01   # the recipe beats the global defaults
    assert cfg.seed == 3
    only_yaml = load(tmp_path / "c.yaml")
    assert (only_yaml.lr, only_yaml.weight_decay, only_yaml.batch_size) == (0.05, 0.001, 256)
    # the method given on the command line picks the recipe under a YAML that names another
    (tmp_path / "d.yaml").write_text("method: ce\nweight_decay: 0.003\n")
    tde = load(tmp_path / "d.yaml", ["method=tde"])
    assert tde.method == "tde" and tde.batch_size == 256 and tde.weight_decay == 0.003


def test_a_config_saved_before_a_key_existed_reloads_as_saved(monkeypatch):
    """The archive's stage-two config.yaml files predate warmup_min_steps; with every other key
    present they are saved configs, not partial ones whose unused keys (milestones under a cosine
    schedule) would be refused."""
    from conftest import REPO

    import ltlab.methods.stage2 as stage2
    from ltlab.config import ADDED_LATER
    from ltlab.methods import METHODS
    from ltlab.methods.resolve import from_dict
    saved = yaml.safe_load((REPO / "experiments/results/cifar10_lt_if100/crt/seed0/config.yaml").read_text())
    assert "warmup_min_steps" not in saved and set(ADDED_LATER) == {"warmup_min_steps"}
    monkeypatch.setattr(METHODS["crt"], "check", lambda cfg: None)      # its stage one is not on this machine
    monkeypatch.setattr(stage2, "read_stage1_config", lambda path: {})
    cfg = from_dict(saved)
    assert cfg.schedule == "cosine" and cfg.milestones == [160, 180] and cfg.warmup_min_steps == 100
    partial = {k: saved[k] for k in ("method", "stage1_run", "schedule", "milestones")}
    with pytest.raises(ConfigError, match="'milestones' = \\[160, 180\\] is ignored"):
        from_dict(partial)                                                # typed by a user: refused
