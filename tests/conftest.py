import os
import shutil
from pathlib import Path

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")
os.environ.setdefault("TQDM_DISABLE", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
CIFAR10_ZIP = SHARED / "data" / "cifar10" / "cifar10-jpeg.zip"


# The longest test files first (measured with --durations, 2 workers), so that `make test`'s
# two xdist workers (--dist loadfile --no-loadscope-reorder: xdist would otherwise sort files by
# test count) do not end on one long file while the other idles.
SLOW_FIRST = ("test_reliability", "test_methods_e2e", "test_distributed", "test_real_data", "test_slurm",
              "test_compile", "test_batch", "test_heldout_fits", "test_keys_reach", "test_schedule", "test_browser",
              "test_widgets", "test_wheel", "test_loop_hooks")


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(SLOW_FIRST)}
    items.sort(key=lambda item: rank.get(Path(str(item.fspath)).stem, len(rank)))   # stable: file order kept


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


def small_demo(monkeypatch, *, train_cap=None, train_every=1, test_cap=None, val_cap=None):
    """Shrink `dataset: demo` inside ltlab.fit for end-to-end tests of methods: per class keep
    every `train_every`-th training image (up to `train_cap`), the first `test_cap` test and
    `val_cap` val images. The code path is the real one; only the data is smaller."""
    import dataclasses

    import numpy as np
    import torch

    import ltlab.training.loop as T

    real = T.build_data

    def keep(y, every=1, cap=None):
        y = y.cpu().numpy()
        return torch.from_numpy(np.concatenate([np.flatnonzero(y == c)[::every][:cap] for c in np.unique(y)]))

    def small(cfg, device):
        b = real(cfg, device)
        tr, te = keep(b.train_y, train_every, train_cap), keep(b.test_y, cap=test_cap)
        kw = dict(train_x=b.train_x[tr], train_y=b.train_y[tr], test_x=b.test_x[te], test_y=b.test_y[te],
                  train_counts=np.bincount(b.train_y[tr].cpu().numpy(), minlength=b.num_classes).astype(np.int64))
        if b.val_x is not None and val_cap is not None:
            va = keep(b.val_y, cap=val_cap)
            kw.update(val_x=b.val_x[va], val_y=b.val_y[va])
        return dataclasses.replace(b, **kw)

    monkeypatch.setattr(T, "build_data", small)


def tiny_folder(root, train=(24, 16, 12, 9, 7, 5, 4, 3, 2, 2), val=2, test=5):
    """A long-tailed image folder (train/val/test) of original demo JPEGs, 84 training images."""
    demo = REPO / "data" / "demo"
    for split, counts in (("train", train), ("val", [val] * 10), ("test", [test] * 10)):
        for c, cdir in enumerate(sorted((demo / split).iterdir())):
            (root / split / cdir.name).mkdir(parents=True)
            for f in sorted(cdir.iterdir())[: counts[c]]:
                shutil.copyfile(f, root / split / cdir.name / f.name)
    return root


def image_tree(root, per_split=(("train", 4), ("test", 3))):
    """3 classes of 40x40 JPEGs (class c is brighter with c) and a `path label` list per split."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, per in per_split:
        lines = []
        for c in range(3):
            (root / split / f"c{c}").mkdir(parents=True)
            for i in range(per):
                img = (rng.random((40, 40, 3)) * 60 + 80 * c).astype(np.uint8)
                Image.fromarray(img).save(root / split / f"c{c}" / f"{i}.jpg")
                lines.append(f"{split}/c{c}/{i}.jpg {c}\n")
        (root / f"{split}.txt").write_text("".join(lines))
    return root


def patch_execute(monkeypatch, fn):
    """Replace papermill's notebook execution everywhere a batch calls it: grid points
    (notebook_run), the comparison (batch) and archived runs' pages (batch_runs)."""
    import ltlab.reports.batch as B
    import ltlab.reports.batch_runs as R
    import ltlab.reports.notebook_run as N

    for module in (B, N, R):
        monkeypatch.setattr(module, "execute", fn)


def synth_logits(correct, labels, num_classes, rng):
    """Logits whose argmax is the label exactly where ``correct`` (otherwise another class); correct
    images get larger margins on average, so MSP separates them (AUROC > 0.5) without being exact.
    Shared by the interval, paired and reweighting tests."""
    n = labels.size
    z = rng.normal(size=(n, num_classes))
    other = (labels + rng.integers(1, num_classes, size=n)) % num_classes
    top = np.where(correct, labels, other)
    z[np.arange(n), top] = z.max(axis=1) + rng.exponential(np.where(correct, 1.5, 0.7))
    return z


def softmax(z):
    """By hand, independent of ltlab.evaluation.metrics.softmax."""
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)
