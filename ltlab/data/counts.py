"""Long-tailed class counts and index subsets, following the LDAM-DRW CIFAR-LT protocol exactly.

Every published CIFAR-LT number (LDAM-DRW, MiSLAS, BalPoE, ...) is measured on the subset that
LDAM's ``IMBALANCECIFAR10`` draws, so the arithmetic and the order of RNG draws here must match
that code, not merely be "a seeded choice".
"""
from __future__ import annotations

import numpy as np

from ltlab.data.errors import DataError

PROFILES = ("exp", "step")


def lt_counts(img_max: int, num_classes: int, imb_factor: float, profile: str = "exp") -> list[int]:
    """Images kept per class, class 0 first (the head).

    exp:  n_i = int(img_max * (1/IF) ** (i / (C-1)))
    step: the first C//2 classes keep img_max, the other classes int(img_max / IF).
    (LDAM's step code drops the last class when C is odd; here every class gets a count.)
    """
    if num_classes < 1:
        raise DataError(f"num_classes = {num_classes!r}: expected a positive integer")
    if img_max < 1:
        raise DataError(f"img_max = {img_max!r}: expected a positive number of images per class")
    if not imb_factor >= 1:
        raise DataError(f"imb_factor = {imb_factor!r}: expected a number >= 1 (head count / tail count)")
    # LDAM writes the ratio as tail/head (0.01 for IF 100); 1/100 and 0.01 are the same double,
    # so computing it this way reproduces its counts bit for bit.
    ratio = 1.0 / imb_factor
    if profile == "exp":
        if num_classes == 1:
            counts = [int(img_max)]
        else:
            counts = [int(img_max * ratio ** (i / (num_classes - 1.0))) for i in range(num_classes)]
    elif profile == "step":
        head = num_classes // 2
        counts = [int(img_max)] * head + [int(img_max * ratio)] * (num_classes - head)
    else:
        raise DataError(f"imb_profile = {profile!r}: allowed values are {', '.join(PROFILES)}")
    if min(counts) < 1:
        raise DataError(f"imb_factor = {imb_factor:g} with img_max = {img_max} leaves class {counts.index(min(counts))} "
                        f"with no image: expected imb_factor <= {img_max}")
    return counts


def lt_subset(labels, counts, seed: int = 0) -> np.ndarray:
    """Indices of the long-tailed subset: for c = 0..C-1, shuffle the indices of class c with one
    RandomState(seed) and keep the first counts[c]; concatenated in class order.

    This is LDAM-DRW's ``np.random.seed(0)`` + ``np.random.shuffle`` loop with a private RandomState,
    so it does not disturb numpy's global RNG but draws the very same subset.
    """
    labels = np.asarray(labels)
    rng = np.random.RandomState(seed)
    parts = []
    for c, n in enumerate(counts):
        idx = np.where(labels == c)[0]
        if len(idx) < n:
            raise DataError(f"class {c} has {len(idx)} images but the long-tailed profile asks for {n}: "
                            f"expected at least {n} training images of class {c}")
        rng.shuffle(idx)
        parts.append(idx[:n])
    if not parts:
        return np.zeros(0, dtype=np.int64)
    return np.concatenate(parts).astype(np.int64)


def carve_val(indices, labels, per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Hold ``per_class`` images of every class out of ``indices`` for validation.

    The choice is a seeded permutation per class (classes in label order); both outputs keep the
    order the indices had, so a class-ordered subset stays class-ordered.
    """
    indices = np.asarray(indices, dtype=np.int64)
    labels = np.asarray(labels)
    if per_class < 0:
        raise DataError(f"val_per_class = {per_class!r}: expected an integer >= 0")
    if per_class == 0 or len(indices) == 0:
        return indices.copy(), np.zeros(0, dtype=np.int64)
    sub = labels[indices]
    rng = np.random.RandomState(seed)
    held = np.zeros(len(indices), dtype=bool)
    for c in np.unique(sub):
        pos = np.flatnonzero(sub == c)
        if len(pos) - per_class < 1:
            raise DataError(f"val_per_class = {per_class} leaves class {int(c)} (with {len(pos)} images) "
                            f"no training image: expected val_per_class <= {len(pos) - 1}")
        held[pos[rng.permutation(len(pos))[:per_class]]] = True
    return indices[~held], indices[held]


def unused_val(labels, subset, per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, val indices): a balanced validation split from the training images the
    long-tailed subset leaves out, the subset untouched wherever it can be.

    For each class in label order, its full-train indices outside ``subset`` (in index order) are
    permuted with one ``RandomState(seed)`` and the first ``per_class`` kept. A class with fewer
    images outside the subset than ``per_class`` (only the head: CIFAR-LT's class 0 keeps all
    of its images) takes what is outside and the rest from its own images in the subset (the next
    draw of the same RandomState), so the tail never gives up an image. CIFAR-10 at IF 100:
    classes 1-9 draw from the 37,594 images the protocol never uses; class 0 trains on 4,980 of
    its 5,000 (12,386 images in all instead of 12,406).
    """
    labels = np.asarray(labels)
    subset = np.asarray(subset, dtype=np.int64)
    if per_class < 1:
        raise DataError(f"val_per_class = {per_class!r}: expected an integer >= 1")
    outside = np.ones(len(labels), dtype=bool)
    outside[subset] = False
    in_subset = labels[subset]
    rng = np.random.RandomState(seed)
    parts, borrowed = [], []
    for c in range(int(labels.max()) + 1 if len(labels) else 0):
        pool = np.flatnonzero(outside & (labels == c))
        take = pool[rng.permutation(len(pool))[:per_class]]
        short = per_class - len(take)
        if short > 0:
            own = subset[in_subset == c]
            if len(own) - short < 1:
                raise DataError(f"val_per_class = {per_class}: class {c} has {len(pool)} training images outside the "
                                f"long-tailed subset and {len(own)} in it; use a smaller val_per_class")
            extra = own[rng.permutation(len(own))[:short]]
            borrowed.append(extra)
            take = np.concatenate([take, extra])
        parts.append(take)
    val = np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, dtype=np.int64)
    if borrowed:
        subset = subset[~np.isin(subset, np.concatenate(borrowed))]
    return subset, val
