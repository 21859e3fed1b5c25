"""Data layer: LT counts and the LDAM-DRW subset, image-folder and CIFAR sources, the GPU loader,
the embedded demo set, and (when the shared zip is present) the real CIFAR-10 JPEG folder."""
from __future__ import annotations

import os
import urllib.error
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from ltlab.config import RunConfig
from ltlab.data import (
    CIFAR10_CLASSES,
    CIFAR_MEAN,
    CIFAR_STD,
    DataError,
    GpuLoader,
    build_data,
    carve_val,
    load_cifar,
    load_demo,
    load_image_folder,
    lt_counts,
    lt_subset,
    sources,
    unused_val,
)
from ltlab.data import folder as folder_mod

REPO = Path(__file__).resolve().parents[1]
CIFAR_ZIP = REPO.parent / "shared" / "data" / "cifar10" / "cifar10-jpeg.zip"


@pytest.fixture(autouse=True, scope="module")
def _private_cache(tmp_path_factory):
    """Keep the decode cache of these tests out of ~/.cache (restored after the module)."""
    old = os.environ.get("LTLAB_CACHE")
    os.environ["LTLAB_CACHE"] = str(tmp_path_factory.mktemp("ltlab-cache"))
    yield
    if old is None:
        os.environ.pop("LTLAB_CACHE", None)
    else:
        os.environ["LTLAB_CACHE"] = old


# ---------------------------------------------------------------------------------------------
# counts

@pytest.mark.parametrize("img_max,c,imb,total", [
    (5000, 10, 100, 12406), (5000, 10, 50, 13996), (5000, 10, 10, 20431),
    (500, 100, 100, 10847), (500, 100, 50, 12608), (500, 100, 10, 19573)])
def test_lt_counts_match_published_sizes(img_max, c, imb, total):
    counts = lt_counts(img_max, c, imb)
    assert sum(counts) == total
    assert counts[0] == img_max and counts == sorted(counts, reverse=True)


