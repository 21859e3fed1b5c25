import os
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")
os.environ.setdefault("TQDM_DISABLE", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
CIFAR10_ZIP = SHARED / "data" / "cifar10" / "cifar10-jpeg.zip"


def demo_config(run_dir, **kw):
    cfg = {"dataset": "demo", "epochs": 2, "eval_every": 1, "device": "cpu", "run_dir": str(run_dir),
           "progress": False}
    cfg.update(kw)
    return cfg


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory):
    """One finished 2-epoch CE run on the demo set, shared by tests that only read it."""
    import ltlab

    run_dir = tmp_path_factory.mktemp("runs") / "demo_ce"
    return ltlab.fit(demo_config(run_dir))
