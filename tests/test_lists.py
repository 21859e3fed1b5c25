"""Split-list datasets (ImageNet-LT, Places-LT, iNaturalist 2018, user lists), their loader,
and the large backbones with method heads.

The real-list tests read the copies shipped in data/splits (always present) and check them
against ../shared/data/splits where that exists.
"""
import gzip
import json

import numpy as np
import pytest
import torch
from conftest import SHARED, image_tree

import ltlab
from ltlab.config import ConfigError, RunConfig
from ltlab.data import DataError, build_data
from ltlab.data.list_bundle import ListBundle
from ltlab.data.list_loader import sample_seeds
from ltlab.data.lists import SPLITS_DIR, benchmark_lists, class_counts, read_list, shift_subsets_for_run, shot_list
from ltlab.evaluation.metrics import shot_groups

SHIPPED = {"ImageNet_LT": 14, "Places_LT": 3, "Places_LT_v2": 14, "iNaturalist18": 6}


def _groups(counts):
    return np.bincount(shot_groups(counts), minlength=3).tolist()


# ---------------------------------------------------------------------------- real lists
def test_shipped_lists_are_the_shared_ones():
    for folder, n in SHIPPED.items():
        files = sorted(p for p in (SPLITS_DIR / folder).iterdir() if p.name != "README.md")
        assert len(files) == n, folder
        ref = SHARED / "data" / "splits" / folder
        if ref.is_dir():
            for f in files:
                assert f.read_bytes() == (ref / f.name).read_bytes(), f.name


@pytest.mark.parametrize("folder", ["Places_LT", "Places_LT_v2"])
def test_places_lt_train_counts(folder):
    train = read_list(SPLITS_DIR / folder / "Places_LT_train.txt.gz")
    counts = class_counts(train.labels)
    assert len(train) == 62_500 and len(counts) == 365
    assert counts.max() == 4980 and counts.min() == 5
    assert _groups(counts) == [131, 163, 71]


def test_places_lt_benchmark_splits(tmp_path):
    lists = benchmark_lists("places_lt", tmp_path)
    assert class_counts(lists["val"].labels).tolist() == [20] * 365
    assert class_counts(lists["test"].labels).tolist() == [100] * 365
    assert lists["train"].path(0).startswith("train/")
    (tmp_path / "data_256").mkdir()          # the official small-image layout picks the v2 spelling
    v2 = benchmark_lists("places_lt", tmp_path)
    assert v2["train"].path(0).startswith("data_256/")
    assert np.array_equal(class_counts(v2["train"].labels), class_counts(lists["train"].labels))


def test_imagenet_lt_val_test_and_shot_list():
    val = read_list(SPLITS_DIR / "ImageNet_LT" / "ImageNet_LT_val.txt.gz")
    test = read_list(SPLITS_DIR / "ImageNet_LT" / "ImageNet_LT_test.txt.gz")
    assert len(val) == 20_000 and class_counts(val.labels).tolist() == [20] * 1000
    assert len(test) == 50_000 and class_counts(test.labels).tolist() == [50] * 1000
    shots = shot_list("imagenet_lt")
    assert shots.shape == (3, 1000) and shots.sum(1).tolist() == [385, 479, 136]
    assert (shots.sum(0) == 1).all()        # every class in exactly one group


def test_inat18_val():
    val = read_list(SPLITS_DIR / "iNaturalist18" / "iNaturalist18_val.txt.gz")
    counts = class_counts(val.labels)
    assert len(val) == 24_426 and len(counts) == 8142 and (counts == 3).all()


def test_test_shift_subsets_of_the_benchmarks(tmp_path):
    sub = shift_subsets_for_run({"dataset": "imagenet_lt", "data_root": str(tmp_path)})
    assert list(sub)[0] == "forward50" and list(sub)[-1] == "backward50" and len(sub) == 11
    assert len(sub["forward50"]) == 12_058 and sorted(sub["uniform"].tolist()) == list(range(50_000))
    inat = shift_subsets_for_run({"dataset": "inat18"})
    assert list(inat) == ["forward3", "forward2", "uniform", "backward2", "backward3"]
    places = shift_subsets_for_run({"dataset": "places_lt"})   # v1 test list, v2 shift lists: by file name
    # SADE's forward50 of a 100-per-class test set keeps int(100 * 0.02^(c/364)) of class c
    assert len(places["forward50"]) == sum(int(100 * (1 / 50) ** (c / 364)) for c in range(365)) == 8989
    assert len(places["uniform"]) == 36_500
    assert shift_subsets_for_run({"dataset": "cifar10_lt"}) == {}