def test_lt_counts_values_profiles_and_errors():
    assert lt_counts(5000, 10, 100) == [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    assert lt_counts(500, 10, 100) == [500, 299, 179, 107, 64, 38, 23, 13, 8, 5]
    assert lt_counts(5000, 10, 1) == [5000] * 10
    assert lt_counts(500, 100, 1, "step") == [500] * 100
    assert lt_counts(5000, 10, 100, "step") == [5000] * 5 + [50] * 5
    assert lt_counts(500, 5, 10, "step") == [500, 500, 50, 50, 50]
    with pytest.raises(DataError, match="imb_profile"):
        lt_counts(500, 10, 10, "linear")
    with pytest.raises(DataError, match="imb_factor"):
        lt_counts(500, 10, 0.5)
    with pytest.raises(DataError, match="no image"):
        lt_counts(500, 10, 1000)


def test_lt_subset_is_the_ldam_drw_protocol():
    rng = np.random.RandomState(123)
    labels = rng.randint(0, 7, size=3000)
    counts = lt_counts(int(np.bincount(labels).min()), 7, 20)
    ours = lt_subset(labels, counts, seed=0)
    # LDAM-DRW's IMBALANCECIFAR10.gen_imbalanced_data, which drives numpy's global RNG
    state = np.random.get_state()
    try:
        np.random.seed(0)
        ref = []
        for the_class, n in zip(np.unique(labels), counts):
            idx = np.where(labels == the_class)[0]
            np.random.shuffle(idx)
            ref.append(idx[:n])
        ref = np.concatenate(ref)
    finally:
        np.random.set_state(state)
    assert ours.dtype == np.int64
    np.testing.assert_array_equal(ours, ref)
    assert np.bincount(labels[ours]).tolist() == counts
    assert not np.array_equal(lt_subset(labels, counts, seed=1), ours)
    with pytest.raises(DataError, match="class 0"):
        lt_subset(labels, [10_000] + counts[1:])


def test_carve_val():
    labels = np.repeat(np.arange(4), [30, 12, 6, 3])
    idx = lt_subset(labels, [30, 12, 6, 3], seed=0)
    tr, va = carve_val(idx, labels, 2, seed=5)
    assert np.bincount(labels[va]).tolist() == [2, 2, 2, 2]
    assert np.bincount(labels[tr]).tolist() == [28, 10, 4, 1]
    assert not set(tr) & set(va) and set(tr) | set(va) == set(idx)
    assert np.all(np.diff(labels[tr]) >= 0)                      # still class-ordered
    tr2, va2 = carve_val(idx, labels, 2, seed=5)
    np.testing.assert_array_equal(va, va2)
    np.testing.assert_array_equal(tr, tr2)
    assert not np.array_equal(carve_val(idx, labels, 2, seed=6)[1], va)
    tr0, va0 = carve_val(idx, labels, 0, seed=0)
    np.testing.assert_array_equal(tr0, idx)
    assert len(va0) == 0
    with pytest.raises(DataError, match=r"class 3 \(with 3 images\)"):
        carve_val(idx, labels, 3, seed=0)


def test_unused_val_hand_case():
    labels = np.repeat(np.arange(2), [6, 6])
    subset = np.array([0, 1, 6])                                  # class 0 keeps 0, 1; class 1 keeps 6
    train, val = unused_val(labels, subset, 2, seed=3)
    # RandomState(3).permutation over each class's unused pool, in index order, first 2 kept
    rng = np.random.RandomState(3)
    pool0, pool1 = np.array([2, 3, 4, 5]), np.array([7, 8, 9, 10, 11])
    expect = np.concatenate([pool0[rng.permutation(4)[:2]], pool1[rng.permutation(5)[:2]]])
    np.testing.assert_array_equal(val, expect)
    np.testing.assert_array_equal(train, subset)                  # the subset is untouched
    assert not set(val) & set(subset) and np.bincount(labels[val]).tolist() == [2, 2]
    assert not np.array_equal(unused_val(labels, subset, 2, seed=4)[1], val)


def test_unused_val_a_fully_used_head_lends_from_itself_only():
    labels = np.repeat(np.arange(3), [10, 10, 10])
    subset = lt_subset(labels, [10, 4, 1], seed=0)                # class 0: every image in the subset
    train, val = unused_val(labels, subset, 3, seed=1)
    assert np.bincount(labels[val], minlength=3).tolist() == [3, 3, 3]
    assert np.bincount(labels[train], minlength=3).tolist() == [7, 4, 1]   # the tail keeps all it had
    assert set(val[labels[val] > 0]).isdisjoint(subset) and set(train) <= set(subset)
    assert not set(train) & set(val)
    with pytest.raises(DataError, match="class 2 has 0 training images outside"):
        unused_val(np.repeat(np.arange(3), [10, 10, 1]), lt_subset(np.repeat(np.arange(3), [10, 10, 1]),
                   [10, 4, 1], seed=0), 3, seed=1)


# ---------------------------------------------------------------------------------------------
# image folders

def _pixel(label: int, k: int) -> tuple:
    return (40 * label + 10, 7 * k + 3, 200)


def make_tree(root: Path, spec: dict, size=(8, 6), ext=".png") -> Path:
    """spec: {split: {class: n_files}}; file k of class c is one solid colour _pixel(rank, k)."""
    for split, classes in spec.items():
        for rank, cname in enumerate(sorted(classes)):
            d = root / split / cname
            d.mkdir(parents=True, exist_ok=True)
            for k in range(classes[cname]):
                Image.new("RGB", size, _pixel(rank, k)).save(d / f"{k:03d}{ext}")
    return root


def test_image_folder_labels_order_shapes(tmp_path):
    root = make_tree(tmp_path / "f", {"train": {"zebra": 3, "ant": 2, "bee": 4},
                                      "test": {"zebra": 1, "ant": 2, "bee": 1},
                                      "val": {"bee": 2}})
    src = load_image_folder(root)
    assert src.class_names == ["ant", "bee", "zebra"]
    assert src.train_x.shape == (9, 6, 8, 3) and src.train_x.dtype == np.uint8
    assert src.train_y.dtype == np.int64
    assert src.train_y.tolist() == [0, 0, 1, 1, 1, 1, 2, 2, 2]
    assert src.test_y.tolist() == [0, 0, 1, 2] and src.val_y.tolist() == [1, 1]
    # files in name order within a class, PNG decoded exactly
    assert [tuple(src.train_x[i, 0, 0]) for i in (2, 3, 4, 5)] == [_pixel(1, k) for k in range(4)]
    # a listed class order overrides the sorted order when it names exactly the same classes
    src2 = load_image_folder(root, class_order=["zebra", "ant", "bee"])
    assert src2.class_names == ["zebra", "ant", "bee"] and src2.train_y.tolist() == [0, 0, 0, 1, 1, 2, 2, 2, 2]
    assert tuple(src2.train_x[0, 0, 0]) == _pixel(2, 0)


def test_image_folder_jpeg_and_cache(tmp_path, monkeypatch):
    root = make_tree(tmp_path / "j", {"train": {"a": 3, "b": 2}, "test": {"a": 1, "b": 1}}, size=(16, 16), ext=".jpg")
    src = load_image_folder(root)
    assert src.train_x.shape == (5, 16, 16, 3)
    assert np.abs(src.train_x[3].astype(int) - np.array(_pixel(1, 0))).max() <= 3     # JPEG is lossy
    cached = list(Path(os.environ["LTLAB_CACHE"]).glob("j_train-*.npy"))
    assert len(cached) == 1

    def no_decode(paths):
        raise AssertionError("decoded again despite the cache")
    monkeypatch.setattr(folder_mod, "decode_files", no_decode)
    again = load_image_folder(root)
    np.testing.assert_array_equal(again.train_x, src.train_x)
    # a new file changes the key: the folder is decoded again
    Image.new("RGB", (16, 16), (1, 2, 3)).save(root / "train" / "b" / "zzz.jpg")
    with pytest.raises(AssertionError, match="decoded again"):
        load_image_folder(root)


def test_image_folder_errors(tmp_path):
    root = make_tree(tmp_path / "a", {"train": {"x": 1, "y": 1}})
    with pytest.raises(DataError, match=r"no test/ folder: expected .*train/<class>/\*\.jpg"):
        load_image_folder(root)
    with pytest.raises(DataError, match="does not exist"):
        load_image_folder(tmp_path / "nothing")
    root = make_tree(tmp_path / "b", {"train": {"x": 1, "y": 1}, "test": {"x": 1, "y": 1}})
    (root / "train" / "empty").mkdir()
    with pytest.raises(DataError, match=r"class folder '.*empty' holds no image"):
        load_image_folder(root)
    root = make_tree(tmp_path / "c", {"train": {"x": 1, "y": 1}, "test": {"x": 1}})
    with pytest.raises(DataError, match=r"class 'y' is in '.*train' but not in '.*test'"):
        load_image_folder(root)
    root = make_tree(tmp_path / "d", {"train": {"x": 1}, "test": {"x": 1, "w": 1}})
    with pytest.raises(DataError, match=r"class 'w' is in '.*test' but not in '.*train'"):
        load_image_folder(root)
    root = make_tree(tmp_path / "e", {"train": {"x": 2}, "test": {"x": 1}})
    Image.new("RGB", (9, 9)).save(root / "train" / "x" / "big.png")
    with pytest.raises(DataError, match="9x9 .* expected images of one size"):
        load_image_folder(root)
    root = make_tree(tmp_path / "g", {"train": {"x": 1}, "test": {"x": 1}})
    (root / "train" / "x" / "bad.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    with pytest.raises(DataError, match=r"cannot decode image '.*bad\.jpg'"):
        load_image_folder(root)
    assert issubclass(DataError, ValueError)


# ---------------------------------------------------------------------------------------------
# CIFAR discovery and the download path (no network)

@pytest.fixture
def no_project_data(tmp_path, monkeypatch):
    """Point the project's data/ at an empty folder and unset LTLAB_DATA."""
    monkeypatch.setattr(sources, "project_root", lambda: tmp_path / "repo")
    monkeypatch.delenv("LTLAB_DATA", raising=False)
    return tmp_path / "repo" / "data"


def test_cifar_download_failure_explains_layouts(no_project_data, monkeypatch):
    calls = []

    def offline(name, root):
        calls.append((name, root))
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")
    monkeypatch.setattr(sources, "_download", offline)
    with pytest.raises(DataError) as e:
        load_cifar("cifar10")
    msg = str(e.value)
    assert calls == [("cifar10", no_project_data / "cifar10")]
    assert "\n" not in msg
    for part in ("cifar-10-batches-py", "train/<class>/", "test/<class>/", "unzip", "data_root=", "URLError",
                 str(no_project_data / "cifar10")):
        assert part in msg, part
    with pytest.raises(DataError, match="cifar-100-python"):
        load_cifar("cifar100")


def test_cifar_found_via_env_and_data_root(no_project_data, tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "_download", lambda name, root: pytest.fail("tried to download"))
    spec = {"train": {c: 2 for c in CIFAR10_CLASSES}, "test": {c: 1 for c in CIFAR10_CLASSES}}
    make_tree(tmp_path / "store" / "cifar10", spec)
    monkeypatch.setenv("LTLAB_DATA", str(tmp_path / "store"))
    src = load_cifar("cifar10")
    assert src.class_names == list(CIFAR10_CLASSES) and len(src.train_y) == 20 and len(src.test_y) == 10
    monkeypatch.delenv("LTLAB_DATA")
    assert len(load_cifar("cifar10", str(tmp_path / "store" / "cifar10")).train_y) == 20
    # the repo's own download folder is searched too
    make_tree(no_project_data / "cifar10", spec)
    assert load_cifar("cifar10").origin == str(no_project_data / "cifar10")
    with pytest.raises(DataError, match="expected 100 class folders for cifar100"):
        load_cifar("cifar100", str(tmp_path / "store" / "cifar10"))


def test_cifar_bad_roots(tmp_path):
    with pytest.raises(DataError, match="is not a folder"):
        load_cifar("cifar10", str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"holds no cifar10: expected cifar-10-batches-py/"):
        load_cifar("cifar10", str(tmp_path / "empty"))
    (tmp_path / "pk" / "cifar-10-batches-py").mkdir(parents=True)
    with pytest.raises(DataError, match="not a complete copy of torchvision's cifar10 files"):
        load_cifar("cifar10", str(tmp_path / "pk"))
    with pytest.raises(DataError, match="expected one of cifar10, cifar100"):
        load_cifar("svhn", str(tmp_path))


# ---------------------------------------------------------------------------------------------
# GpuLoader (CPU here; the code path is the same on CUDA)

def _data(n=50, h=8, w=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 3, h, w), generator=g, dtype=torch.uint8)
    y = torch.randint(0, 5, (n,), generator=g)
    return x, y


def _normalize(x_u8):
    m = torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1)
    s = torch.tensor(CIFAR_STD).view(1, 3, 1, 1)
    return (x_u8.float() / 255 - m) / s


