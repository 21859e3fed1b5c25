"""Whole splits of small-image datasets as uint8 numpy arrays (N, H, W, 3) + int64 labels.

Two on-disk forms are read, detected automatically: torchvision's pickled CIFAR folders
(``cifar-10-batches-py`` / ``cifar-100-python``) and image folders ``train/<class>/*.jpg`` +
``test/<class>/*`` (+ optional ``val/<class>/*``). Image folders are decoded once and cached as
.npy (see ``ltlab.data.folder``), so a run starts in well under a second after the first.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ltlab.data.errors import DataError
from ltlab.data.folder import decode_cached, scan_image_folder
from ltlab.resources import data_dir

# CIFAR-10's label order (torchvision's batches.meta); an image folder with exactly these class
# names gets these labels, so results on a JPEG copy line up with the pickled original.
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck")
CIFAR_NAMES = ("cifar10", "cifar100")
_PICKLE_DIRS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}
_NUM_CLASSES = {"cifar10": 10, "cifar100": 100}


@dataclass
class Source:
    """A dataset's splits in host memory, images (N, H, W, 3) uint8, labels (N,) int64."""
    class_names: list
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    val_x: np.ndarray | None = None
    val_y: np.ndarray | None = None
    origin: str = ""                 # where it was read from, for logs and error messages

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def project_root() -> Path:
    """The repository folder (the parent of the ``ltlab`` package)."""
    return Path(__file__).resolve().parents[2]


def _layouts(name: str) -> str:
    return f"{_PICKLE_DIRS[name]}/ (torchvision) or train/<class>/*.jpg + test/<class>/*.jpg (image folder)"


# ---------------------------------------------------------------------------------------------
# image folders

def load_image_folder(root, class_order=None) -> Source:
    """Read ``root/train/<class>/*``, ``root/test/<class>/*`` and, when present, ``root/val/<class>/*``.

    Classes are numbered in sorted name order, unless ``class_order`` lists exactly the folder's
    class names, in which case that order gives the labels. Files of a class are read in sorted
    name order, so the same folder always yields the same arrays.
    """
    root = Path(root).expanduser()
    splits = scan_image_folder(root)
    names = sorted(splits["train"])
    if class_order is not None and sorted(class_order) == names:
        names = list(class_order)
    arrays = {}
    for split, by_class in splits.items():
        files, labels = [], []
        for label, cname in enumerate(names):
            for f in by_class.get(cname, ()):
                files.append(f)
                labels.append(label)
        x = decode_cached(files, root / split)
        arrays[split] = (x, np.asarray(labels, dtype=np.int64))
    sizes = {split: arrays[split][0].shape[1:3] for split in arrays}
    if len(set(sizes.values())) > 1:
        raise DataError(f"image folder '{root}' mixes image sizes across splits {sizes}: "
                        f"expected one size (H, W) for train, val and test")
    val = arrays.get("val", (None, None))
    return Source(class_names=names, train_x=arrays["train"][0], train_y=arrays["train"][1],
                  test_x=arrays["test"][0], test_y=arrays["test"][1], val_x=val[0], val_y=val[1],
                  origin=str(root))


def load_demo() -> Source:
    """The embedded CIFAR-10-LT demo set (``data/demo``: train 1,236 at IF 100, val 200, test 1,000)."""

    root = data_dir() / "demo"
    if not (root / "train").is_dir():
        raise DataError(f"demo set not found at '{root}': it ships with the repository "
                        f"(git checkout -- data/demo) or is rebuilt with python scripts/make_demo.py")
    src = load_image_folder(root, class_order=CIFAR10_CLASSES)
    if src.val_x is None:
        raise DataError(f"demo set at '{root}' has no val/ folder: expected train/, val/ and test/ "
                        f"(rebuild with python scripts/make_demo.py)")
    return src


# ---------------------------------------------------------------------------------------------
# CIFAR

