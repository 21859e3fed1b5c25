"""Real CIFAR-10 (JPEG q75 image folder from ../shared): skipped where the archive is absent."""
import json
import zipfile

import numpy as np
import pytest
from conftest import CIFAR10_ZIP

import ltlab

pytestmark = pytest.mark.skipif(not CIFAR10_ZIP.exists(), reason="../shared/data/cifar10 is not here")


@pytest.fixture(scope="module")
def cifar10_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar10")
    with zipfile.ZipFile(CIFAR10_ZIP) as z:
        z.extractall(root)
    return root


def test_one_epoch_cifar10_lt_if100(cifar10_root, tmp_path):
    run_dir = ltlab.fit({"dataset": "cifar10_lt", "data_root": str(cifar10_root), "imb_factor": 100,
                         "epochs": 1, "eval_every": 1, "device": "cpu", "run_dir": str(tmp_path / "r"),
                         "progress": False})
    s = json.loads((run_dir / "summary.json").read_text())
    z = np.load(run_dir / "predictions" / "test.npz")
    # the LDAM-DRW subset (12,406) less the head's 20 val images: the only class with no image outside it
    assert s["train_size"] == 12386
    assert z["train_counts"].tolist() == [4980, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    v = np.load(run_dir / "predictions" / "val.npz")
    assert np.bincount(v["labels"]).tolist() == [20] * 10 and "ece_ts" in s and s["temperature"] > 0
    assert len(z["labels"]) == 10000 and np.bincount(z["labels"]).tolist() == [1000] * 10
    # chance is 0.10 (std 0.003 over 10,000 images); one epoch at the full lr (a 1-epoch run has no warm-up)
    assert s["top1"] > 0.12