def test_loader_shapes_len_and_eval_normalisation():
    x, y = _data(50)
    ld = GpuLoader(x, y, 16, train=True, mean=CIFAR_MEAN, std=CIFAR_STD)
    assert len(ld) == 4
    assert len(GpuLoader(x, y, 16, train=True, mean=CIFAR_MEAN, std=CIFAR_STD, drop_last=True)) == 3
    batches = list(ld)
    assert [len(b[1]) for b in batches] == [16, 16, 16, 2]
    xb, yb = batches[0]
    assert xb.shape == (16, 3, 8, 8) and xb.dtype == torch.float32 and yb.dtype == torch.int64
    assert xb.is_contiguous(memory_format=torch.channels_last)
    assert sorted(torch.cat([b[1] for b in batches]).tolist()) == sorted(y.tolist())

    ev = GpuLoader(x, y, 1024, train=False, mean=CIFAR_MEAN, std=CIFAR_STD, channels_last=False)
    (xe, ye), = list(ev)
    assert len(ev) == 1 and xe.is_contiguous()
    torch.testing.assert_close(xe, _normalize(x), atol=1e-5, rtol=1e-5)
    assert torch.equal(ye, y)
    # a constant image maps to (v/255 - mean)/std per channel
    const = torch.full((2, 3, 4, 4), 128, dtype=torch.uint8)
    (xc, _), = list(GpuLoader(const, torch.zeros(2, dtype=torch.long), 8, train=False, mean=CIFAR_MEAN, std=CIFAR_STD))
    for ch in range(3):
        assert xc[:, ch].sub((128 / 255 - CIFAR_MEAN[ch]) / CIFAR_STD[ch]).abs().max() < 1e-5


