"""Copy a CIFAR image folder's protocol splits (the long-tailed training subset, the balanced val
split and the test split) into a new image folder, byte for byte, so that a machine without the
full archive (a lent GPU takes 64 MiB of files; the CIFAR-10 zip alone is 60 MiB) trains on
exactly the protocol's images with `dataset: folder`.

    python scripts/export_lt_folder.py SRC_ROOT DST_ROOT [--imb-factor 100] [--lt-seed 0] [--val-per-class 20]

The splits are the ones `dataset: cifar10_lt` (or cifar100_lt) draws from SRC_ROOT with the same
keys, taken from ltlab.data.build_data itself: train = its train_indices (CIFAR-10 IF 100: 12,386
images, 4,980 ... 50 a class), val/ = its val_indices (20 a class from the images the subset
leaves out), test/ = the whole test split. `dataset: folder` reads val/ as the run's val split.
One difference remains: a folder run normalises by its training set's own channel statistics,
not CIFAR's published ones.
"""
import argparse
import shutil
from pathlib import Path

from ltlab.config import RunConfig
from ltlab.data import build_data
from ltlab.data.folder import scan_image_folder


def export(src: Path, dst: Path, dataset: str = "cifar10_lt", imb_factor: float = 100.0, lt_seed: int = 0,
           val_per_class: int = 20) -> dict:
    """Write dst/{train,val,test}/<class>/ and return {split: images written}."""
    cfg = RunConfig(dataset=dataset, data_root=str(src), imb_factor=imb_factor, lt_seed=lt_seed,
                    val_per_class=val_per_class)
    data = build_data(cfg, "cpu")
    scan = scan_image_folder(src)
    names = data.class_names          # the label order build_data numbered the images in

    def copy(split, cname, path):
        out = dst / split / cname / Path(path).name
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, out)

    # build_data's indices count the training files class by class, each class in scan order
    paths = [(c, p) for c in names for p in scan["train"][c]]
    written = {}
    for split, idx in (("train", data.train_indices), ("val", data.val_indices)):
        for i in idx.tolist():
            copy(split, *paths[i])
        written[split] = len(idx)
    tests = [(c, p) for c in names for p in scan["test"][c]]
    for c, p in tests:
        copy("test", c, p)
    written["test"] = len(tests)
    return written


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("src")
    ap.add_argument("dst")
    ap.add_argument("--dataset", default="cifar10_lt", choices=["cifar10_lt", "cifar100_lt"])
    ap.add_argument("--imb-factor", type=float, default=100.0)
    ap.add_argument("--lt-seed", type=int, default=0)
    ap.add_argument("--val-per-class", type=int, default=20)
    a = ap.parse_args()
    n = export(Path(a.src), Path(a.dst), a.dataset, a.imb_factor, a.lt_seed, a.val_per_class)
    print(f"{n['train']} training, {n['val']} val and {n['test']} test images -> {a.dst}")


if __name__ == "__main__":
    main()