def _fake_imagenet_lt_train(path, shots):
    """A list with the published class groups and 115,846 lines (image paths are made up)."""
    counts = np.where(shots[0], 150, np.where(shots[1], 50, 10))
    extra = 115_846 - counts.sum()
    counts[np.flatnonzero(shots[0])] += extra // shots[0].sum()
    counts[np.flatnonzero(shots[0])[0]] += 115_846 - counts.sum()
    with gzip.open(path, "wt") as f:
        for c, n in enumerate(counts):
            f.writelines(f"train/n{c:08d}/img_{i}.JPEG {c}\n" for i in range(n))
    return counts


def test_imagenet_lt_train_list_from_data_root(tmp_path):
    with pytest.raises(DataError, match=r"ImageNet_LT_train.txt.*115,846.*train_list=PATH"):
        benchmark_lists("imagenet_lt", tmp_path)
    shots = shot_list("imagenet_lt")
    counts = _fake_imagenet_lt_train(tmp_path / "ImageNet_LT_train.txt.gz", shots)
    lists = benchmark_lists("imagenet_lt", tmp_path)
    assert np.array_equal(class_counts(lists["train"].labels, 1000), counts)
    assert len(lists["val"]) == 20_000 and len(lists["test"]) == 50_000
    # a list with other class groups is not ImageNet-LT: refused, pointing at dataset 'list'
    bad = tmp_path / "other.txt"
    bad.write_text("".join(f"a/{i}.jpg {i % 1000}\n" for i in range(115_846)))
    with pytest.raises(DataError, match="shot list.*dataset: list"):
        benchmark_lists("imagenet_lt", tmp_path, train_list="other.txt")


def test_inat18_without_train_list_says_what_to_do(tmp_path):
    with pytest.raises(DataError, match=r"iNaturalist18_train.txt.*437,513.*train_val2018"):
        build_data(RunConfig(dataset="inat18", data_root=str(tmp_path)), "cpu")


def test_read_list_formats_and_errors(tmp_path):
    (tmp_path / "a.txt").write_text("x/one image.jpg 3\n\nx/b.jpg 0\n")
    lst = read_list(tmp_path / "a.txt")
    assert [lst.path(0), lst.path(1)] == ["x/one image.jpg", "x/b.jpg"] and lst.labels.tolist() == [3, 0]
    with gzip.open(tmp_path / "b.list", "wt") as f:     # gzip told by content, not by the name
        f.write("p.jpg 1\n")
    assert read_list(tmp_path / "b.list").labels.tolist() == [1]
    for text, needle in (("p.jpg\n", "line 1"), ("p.jpg -1\n", "label >= 0"), ("\n", "no 'path label'")):
        (tmp_path / "bad.txt").write_text(text)
        with pytest.raises(DataError, match=needle):
            read_list(tmp_path / "bad.txt")
    with pytest.raises(DataError, match="not found"):
        read_list(tmp_path / "missing.txt")


# ---------------------------------------------------------------------------- tiny image tree
@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """3 classes x 4 training images of 40x40 (plus val and test), with list files."""
    return image_tree(tmp_path_factory.mktemp("tree"), (("train", 4), ("val", 1), ("test", 2)))


def _list_cfg(root, **kw):
    cfg = {"dataset": "list", "data_root": str(root), "train_list": "train.txt", "val_list": "val.txt",
           "test_list": "test.txt", "img_size": 32, "num_workers": 0, "device": "cpu"}
    cfg.update(kw)
    return cfg


def test_list_fit_trains_a_step(tree, tmp_path):
    """dataset list, torchvision ResNet-50 at 32x32: one optimizer step, then the run artifacts."""
    run = ltlab.fit(_list_cfg(tree, model="resnet50", epochs=1, batch_size=12, warmup_epochs=0, lr=0.01,
                              run_dir=str(tmp_path / "run"), progress=False))
    s = json.loads((run / "summary.json").read_text())
    assert s["train_size"] == 12 and s["num_classes"] == 3
    z = np.load(run / "predictions" / "test.npz")
    assert z["logits"].shape == (6, 3) and z["features"].shape == (6, 2048)
    assert z["labels"].tolist() == [0, 0, 1, 1, 2, 2] and z["train_counts"].tolist() == [4, 4, 4]
    assert np.load(run / "predictions" / "val.npz")["labels"].tolist() == [0, 1, 2]