def test_loader_reproducible_per_seed_and_epoch():
    x, y = _data(64)

    def epoch(seed, e):
        ld = GpuLoader(x, y, 20, train=True, mean=CIFAR_MEAN, std=CIFAR_STD, seed=seed)
        ld.set_epoch(e)
        return [(a.clone(), b.clone()) for a, b in ld]
    a, b = epoch(3, 7), epoch(3, 7)
    assert all(torch.equal(p[0], q[0]) and torch.equal(p[1], q[1]) for p, q in zip(a, b))
    assert not torch.equal(epoch(3, 8)[0][0], a[0][0])
    assert not torch.equal(epoch(4, 7)[0][0], a[0][0])


@pytest.mark.parametrize("channels_last", [True, False])
def test_crop_and_flip_match_padded_reference(channels_last):
    x, y = _data(3, h=6, w=7)
    ld = GpuLoader(x, y, 8, train=True, mean=CIFAR_MEAN, std=CIFAR_STD, pad=4, channels_last=channels_last)
    padded = F.pad(x, (4, 4, 4, 4))                # zeros, as RandomCrop(padding=4) fills
    for dy in range(9):
        for dx in range(9):
            idx = torch.tensor([0, 1, 2])
            off = torch.tensor([[dy, dx]] * 3)
            flips = torch.tensor([False, True, False])
            out = ld.augment(idx, off, flips)
            ref = padded[:, :, dy:dy + 6, dx:dx + 7]
            assert torch.equal(out[0], ref[0]) and torch.equal(out[2], ref[2]), (dy, dx)
            assert torch.equal(out[1], torch.flip(ref[1], dims=[-1])), (dy, dx)
    # hand-made case: shifting down-right by 1 exposes a zero first row and column
    img = torch.arange(1, 1 + 3 * 6 * 7, dtype=torch.uint8).view(1, 3, 6, 7)
    one = GpuLoader(img, torch.zeros(1, dtype=torch.long), 1, train=True, mean=CIFAR_MEAN, std=CIFAR_STD)
    out = one.augment(torch.tensor([0]), torch.tensor([[3, 3]]), torch.tensor([False]))[0]
    assert out[:, 0].eq(0).all() and out[:, :, 0].eq(0).all()
    assert torch.equal(out[:, 1:, 1:], img[0, :, :5, :6])


