"""Copy the long-tailed training subset of an image-folder CIFAR (and its test split) into a
new image folder, byte for byte, so a machine without the full archive can train on exactly
the protocol's images with `dataset: folder`.

    python scripts/export_lt_folder.py SRC_ROOT DST_ROOT --num-classes 10 --imb-factor 100

The subset is ltlab's LDAM-DRW protocol (lt_counts + lt_subset with --lt-seed), the same
selection `dataset: cifar10_lt` makes from SRC_ROOT.
"""
import argparse
import shutil
from pathlib import Path

import numpy as np

from ltlab.data.counts import lt_counts, lt_subset
from ltlab.data.folder import scan_image_folder


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("src")
    ap.add_argument("dst")
    ap.add_argument("--imb-factor", type=float, default=100.0)
    ap.add_argument("--lt-seed", type=int, default=0)
    args = ap.parse_args()
    src, dst = Path(args.src), Path(args.dst)
    scan = scan_image_folder(src)
    classes = list(scan["train"])
    paths = [p for c in classes for p in scan["train"][c]]
    labels = np.array([i for i, c in enumerate(classes) for _ in scan["train"][c]])
    img_max = len(labels) // len(classes)
    counts = lt_counts(img_max, len(classes), args.imb_factor)
    keep = lt_subset(labels, counts, seed=args.lt_seed)
    for i in keep:
        out = dst / "train" / classes[labels[i]] / Path(paths[i]).name
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(paths[i], out)
    for c in classes:
        for p in scan["test"][c]:
            out = dst / "test" / c / Path(p).name
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(p, out)
    print(f"{len(keep)} training images ({counts[0]} ... {counts[-1]} a class) and "
          f"{sum(len(v) for v in scan['test'].values())} test images -> {dst}")


if __name__ == "__main__":
    main()