def _detect(root: Path, name: str):
    """(kind, folder) for a CIFAR copy at ``root``, or None: kind is 'pickle' or 'folder'."""
    pickle_dir = _PICKLE_DIRS[name]
    if (root / pickle_dir).is_dir():
        return "pickle", root
    if root.name == pickle_dir and root.is_dir():       # the user pointed at the pickle folder itself
        return "pickle", root.parent
    if (root / "train").is_dir() or (root / "test").is_dir():
        return "folder", root
    return None


def _candidates(name: str) -> list[Path]:
    """Where a CIFAR copy is looked for when no data_root is given: $LTLAB_DATA first (the user's
    explicit choice), then the repository's gitignored download folder data/<name>."""
    out = []
    env = os.environ.get("LTLAB_DATA", "")
    if env:
        out += [Path(env).expanduser() / name, Path(env).expanduser()]
    out.append(project_root() / "data" / name)
    return out


def _download(name: str, root: Path) -> None:
    """Fetch the original pickled CIFAR into ``root`` with torchvision (needs network).

    A module-level function so tests can replace it and exercise the no-network path.
    """
    from torchvision import datasets
    cls = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
    root.mkdir(parents=True, exist_ok=True)
    cls(str(root), train=True, download=True)
    cls(str(root), train=False, download=True)


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


def _load_pickles(name: str, root: Path) -> Source:
    from torchvision import datasets
    cls = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
    try:
        train = cls(str(root), train=True, download=False)
        test = cls(str(root), train=False, download=False)
    except RuntimeError as e:      # torchvision's md5 check: missing, partial or re-made files
        raise DataError(f"'{root / _PICKLE_DIRS[name]}' is not a complete copy of torchvision's {name} files "
                        f"({_first_line(e)}): expected the original download, or use an image folder "
                        f"train/<class>/ + test/<class>/ instead") from None
    return Source(class_names=list(train.classes),
                  train_x=np.ascontiguousarray(train.data), train_y=np.asarray(train.targets, dtype=np.int64),
                  test_x=np.ascontiguousarray(test.data), test_y=np.asarray(test.targets, dtype=np.int64),
                  origin=str(root / _PICKLE_DIRS[name]))


def load_cifar(name: str, data_root="") -> Source:
    """CIFAR-10 or CIFAR-100, full train (50,000) and test (10,000) splits.

    ``data_root`` holds torchvision's pickle folder or an image folder (detected). When it is
    empty, ``$LTLAB_DATA/<name>``, ``$LTLAB_DATA`` and ``<repo>/data/<name>`` are searched; if none
    holds a copy, torchvision downloads one into ``<repo>/data/<name>``.
    """
    if name not in CIFAR_NAMES:
        raise DataError(f"CIFAR name {name!r}: expected one of {', '.join(CIFAR_NAMES)}")
    if data_root:
        root = Path(data_root).expanduser()
        if not root.is_dir():
            raise DataError(f"data_root '{root}' is not a folder: expected a folder holding {_layouts(name)}")
        found = _detect(root, name)
        if found is None:
            raise DataError(f"data_root '{root}' holds no {name}: expected {_layouts(name)} inside it")
    else:
        found = next((f for f in map(lambda p: _detect(p, name), _candidates(name)) if f), None)
        if found is None:
            target = project_root() / "data" / name
            try:
                _download(name, target)
            except Exception as e:      # no network, proxy, disk: all end in the same advice
                raise DataError(
                    f"{name} not found and the download into '{target}' failed ({_first_line(e)}): "
                    f"put {_layouts(name)} into '{target}' (e.g. unzip -q cifar10-jpeg.zip -d {target}), "
                    f"or pass data_root=FOLDER, or set LTLAB_DATA=FOLDER") from None
            found = ("pickle", target)
    kind, root = found
    if kind == "pickle":
        return _load_pickles(name, root)
    src = load_image_folder(root, class_order=CIFAR10_CLASSES if name == "cifar10" else None)
    if src.num_classes != _NUM_CLASSES[name]:
        raise DataError(f"image folder '{root}' has {src.num_classes} classes in train/: "
                        f"expected {_NUM_CLASSES[name]} class folders for {name}")
    return src