def test_list_bundle_and_loaders(tree):
    data = build_data(RunConfig(**_list_cfg(tree, channels_last=True)), "cpu")
    assert isinstance(data, ListBundle) and data.num_classes == 3 and data.class_names == ["c0", "c1", "c2"]
    assert data.train_counts.tolist() == [4, 4, 4] and data.test_y.tolist() == [0, 0, 1, 1, 2, 2]
    loader = data.train_loader(5, seed=3)
    loader.set_epoch(1)
    batches = list(loader)
    assert len(loader) == len(batches) == 3 and [len(y) for _, y in batches] == [5, 5, 2]
    x, _ = batches[0]
    assert x.dtype == torch.float32 and x.shape == (5, 3, 32, 32)
    assert x.is_contiguous(memory_format=torch.channels_last)
    assert -3 < float(x.mean()) < 3            # normalised, not 0..255
    loader.set_epoch(2)
    assert sorted(torch.cat([y for _, y in loader]).tolist()) == [0] * 4 + [1] * 4 + [2] * 4
    ev = [y.tolist() for _, y in data.eval_loader("test", batch_size=4)]
    assert ev == [[0, 0, 1, 1], [2, 2]]        # fixed order
    assert [y.tolist() for _, y in data.eval_loader("test", batch_size=4, shard=(1, 2))] == [[1, 2, 2]]


def test_augmentation_depends_on_seed_epoch_position_only(tree):
    """Workers or not, and one process or two: the same image at the same place of the epoch's
    order gets the same crop, flip and jitter."""
    data = build_data(RunConfig(**_list_cfg(tree)), "cpu")
    one = data.train_loader(4, seed=0)
    one.set_epoch(3)
    ref = torch.cat([x for x, _ in one])
    data.num_workers = 2
    workers = data.train_loader(4, seed=0)
    workers.set_epoch(3)
    assert torch.equal(torch.cat([x for x, _ in workers]), ref)
    shares = []
    for rank in (0, 1):
        part = data.train_loader(2, seed=0, rank=rank, world=2)
        part.set_epoch(3)
        shares.append(torch.cat([x for x, _ in part]))
    assert torch.equal(torch.stack(shares, 1).reshape(ref.shape), ref)   # rank r holds positions r, r+2, ...
    assert sample_seeds(0, 3, [5]).tolist() != sample_seeds(0, 4, [5]).tolist()


def test_list_errors_are_clear(tree, tmp_path):
    with pytest.raises(DataError, match="set train_list and test_list"):
        build_data(RunConfig(dataset="list", data_root=str(tree)), "cpu")
    with pytest.raises(DataError, match="data_root = ''"):
        build_data(RunConfig(dataset="places_lt"), "cpu")
    with pytest.raises(DataError, match=r"first of the train list.*train/<class>"):
        build_data(RunConfig(dataset="places_lt", data_root=str(tmp_path)), "cpu")
    with pytest.raises(DataError, match="'train_list' = 'nope.txt': no such file"):
        build_data(RunConfig(**_list_cfg(tree, train_list="nope.txt")), "cpu")
    with pytest.raises(ConfigError, match="accum_steps"):
        ltlab.methods.resolve.from_dict({"batch_size": 10, "accum_steps": 3})


# ---------------------------------------------------------------------------- large backbones
@pytest.mark.parametrize("method, key", [("ce", "logits"), ("tde", "tde_logits"), ("enmos", "gate"),
                                         ("ldam_drw", "logits")])
def test_resnet50_with_each_head(method, key):
    """The linear, cosine, causal-norm and mixture heads run on the torchvision ResNet-50
    (at 32x32 to stay fast); the expert model is tested below."""
    from ltlab.methods import METHODS

    if method not in METHODS:
        pytest.skip(f"method {method} not registered")
    cfg = ltlab.methods.resolve.from_dict({"method": method, "model": "resnet50"})
    data = type("D", (), {"num_classes": 5, "train_counts": np.array([9, 5, 3, 2, 1])})()
    model = METHODS[method].build_model(cfg, data).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 32, 32))
    assert key in out and METHODS[method].inference(out).shape == (2, 5)