@pytest.mark.parametrize("channels_last", [True, False])
def test_training_batches_follow_the_epoch_plan(channels_last):
    x, y = _data(40, h=16, w=16)
    ld = GpuLoader(x, y, 16, train=True, mean=CIFAR_MEAN, std=CIFAR_STD, channels_last=channels_last)
    ld.set_epoch(2)
    order, offsets, flips = (t.clone() for t in ld._plan(2)[:3])
    assert sorted(order.tolist()) == list(range(40))
    assert offsets.min() >= 0 and offsets.max() <= 8 and 0 < flips.sum() < 40
    batches = list(ld)
    assert all(b[0].is_contiguous(memory_format=torch.channels_last) == channels_last for b in batches)
    got_x = torch.cat([b[0] for b in batches])
    got_y = torch.cat([b[1] for b in batches])
    padded = F.pad(x, (4, 4, 4, 4))
    ref = []
    for i, (dy, dx), f in zip(order.tolist(), offsets.tolist(), flips.tolist()):
        crop = padded[i, :, dy:dy + 16, dx:dx + 16]
        ref.append(torch.flip(crop, dims=[-1]) if f else crop)
    torch.testing.assert_close(got_x, _normalize(torch.stack(ref)), atol=1e-5, rtol=1e-5)
    assert torch.equal(got_y, y[order])


