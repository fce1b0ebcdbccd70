"""Batch-wise augmentation: crop after zero padding is a per-sample shift, flip flips, no-op is identity."""

from __future__ import annotations

import pytest
import torch

from bench.core.augment import augment
from bench.core.data import Augmentation


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def images(b: int = 16, c: int = 3, size: int = 8) -> torch.Tensor:
    return torch.rand(b, c, size, size, generator=gen(99)) + 0.01  # no zeros: zero fill is visible


def shifted(x: torch.Tensor, p: int, dy: int, dx: int) -> torch.Tensor:
    """One image ``[C, H, W]`` seen through an ``H×W`` window at (dy, dx) of its zero-padded copy, pixel by pixel."""
    c, h, w = x.shape
    out = torch.zeros_like(x)
    for i in range(h):
        for j in range(w):
            src_i, src_j = i + dy - p, j + dx - p
            if 0 <= src_i < h and 0 <= src_j < w:
                out[:, i, j] = x[:, src_i, src_j]
    return out


@pytest.mark.parametrize("channels", [1, 3])
def test_no_op_augmentation_is_identity(channels):
    x = images(c=channels)
    out = augment(x, Augmentation(), gen(0))
    assert torch.equal(out, x)


@pytest.mark.parametrize("p", [1, 2, 4])
def test_crop_is_a_shift_with_zero_fill(p):
    x = images()
    out = augment(x, Augmentation(crop_padding=p), gen(0))
    replay = gen(0)  # the offsets: one per sample for rows, then one per sample for columns
    dy = torch.randint(0, 2 * p + 1, (len(x),), generator=replay)
    dx = torch.randint(0, 2 * p + 1, (len(x),), generator=replay)
    assert out.shape == x.shape
    assert len(set(zip(dy.tolist(), dx.tolist()))) > 1, "offsets vary per sample"
    for b in range(len(x)):
        assert torch.equal(out[b], shifted(x[b], p, int(dy[b]), int(dx[b]))), f"sample {b}"


def test_crop_by_hand_on_one_image():
    """A 1×3×3 image, padding 1, window at offset (0, 2): one row down and one column left."""
    x = torch.tensor([[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]]]).unsqueeze(0)
    seed = next(s for s in range(1000) if torch.randint(0, 3, (2,), generator=gen(s)).tolist() == [0, 2])
    out = augment(x, Augmentation(crop_padding=1), gen(seed))
    expected = torch.tensor([[[0.0, 0.0, 0.0], [2.0, 3.0, 0.0], [5.0, 6.0, 0.0]]])
    assert torch.equal(out[0], expected)


def test_flip_flips_the_drawn_samples_horizontally():
    x = images()
    out = augment(x, Augmentation(flip=True), gen(3))
    flipped = torch.rand(len(x), generator=gen(3)) < 0.5
    assert 0 < int(flipped.sum()) < len(x), "the batch holds both cases"
    for b in range(len(x)):
        expected = x[b, :, :, torch.arange(7, -1, -1)] if flipped[b] else x[b]
        assert torch.equal(out[b], expected)


def test_crop_then_flip_together():
    x = images()
    p = 2
    out = augment(x, Augmentation(crop_padding=p, flip=True), gen(11))
    replay = gen(11)
    dy = torch.randint(0, 2 * p + 1, (len(x),), generator=replay)
    dx = torch.randint(0, 2 * p + 1, (len(x),), generator=replay)
    flipped = torch.rand(len(x), generator=replay) < 0.5
    for b in range(len(x)):
        expected = shifted(x[b], p, int(dy[b]), int(dx[b]))
        if flipped[b]:
            expected = expected.flip(-1)
        assert torch.equal(out[b], expected)


def test_augmentation_is_deterministic_per_generator_and_keeps_shapes():
    x = images(b=5, c=1, size=16)
    aug = Augmentation(crop_padding=2, flip=True)
    a, b, c = augment(x, aug, gen(0)), augment(x, aug, gen(0)), augment(x, aug, gen(1))
    assert a.shape == x.shape and a.dtype == x.dtype
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_augmentation_does_not_modify_its_input():
    x = images()
    before = x.clone()
    augment(x, Augmentation(crop_padding=2, flip=True), gen(0))
    assert torch.equal(x, before)