def test_expert_resnet_layout_and_local_weights(tmp_path):
    import torchvision

    from ltlab.methods.losses_multi import BalPoELoss
    from ltlab.models import load_weights
    from ltlab.models.experts_resnet import ExpertResNet

    m = ExpertResNet("resnet50", 4, experts=2)
    names = {n.split(".")[0] for n, _ in m.named_parameters()}
    assert names == {"conv1", "bn1", "layer1", "layer2", "experts"}     # layer3/4 only inside experts
    assert {n.split(".")[2] for n, _ in m.named_parameters() if n.startswith("experts.")} == {"layer3", "layer4",
                                                                                           "head"}
    out = m(torch.randn(2, 3, 32, 32))
    assert out["expert_logits"].shape == (2, 2, 4) and out["features"].shape == (2, 4096)
    assert torch.allclose(out["logits"], out["expert_logits"].mean(0))
    BalPoELoss(np.array([9, 5, 3, 1]), [0.0, 2.0])(out, torch.tensor([0, 3])).backward()   # BalPoE's loss fits
    assert m.layer1[0].conv1.weight.grad is not None
    ref = torchvision.models.resnet50(weights=None)
    torch.save(ref.state_dict(), tmp_path / "r50.pth")
    load_weights(m, str(tmp_path / "r50.pth"))
    assert torch.equal(m.layer2[0].conv1.weight, ref.layer2[0].conv1.weight)
    assert all(torch.equal(e.layer4[2].conv3.weight, ref.layer4[2].conv3.weight) for e in m.experts)
    with pytest.raises(ConfigError, match="no such file.*never downloads"):
        load_weights(m, str(tmp_path / "absent.pth"))
    with pytest.raises(ConfigError, match="does not fit"):
        load_weights(ltlab.models.build_model("resnext50_32x4d", 4), str(tmp_path / "r50.pth"))


def test_eval_loader_normalises_with_the_bundle_mean_and_std(tree):
    """(x/255 - mean)/std of torchvision's Resize + CenterCrop + PILToTensor, image by image."""
    from PIL import Image

    from ltlab.data.list_loader import eval_transform

    data = build_data(RunConfig(**_list_cfg(tree, channels_last=False)), "cpu")
    x, _ = next(iter(data.eval_loader("test", batch_size=6)))
    mean = torch.tensor(data.mean).view(3, 1, 1)
    std = torch.tensor(data.std).view(3, 1, 1)
    for i, line in enumerate((tree / "test.txt").read_text().splitlines()):
        raw = eval_transform(32)(Image.open(tree / line.split()[0]).convert("RGB")).float()
        assert torch.allclose(x[i], (raw / 255 - mean) / std, atol=1e-5), line


def test_missing_image_read_by_workers_is_one_line(tree, tmp_path, capsys):
    """A list whose middle image is gone, read by 2 DataLoader workers: the catalogue's one line
    naming the file, exit 2 (not torch's 'Caught DataError in DataLoader worker process' trace)."""
    import shutil

    from ltlab.cli import main

    root = shutil.copytree(tree, tmp_path / "tree")
    (root / "train" / "c1" / "2.jpg").unlink()
    args = ["train", "dataset=list", f"data_root={root}", "train_list=train.txt", "test_list=test.txt",
            "val_list=val.txt", "img_size=32", "num_workers=2", "device=cpu", "model=resnet32", "epochs=1",
            "batch_size=4", "progress=false", f"run_dir={tmp_path / 'run'}"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Caught" not in err and "Traceback" not in err, err
    assert err.startswith("ltlab: error: image '") and "train/c1/2.jpg' unreadable (FileNotFoundError" in err


@pytest.mark.parametrize("name, size, classes", [("imagenet_lt", "115,846", 1000), ("inat18", "437,513", 8142)])
def test_benchmark_train_list_of_the_wrong_size_is_refused(tmp_path, capsys, name, size, classes):
    (tmp_path / "small.txt").write_text("".join(f"train/{i}.jpg {i % 10}\n" for i in range(20)))
    with pytest.raises(DataError, match=rf"has 20 images in \d+ classes, expected {size} in {classes}; "
                                        "for another list use dataset: list"):
        benchmark_lists(name, tmp_path, train_list="small.txt")
    from ltlab.cli import main

    assert main(["train", f"dataset={name}", f"data_root={tmp_path}", "train_list=small.txt", "device=cpu",
                 f"run_dir={tmp_path / 'run'}", "progress=false"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"expected {size} in {classes}" in err and "small.txt" in err
    assert not (tmp_path / "run" / "checkpoint.pt").exists()
