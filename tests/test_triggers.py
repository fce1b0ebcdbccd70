"""Test-time triggers of every registered attack, on tiny uint8 tensors; BadNets and Blended by hand."""

from __future__ import annotations

import pytest
import torch

from attacks.badnets import BadNetsParams
from attacks.blended import BlendedParams
from bench.registry import ATTACKS


def build(name: str, spec, **params):
    cls = ATTACKS.get(name)
    return cls(cls.Params(**params), spec)


# ---------------------------------------------------------------- every attack


@pytest.mark.parametrize("name", ATTACKS.names())
def test_trigger_keeps_shape_and_dtype_and_changes_the_images(name, tiny_spec, tiny_images):
    out = build(name, tiny_spec).apply(tiny_images)
    assert out.shape == tiny_images.shape
    assert out.dtype == torch.uint8
    assert out.device == tiny_images.device
    assert not torch.equal(out, tiny_images), "a trigger must stamp something"


@pytest.mark.parametrize("name", ATTACKS.names())
def test_trigger_does_not_wrap_around_at_the_ends_of_the_range(name, tiny_spec):
    """uint8 arithmetic that overflows would turn white pixels dark (255 + k → k − 1)."""
    attack = build(name, tiny_spec)
    black = attack.apply(torch.zeros(2, 3, 8, 8, dtype=torch.uint8))
    white = attack.apply(torch.full((2, 3, 8, 8), 255, dtype=torch.uint8))
    assert black.dtype == white.dtype == torch.uint8
    assert (black <= white).all()


@pytest.mark.parametrize("name", ATTACKS.names())
def test_trigger_is_deterministic_across_instances(name, tiny_spec, tiny_images):
    first = build(name, tiny_spec).apply(tiny_images)
    second = build(name, tiny_spec).apply(tiny_images)
    assert torch.equal(first, second)


@pytest.mark.parametrize("name", ATTACKS.names())
def test_trigger_is_per_image(name, tiny_spec, tiny_images):
    """Vectorised over the batch: an image's trigger does not depend on the other images."""
    attack = build(name, tiny_spec)
    batch = attack.apply(tiny_images)
    one_by_one = torch.cat([attack.apply(tiny_images[i : i + 1]) for i in range(len(tiny_images))])
    assert torch.equal(batch, one_by_one)


@pytest.mark.parametrize("name", ATTACKS.names())
def test_trigger_does_not_modify_its_input(name, tiny_spec, tiny_images):
    before = tiny_images.clone()
    build(name, tiny_spec).apply(tiny_images)
    assert torch.equal(tiny_images, before)


@pytest.mark.parametrize("name", ATTACKS.names())
def test_attack_rejects_parameters_of_another_type(name, tiny_spec):
    class Other:
        pass

    with pytest.raises(TypeError):
        ATTACKS.get(name)(Other(), tiny_spec)


# ---------------------------------------------------------------- BadNets


@pytest.mark.parametrize(("size", "side"), [(8, 1), (16, 2), (24, 3), (32, 3), (48, 5), (64, 6)])
def test_badnets_sets_exactly_the_bottom_right_patch_to_white(size, side, make_spec):
    """3×3 at 32×32 (BackdoorBench's pixels 29–31), scaled with the side and rounded up (2.25 → 3, 4.5 → 5)."""
    gen = torch.Generator().manual_seed(size)
    x = torch.randint(0, 255, (4, 3, size, size), generator=gen, dtype=torch.uint8)  # no 255 in the input
    out = build("badnets", make_spec(channels=3, size=size)).apply(x)
    patch = torch.zeros(size, size, dtype=torch.bool)
    for row in range(size - side, size):
        for col in range(size - side, size):
            patch[row, col] = True
    changed = out != x
    assert torch.equal(changed, patch.expand_as(x))
    assert (out[:, :, patch] == 255).all()


def test_badnets_patch_at_32_is_pixels_29_to_31(make_spec):
    x = torch.zeros(1, 3, 32, 32, dtype=torch.uint8)
    out = build("badnets", make_spec(channels=3, size=32)).apply(x)
    assert (out[0, :, 29:32, 29:32] == 255).all()
    assert out[0, :, :29, :].sum() == 0 and out[0, :, :, :29].sum() == 0


def test_badnets_patch_size_and_value_parameters(make_spec):
    x = torch.zeros(2, 1, 32, 32, dtype=torch.uint8)
    out = build("badnets", make_spec(channels=1, size=32), patch_size=5, value=128).apply(x)
    assert (out[:, :, 27:, 27:] == 128).all()
    assert int((out != 0).sum()) == 2 * 5 * 5


@pytest.mark.parametrize("bad", [dict(patch_size=0), dict(patch_size=33), dict(value=-1), dict(value=256)])
def test_badnets_rejects_out_of_range_parameters(bad):
    with pytest.raises(ValueError):
        BadNetsParams(**bad)


# ---------------------------------------------------------------- Blended


def test_blended_by_hand(make_spec):
    attack = build("blended", make_spec(channels=1, size=2), alpha=0.25)
    attack.pattern = torch.tensor([[[[255, 0], [100, 255]]]], dtype=torch.uint8)
    x = torch.tensor([[[[0, 100], [200, 255]]], [[[40, 8], [0, 3]]]], dtype=torch.uint8)
    # 0.75·x + 0.25·pattern, rounded (no ties in this example)
    expected = torch.tensor([[[[64, 75], [175, 255]]], [[[94, 6], [25, 66]]]], dtype=torch.uint8)
    assert torch.equal(attack.apply(x), expected)


def test_blended_matches_the_formula_with_its_own_pattern(tiny_spec, tiny_images):
    pattern = build("blended", tiny_spec, alpha=1.0).apply(torch.zeros(1, 3, 8, 8, dtype=torch.uint8)).double()
    out = build("blended", tiny_spec, alpha=0.2).apply(tiny_images)
    expected = (0.8 * tiny_images.double() + 0.2 * pattern).round()
    assert (out.double() - expected).abs().max() <= 1  # float32 vs float64 may differ at .5 ties
    assert (out.double() - expected).abs().mean() < 0.01


def test_blended_alpha_one_gives_the_pattern_whatever_the_image(tiny_spec, tiny_images):
    attack = build("blended", tiny_spec, alpha=1.0)
    out = attack.apply(tiny_images)
    assert torch.equal(out, attack.apply(255 - tiny_images))
    assert torch.equal(out, attack.pattern.expand_as(out))
    assert len(out.unique()) > 16, "the pattern is noise, not a constant"


def test_blended_pattern_depends_on_pattern_seed(tiny_spec, tiny_images):
    a = build("blended", tiny_spec, alpha=1.0, pattern_seed=0).apply(tiny_images)
    b = build("blended", tiny_spec, alpha=1.0, pattern_seed=1).apply(tiny_images)
    assert not torch.equal(a, b)


@pytest.mark.parametrize("alpha", [0.0, -0.1, 1.01])
def test_blended_rejects_alpha_outside_0_1(alpha):
    with pytest.raises(ValueError):
        BlendedParams(alpha=alpha)
