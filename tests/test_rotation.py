"""BalPoE's RandomRotation(15) as a batched on-device augmentation (ltlab.data.gpu_loader)."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from ltlab.config import ConfigError
from ltlab.data.gpu_loader import CIFAR_MEAN, CIFAR_STD, GpuLoader, rotate_batch
from ltlab.methods import METHODS
from ltlab.methods.resolve import from_dict


def _tv(img: torch.Tensor, angle: float) -> torch.Tensor:
    return TF.rotate(img, angle, interpolation=InterpolationMode.NEAREST, fill=0)


def _pil(img: torch.Tensor, angle: float) -> torch.Tensor:
    """The original pipeline's path: RandomRotation on a PIL image (BalPoE's CIFAR transforms)."""
    pil = TF.rotate(Image.fromarray(img.permute(1, 2, 0).numpy()), angle,
                    interpolation=InterpolationMode.NEAREST, fill=0)
    return torch.from_numpy(np.array(pil)).permute(2, 0, 1)


def test_hand_case_angle_sign_is_counter_clockwise():
    """A marker right of the centre goes to the top at +90 and to the bottom at -90."""
    x = torch.zeros(2, 1, 5, 5, dtype=torch.uint8)
    x[:, 0, 2, 4] = 200
    out = rotate_batch(x, torch.tensor([90.0, -90.0]))
    assert out.dtype == torch.float32
    top = torch.zeros(5, 5)
    top[0, 2] = 200
    assert torch.equal(out[0, 0], top) and torch.equal(out[1, 0], top.flip(0))
    assert torch.equal(out[0].to(torch.uint8), _tv(x[0], 90.0))


def test_zero_fill_and_nearest_values():
    x = torch.full((1, 3, 8, 8), 255, dtype=torch.uint8)
    out = rotate_batch(x, torch.tensor([45.0]))[0]
    assert out[:, 0, 0].eq(0).all() and out[:, -1, -1].eq(0).all() and out[:, 3:5, 3:5].eq(255).all()
    assert set(out.unique().tolist()) == {0.0, 255.0}           # nearest: no blended values
    assert torch.equal(out.to(torch.uint8), _tv(x[0], 45.0))


@pytest.mark.parametrize("h,w", [(32, 32), (6, 10)])
def test_matches_torchvision_tensor_and_pil_rotation(h, w):
    x = torch.randint(0, 256, (7, 3, h, w), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    angles = [15.0, -15.0, 7.3, -2.5, 12.345, 0.0, 90.0]
    out = rotate_batch(x, torch.tensor(angles)).to(torch.uint8)
    for i, a in enumerate(angles):
        assert torch.equal(out[i], _tv(x[i], a)), a
        if h == w:
            assert torch.equal(out[i], _pil(x[i], a)), a


def _loader(rotate, seed=0, channels_last=True):
    x = torch.randint(0, 256, (40, 3, 16, 16), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    y = torch.arange(40) % 4
    return GpuLoader(x, y, 16, train=True, mean=CIFAR_MEAN, std=CIFAR_STD, seed=seed, rotate=rotate,
                     channels_last=channels_last), x


def test_loader_rotates_after_crop_and_flip():
    ld, x = _loader(15.0)
    ld.set_epoch(3)
    order, offsets, flips, angles = (t.clone() for t in ld._plan(3)[:4])
    assert angles.abs().max() <= 15 and angles.min() < -5 and angles.max() > 5
    got = torch.cat([b[0] for b in ld])
    padded = F.pad(x, (4, 4, 4, 4))
    crops = torch.stack([(lambda c: c.flip(-1) if f else c)(padded[i, :, dy:dy + 16, dx:dx + 16])
                         for i, (dy, dx), f in zip(order.tolist(), offsets.tolist(), flips.tolist())])
    ref = torch.stack([_tv(c, a) for c, a in zip(crops, angles.tolist())]).float()
    mean = torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(got, (ref / 255 - mean) / std, atol=1e-5, rtol=1e-5)


def test_rotation_is_seeded_by_seed_and_epoch_and_leaves_other_streams_alone():
    a, _ = _loader(15.0)
    b, _ = _loader(15.0)
    plain, _ = _loader(0.0)
    for ld in (a, b, plain):
        ld.set_epoch(2)
    pa, pb, pp = a._plan(2), b._plan(2), plain._plan(2)
    assert torch.equal(pa[3], pb[3])                           # same (seed, epoch): same angles (resume, DDP)
    assert pp[3] is None
    for k in range(3):                                         # order, offsets, flips as without rotation
        assert torch.equal(pa[k], pp[k])
    assert not torch.equal(pa[3], a._plan(5)[3])
    assert not torch.equal(pa[3], _loader(15.0, seed=1)[0]._plan(2)[3])
    with pytest.raises(Exception, match="rotate"):
        _loader(-1.0)


def test_balpoe_turns_it_on_for_small_images_only():
    balpoe = METHODS["balpoe"]
    assert balpoe.rotation_degrees(from_dict({"method": "balpoe", "dataset": "demo"})) == 15.0
    assert balpoe.rotation_degrees(from_dict({"method": "balpoe", "dataset": "demo",
                                              "extra": {"balpoe_rotation": 0}})) == 0.0
    assert METHODS["ce"].rotation_degrees(from_dict({"method": "ce", "dataset": "demo"})) == 0.0
    assert METHODS["mislas"].rotation_degrees(from_dict({"method": "mislas", "dataset": "demo"})) == 0.0
    with pytest.raises(ConfigError, match="balpoe_rotation"):
        balpoe.check(from_dict({"method": "balpoe", "dataset": "demo", "extra": {"balpoe_rotation": 200}}))