def test_no_flip_no_pad_is_identity_up_to_order():
    x, y = _data(10)
    ld = GpuLoader(x, y, 10, train=True, mean=CIFAR_MEAN, std=CIFAR_STD, pad=0, flip=False, channels_last=False)
    (xb, yb), = list(ld)
    order = ld._plan(0)[0]
    torch.testing.assert_close(xb, _normalize(x[order]), atol=1e-5, rtol=1e-5)


class FixedSampler:
    def __init__(self, idx):
        self.idx = idx
        self.calls = []

    def indices(self, epoch, generator, device):
        self.calls.append((epoch, type(generator), torch.device(device)))
        return torch.tensor(self.idx, device=device)


def test_sampler_hook_defines_order_and_length():
    x, y = _data(30)
    s = FixedSampler([3, 3, 3, 7, 0] * 5)       # 25 samples, with repeats
    ld = GpuLoader(x, y, 10, train=True, mean=CIFAR_MEAN, std=CIFAR_STD, sampler=s)
    ld.set_epoch(5)
    assert len(ld) == 3
    ys = torch.cat([b for _, b in ld])
    assert torch.equal(ys, y[torch.tensor(s.idx)])
    assert s.calls[0] == (5, torch.Generator, torch.device("cpu"))
    assert len(GpuLoader(x, y, 10, train=True, mean=CIFAR_MEAN, std=CIFAR_STD, sampler=s, drop_last=True)) == 2


def test_loader_rejects_bad_input():
    x, y = _data(5)
    with pytest.raises(DataError, match="uint8 tensor of shape"):
        GpuLoader(x.float(), y, 4, train=True, mean=CIFAR_MEAN, std=CIFAR_STD)
    with pytest.raises(DataError, match="one label per image"):
        GpuLoader(x, y[:3], 4, train=True, mean=CIFAR_MEAN, std=CIFAR_STD)
    with pytest.raises(DataError, match="batch_size"):
        GpuLoader(x, y, 0, train=True, mean=CIFAR_MEAN, std=CIFAR_STD)


# ---------------------------------------------------------------------------------------------
# demo set and build_data

DEMO_COUNTS = [500, 299, 179, 107, 64, 38, 23, 13, 8, 5]


def test_load_demo():
    src = load_demo()
    assert src.class_names == list(CIFAR10_CLASSES)
    assert src.train_x.shape == (1236, 32, 32, 3)
    assert np.bincount(src.train_y).tolist() == DEMO_COUNTS
    assert len(src.val_y) == 200 and np.bincount(src.val_y).tolist() == [20] * 10
    assert len(src.test_y) == 1000 and np.bincount(src.test_y).tolist() == [100] * 10
    # val is held out of the training images, never taken from the test files
    for c in CIFAR10_CLASSES:
        val_names = {p.name for p in (REPO / "data" / "demo" / "val" / c).iterdir()}
        assert not val_names & {p.name for p in (REPO / "data" / "demo" / "train" / c).iterdir()}


