"""Build the embedded demo set data/demo/ from the CIFAR-10 JPEG zip.

    python scripts/make_demo.py [ZIP] [--out data/demo]

train: CIFAR-10-LT, img_max 500, IF 100, exp profile, chosen by lt_subset(seed 0) over all 5,000
       training images of each class (500, 299, 179, 107, 64, 38, 23, 13, 8, 5 = 1,236 images);
val:   20 images a class, RandomState(1) choice among the training images NOT in that subset;
test:  the first 100 files (by name) of each test class.
The original JPEG bytes are copied (no re-encoding), so the set is an image folder.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import zipfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ltlab.data.counts import lt_counts, lt_subset  # noqa: E402
from ltlab.data.sources import CIFAR10_CLASSES  # noqa: E402

IMG_MAX, IMB_FACTOR, LT_SEED = 500, 100, 0
VAL_PER_CLASS, VAL_SEED = 20, 1
TEST_PER_CLASS = 100

README = """# Demo data set (embedded)

A small CIFAR-10-LT for `dataset: demo`: quick runs, tests and the `make demo` batch on any
machine, with no download. It is an image folder (`train/`, `val/`, `test/`, one folder per
class), read by `ltlab.data.load_demo()`.

| split | images | per class (airplane ... truck, label order) |
|-------|-------:|---------------------------------------------|
| train | {n_train:,} | {train_counts} |
| val   | {n_val:,} | {val_per_class} each |
| test  | {n_test:,} | {test_per_class} each |

How it was made (`scripts/make_demo.py`, deterministic):

- Source: `cifar10-jpeg.zip` (CIFAR-10 re-encoded as JPEG q75; files `train/<class>/0000.jpg`...).
  The original JPEG bytes are copied, not re-encoded, and keep their file names.
- train: the LDAM-DRW long-tailed protocol with img_max {img_max}, imb_factor {imb_factor}, exp profile
  (class i keeps int({img_max} * 0.01^(i/9))): for each class in label order, its 5,000 training files
  (sorted by name) are shuffled with one `numpy.random.RandomState({lt_seed})` and the first n_i kept.
  The shuffle is the same one the full CIFAR-10-LT (img_max 5,000) draws, so this train split is a
  subset of `cifar10_lt` at IF 100 on the same zip.
- val: {val_per_class} images a class drawn with `RandomState({val_seed})` from the class's training files
  that are NOT in the long-tailed subset: a balanced split held out of the CIFAR training data
  (never the test set), for choosing hyperparameters such as tau or the TDE alpha.
- test: the first {test_per_class} files (by name) of each class of the CIFAR-10 test split.

Rebuild (from the repository root):

    python scripts/make_demo.py ../shared/data/cifar10/cifar10-jpeg.zip

Quote results on it as "CIFAR-10-LT demo (JPEG q75, 1,236 train images)"; they are far below
full CIFAR-10-LT numbers, which train on ten times as many images.
"""


def _members(zf: zipfile.ZipFile, split: str) -> dict:
    """{class: sorted file names} of one split in the zip."""
    out = {c: [] for c in CIFAR10_CLASSES}
    for name in zf.namelist():
        parts = name.split("/")
        if len(parts) == 3 and parts[0] == split and parts[1] in out and parts[2]:
            out[parts[1]].append(parts[2])
    for c, files in out.items():
        if not files:
            raise SystemExit(f"make_demo: the zip has no {split}/{c}/ files: expected the cifar10-jpeg.zip layout")
        files.sort()
    return out


def build(zip_path: Path, out: Path) -> dict:
    with zipfile.ZipFile(zip_path) as zf:
        train = _members(zf, "train")
        test = _members(zf, "test")
        files = [(c, f) for c in CIFAR10_CLASSES for f in train[c]]
        labels = np.array([CIFAR10_CLASSES.index(c) for c, _ in files], dtype=np.int64)
        counts = lt_counts(IMG_MAX, len(CIFAR10_CLASSES), IMB_FACTOR, "exp")
        chosen = lt_subset(labels, counts, seed=LT_SEED)
        in_subset = np.zeros(len(files), dtype=bool)
        in_subset[chosen] = True
        rng = np.random.RandomState(VAL_SEED)
        val = []
        for k in range(len(CIFAR10_CLASSES)):
            pool = np.flatnonzero((labels == k) & ~in_subset)
            val.extend(rng.choice(pool, VAL_PER_CLASS, replace=False).tolist())
        plan = {
            "train": [files[i] for i in chosen],
            "val": [files[i] for i in val],
            "test": [(c, f) for c in CIFAR10_CLASSES for f in test[c][:TEST_PER_CLASS]],
        }
        for split in ("train", "val", "test"):
            shutil.rmtree(out / split, ignore_errors=True)
        for split, members in plan.items():
            src_split = "test" if split == "test" else "train"
            for c, f in members:
                dst = out / split / c / f
                dst.parent.mkdir(parents=True, exist_ok=True)
                dst.write_bytes(zf.read(f"{src_split}/{c}/{f}"))
    (out / "README.md").write_text(README.format(
        n_train=len(plan["train"]), n_val=len(plan["val"]), n_test=len(plan["test"]),
        train_counts=", ".join(map(str, counts)), val_per_class=VAL_PER_CLASS, test_per_class=TEST_PER_CLASS,
        img_max=IMG_MAX, imb_factor=IMB_FACTOR, lt_seed=LT_SEED, val_seed=VAL_SEED))
    return {split: len(m) for split, m in plan.items()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("zip", nargs="?", default=str(REPO.parent / "shared" / "data" / "cifar10" / "cifar10-jpeg.zip"),
                   help="cifar10-jpeg.zip (default: ../shared/data/cifar10/cifar10-jpeg.zip from the repo)")
    p.add_argument("--out", default=str(REPO / "data" / "demo"), help="output folder (default: data/demo)")
    args = p.parse_args(argv)
    zip_path = Path(args.zip)
    if not zip_path.is_file():
        print(f"make_demo: zip '{zip_path}' not found: expected cifar10-jpeg.zip (train/<class>/*.jpg, test/<class>/*.jpg)",
              file=sys.stderr)
        return 2
    sizes = build(zip_path, Path(args.out))
    print(f"wrote {args.out}: " + ", ".join(f"{k} {v:,}" for k, v in sizes.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
