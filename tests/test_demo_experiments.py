"""The demo batches (make demo, demo_analysis) show the long tail: a CE baseline, a training-time
remedy and a post-hoc remedy chained on that CE run, over several seeds, with a schedule that
decays (a constant lr left the demo near chance). Structure only; the numbers are in the README."""
import pytest
from conftest import REPO

from ltlab.methods import METHODS
from ltlab.methods.resolve import from_dict
from ltlab.reports.batch import check_parameters, grid_points, load_experiments
from ltlab.training.schedule import lr_at

DEMOS = ("demo.yaml", "demo_analysis.yaml")


def _config(params: dict):
    """What notebooks/01_train.py builds from the batch parameters (None / "" = the method's default)."""
    keep = {k: v for k, v in params.items() if v not in (None, "") and k != "overrides"}
    return from_dict({**keep, **(params.get("overrides") or {})})


@pytest.mark.parametrize("name", DEMOS)
def test_demo_batch_has_a_baseline_and_two_kinds_of_remedy(name):
    spec = load_experiments(REPO / "experiments" / name)
    points = grid_points(spec)
    for run, params in points:
        check_parameters(REPO / spec["notebook"], params, run)
    assert len(spec["grid"]["seed"]) >= 2     # mean and spread over seeds in the index
    methods = {params["method"] for _, params in points}
    assert "ce" in methods
    trained = [m for m in methods - {"ce"} if not METHODS[m].needs_stage1]
    chained = [(run, params) for run, params in points if METHODS[params["method"]].needs_stage1]
    assert trained and chained
    for run, params in chained:               # each stage two starts from the CE run of its own seed
        seed = f"seed-{params['seed']}"
        assert params["stage1_run"] == f"@ce_{seed}" and run.endswith(seed)
        assert [r for r, _ in points].index(f"ce_{seed}") < [r for r, _ in points].index(run)


@pytest.mark.parametrize("name", DEMOS)
def test_demo_training_runs_decay_their_lr(name):
    spec = load_experiments(REPO / "experiments" / name)
    for run, params in grid_points(spec):
        if METHODS[params["method"]].needs_stage1:
            continue
        cfg = _config(params)
        assert cfg.dataset == "demo"
        peak = max(lr_at(cfg, e) for e in range(1, cfg.epochs + 1))
        assert lr_at(cfg, cfg.epochs) <= peak / 10, f"{run}: lr {lr_at(cfg, cfg.epochs)} at the last epoch"