def test_build_data_demo():
    b = build_data(RunConfig(dataset="demo"), "cpu")
    assert b.num_classes == 10 and b.img_size == 32 and b.class_names[0] == "airplane"
    assert b.train_counts.dtype == np.int64 and b.train_counts.tolist() == DEMO_COUNTS
    assert b.train_x.shape == (1236, 3, 32, 32) and b.train_x.dtype == torch.uint8
    assert b.train_y.dtype == torch.int64 and b.val_x.shape[0] == 200 and b.test_x.shape[0] == 1000
    assert b.mean == CIFAR_MEAN and b.std == CIFAR_STD
    tl = b.train_loader(128, seed=0)
    assert len(tl) == 10
    xb, yb = next(iter(tl))
    assert xb.shape == (128, 3, 32, 32)
    assert sum(len(yb) for _, yb in b.eval_loader("test")) == 1000
    assert len(b.eval_loader("val", batch_size=64)) == 4
    with pytest.raises(DataError, match="fixed at imb_factor = 100"):
        build_data(RunConfig(dataset="demo", imb_factor=50.0), "cpu")


def test_build_data_folder_and_unavailable(tmp_path):
    root = make_tree(tmp_path / "lt", {"train": {"a": 6, "b": 3, "c": 2}, "test": {"a": 2, "b": 2, "c": 2}})
    b = build_data(RunConfig(dataset="folder", data_root=str(root), val_split="carve", val_per_class=1), "cpu")
    assert b.train_counts.tolist() == [5, 2, 1] and b.val_y.tolist() == [0, 1, 2]
    assert b.img_size == (6, 8) and len(b.mean) == 3 and all(s > 0 for s in b.std)
    b0 = build_data(RunConfig(dataset="folder", data_root=str(root)), "cpu")
    assert b0.val_x is None and b0.train_counts.tolist() == [6, 3, 2]
    with pytest.raises(DataError, match="split 'val' is absent"):
        b0.eval_loader("val")
    with pytest.raises(DataError, match="needs|expected data_root"):
        build_data(RunConfig(dataset="folder"), "cpu")
    with pytest.raises(DataError, match="'imagenet_lt' with data_root = '': set data_root=FOLDER"):
        build_data(RunConfig(dataset="imagenet_lt"), "cpu")


# ---------------------------------------------------------------------------------------------
# the real CIFAR-10 JPEG folder (skipped where the shared zip is absent)

@pytest.fixture(scope="session")
def cifar10_folder(tmp_path_factory):
    if not CIFAR_ZIP.is_file():
        pytest.skip(f"{CIFAR_ZIP} not present")
    root = tmp_path_factory.mktemp("cifar10-jpeg")
    with zipfile.ZipFile(CIFAR_ZIP) as zf:
        zf.extractall(root)
    return root


