"""Batch augmentation: shapes, determinism, and that a shift is a translation, a flip a mirror."""

import pytest
import torch

from fedkd.augment import Augment, random_shift


def _batch(b=16, c=1, h=8, w=8):
    return torch.randn(b, c, h, w, generator=torch.Generator().manual_seed(1))


def test_identity_when_inactive():
    assert not Augment().active
    x = _batch()
    assert torch.equal(Augment()(x, torch.Generator().manual_seed(0)), x)


def test_same_seed_same_batch_and_shape_kept():
    x = _batch()
    aug = Augment(shift=2, flip=True)
    a = aug(x, torch.Generator().manual_seed(3))
    b = aug(x, torch.Generator().manual_seed(3))
    assert a.shape == x.shape
    assert torch.equal(a, b)
    assert not torch.equal(a, aug(x, torch.Generator().manual_seed(4)))


def test_shift_is_a_translation_of_each_image():
    x = _batch(b=32)
    out = random_shift(x, 2, torch.Generator().manual_seed(0))
    moved = 0
    for img, got in zip(x, out, strict=True):
        # some offset (dy, dx) in [-2, 2]^2 maps the interior of the original onto the output
        matches = [
            (dy, dx)
            for dy in range(-2, 3)
            for dx in range(-2, 3)
            if torch.equal(got[:, 2:6, 2:6], img[:, 2 + dy : 6 + dy, 2 + dx : 6 + dx])
        ]
        assert matches, "output is not a shifted copy of its input"
        moved += matches != [(0, 0)]
    assert moved > 16  # most of 32 images moved (P(no move) = 1/25 each)


def test_flip_mirrors_about_half_the_images():
    x = _batch(b=200)
    out = Augment(flip=True)(x, torch.Generator().manual_seed(0))
    mirrored = torch.tensor([torch.equal(o, i.flip(-1)) for o, i in zip(out, x, strict=True)])
    kept = torch.tensor([torch.equal(o, i) for o, i in zip(out, x, strict=True)])
    assert bool((mirrored | kept).all())
    assert 60 < int(mirrored.sum()) < 140


def test_negative_shift_is_refused():
    with pytest.raises(ValueError, match="shift"):
        Augment(shift=-1)