@pytest.mark.slow
def test_real_cifar10_folder(cifar10_folder):
    src = load_cifar("cifar10", str(cifar10_folder))
    assert src.train_x.shape == (50000, 32, 32, 3) and src.test_x.shape == (10000, 32, 32, 3)
    assert src.class_names == list(CIFAR10_CLASSES)
    assert np.bincount(src.train_y).tolist() == [5000] * 10
    b = build_data(RunConfig(dataset="cifar10_lt", data_root=str(cifar10_folder)), "cpu")
    assert b.test_x.shape[0] == 10000
    # the default validation split: 20 a class from the 37,594 training images outside the subset;
    # class 0 keeps all 5,000 of its images in the subset, so its 20 come from there
    assert b.val_x.shape[0] == 200 and np.bincount(b.val_y.numpy()).tolist() == [20] * 10
    assert b.train_counts.tolist() == [4980, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    ldam = build_data(RunConfig(dataset="cifar10_lt", data_root=str(cifar10_folder), val_split="none"), "cpu")
    assert ldam.train_x.shape[0] == 12406 and ldam.val_x is None
    assert ldam.train_counts.tolist() == [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    assert set(b.train_indices.tolist()) < set(ldam.train_indices.tolist())
    # the demo's training files are a subset of the full IF-100 subset (same per-class shuffle)
    chosen = {(CIFAR10_CLASSES[i // 5000], f"{i % 5000:04d}.jpg") for i in ldam.train_indices.tolist()}
    demo = {(c, p.name) for c in CIFAR10_CLASSES for p in (REPO / "data" / "demo" / "train" / c).iterdir()}
    assert len(demo) == 1236 and demo <= chosen
    bv = build_data(RunConfig(dataset="cifar10_lt", data_root=str(cifar10_folder), val_split="carve",
                              val_per_class=10), "cpu")
    assert bv.train_counts.tolist()[-1] == 40 and bv.val_x.shape[0] == 100


@pytest.mark.slow
def test_exported_folder_holds_the_protocol_splits(cifar10_folder, tmp_path):
    """scripts/export_lt_folder.py: `dataset: folder` on the export sees exactly the images
    `dataset: cifar10_lt` trains, validates and tests on (what a lent GPU gets instead of the zip)."""
    import hashlib
    import importlib.util
    spec = importlib.util.spec_from_file_location("export_lt_folder", REPO / "scripts" / "export_lt_folder.py")
    ex = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ex)
    assert ex.export(cifar10_folder, tmp_path / "lt") == {"train": 12386, "val": 200, "test": 10000}
    lt = build_data(RunConfig(dataset="cifar10_lt", data_root=str(cifar10_folder)), "cpu")
    fo = build_data(RunConfig(dataset="folder", data_root=str(tmp_path / "lt")), "cpu")
    assert fo.class_names == list(CIFAR10_CLASSES) and fo.train_counts.tolist() == lt.train_counts.tolist()

    def images(x, y):   # (label, pixel digest) of every image, as a sorted list: order-free equality
        return sorted((int(c), hashlib.sha1(im.numpy().tobytes()).hexdigest()) for im, c in zip(x, y))
    for split in ("train", "val", "test"):
        ours, exported = ((getattr(d, f"{split}_x"), getattr(d, f"{split}_y")) for d in (lt, fo))
        assert images(*ours) == images(*exported), split


def test_pickled_cifar_layout_loads(tmp_path, monkeypatch):
    """A small cifar-10-batches-py in torchvision's format (pickled dicts of (N, 3072) rows, CHW
    order, 'labels' lists, batches.meta), with torchvision's md5 table pointed at these files."""
    import hashlib
    import pickle

    from torchvision import datasets

    from ltlab.data.sources import load_cifar

    rng = np.random.default_rng(0)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    made = {}

    def dump(fname, obj):
        (folder / fname).write_bytes(pickle.dumps(obj))
        return [fname, hashlib.md5((folder / fname).read_bytes()).hexdigest()]

    entries = {}
    for split, fname, n in (("train", "data_batch_1", 12), ("test", "test_batch", 5)):
        imgs = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, n)]
        made[split] = (imgs, labels)
        entries[split] = dump(fname, {"data": imgs.transpose(0, 3, 1, 2).reshape(n, 3072), "labels": labels})
    meta = dump("batches.meta", {"label_names": names})
    monkeypatch.setattr(datasets.CIFAR10, "train_list", [entries["train"]])
    monkeypatch.setattr(datasets.CIFAR10, "test_list", [entries["test"]])
    monkeypatch.setattr(datasets.CIFAR10, "meta", {"filename": "batches.meta", "key": "label_names", "md5": meta[1]})
    for root in (tmp_path, folder):   # the folder above the pickles, or the pickle folder itself
        src = load_cifar("cifar10", str(root))
        assert src.class_names == names and src.origin == str(folder)
        assert np.array_equal(src.train_x, made["train"][0]) and src.train_y.tolist() == made["train"][1]
        assert np.array_equal(src.test_x, made["test"][0]) and src.test_y.tolist() == made["test"][1]
        assert src.train_x.dtype == np.uint8 and src.train_y.dtype == np.int64
