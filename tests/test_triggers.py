"""Test-time triggers of every registered attack, on tiny uint8 tensors; then each attack by hand.

Every attack is checked as it is after its attack stage (``ready``): prepared on a tiny
training set and trained for a few batches with its ``training_hooks`` (plain for
static attacks), so attacks with learned or training-controlled triggers run the same
generic checks as static ones, plus a state round trip.
"""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

from attacks._generators import build as build_net
from attacks.base import Attack, AttackContext
from attacks.bpp import floyd_steinberg
from attacks.inputaware import sharpen
from attacks.wanet import warping_grid
from bench.core.data import DatasetSpec, ImageSet, LoadedDataset, to_float, to_uint8
from bench.core.poison import Target
from bench.core.registry import ATTACKS, create_attack
from bench.core.train import GradientStep, TrainConfig, train

NAMES = ATTACKS.names()


pytestmark = pytest.mark.usefixtures("one_thread")


def build(name: str, spec, **params) -> Attack:
    return create_attack(name, spec, **params)


def learns(name: str) -> bool:
    """Whether the attack prepares a resource or controls training (so its trigger depends on both)."""
    cls = ATTACKS.get(name)
    return cls.prepare is not Attack.prepare or cls.training_hooks is not Attack.training_hooks


def tiny_model(spec: DatasetSpec) -> nn.Module:
    factory = lambda: nn.Sequential(  # noqa: E731
        nn.Conv2d(spec.channels, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, spec.num_classes),
    )
    return build_net(factory, torch.Generator().manual_seed(5))


def ready(name: str, spec: DatasetSpec, seed: int = 0, **params) -> Attack:
    """The attack as after its attack stage: prepared on 32 images, then 2 epochs of 16-image batches."""
    attack = build(name, spec, **params)
    gen = torch.Generator().manual_seed(100 + seed)
    x = torch.randint(0, 256, (32, spec.channels, spec.size, spec.size), generator=gen, dtype=torch.uint8)
    y = torch.arange(32) % spec.num_classes
    data = LoadedDataset(spec, ImageSet(x, y), ImageSet(x[:8], y[:8]))
    ctx = AttackContext(Target("all2one", 0), 0.25, torch.Generator().manual_seed(seed), torch.device("cpu"))
    attack.prepare(data, ctx)
    model = tiny_model(spec)
    update, hooks = GradientStep(torch.optim.SGD(model.parameters(), lr=0.1)), attack.training_hooks(model, ctx)
    cfg = TrainConfig(epochs=2, batch_size=16, lr=0.1)
    train(model, data.train, cfg, spec.augmentation, torch.Generator().manual_seed(7), update, hooks)
    return attack


_READY: dict[str, Attack] = {}


def trained(name: str, spec: DatasetSpec) -> Attack:
    """``ready(name, spec)``, built once per test module (``apply`` does not change an attack)."""
    if name not in _READY:
        _READY[name] = ready(name, spec)
    return _READY[name]


# ---------------------------------------------------------------- every attack


@pytest.mark.parametrize("name", NAMES)
def test_trigger_keeps_shape_and_dtype_and_changes_the_images(name, tiny_spec, tiny_images):
    out = trained(name, tiny_spec).apply(tiny_images)
    assert out.shape == tiny_images.shape
    assert out.dtype == torch.uint8
    assert out.device == tiny_images.device
    assert not torch.equal(out, tiny_images), "a trigger must stamp something"


@pytest.mark.parametrize("name", NAMES)
def test_trigger_of_an_empty_batch_is_empty(name, tiny_spec):
    out = trained(name, tiny_spec).apply(torch.zeros(0, 3, 8, 8, dtype=torch.uint8))
    assert out.shape == (0, 3, 8, 8) and out.dtype == torch.uint8


@pytest.mark.parametrize("name", NAMES)
def test_trigger_does_not_wrap_around_at_the_ends_of_the_range(name, tiny_spec):
    """uint8 arithmetic that overflows would turn white pixels dark (255 + k → k − 1)."""
    if not ATTACKS.get(name).monotone:
        pytest.skip(f"{name} declares its trigger not monotone; its own tests check its arithmetic")
    attack = trained(name, tiny_spec)
    black = attack.apply(torch.zeros(2, 3, 8, 8, dtype=torch.uint8))
    white = attack.apply(torch.full((2, 3, 8, 8), 255, dtype=torch.uint8))
    assert black.dtype == white.dtype == torch.uint8
    assert (black <= white).all()


@pytest.mark.parametrize("name", NAMES)
def test_trigger_is_deterministic_across_instances(name, tiny_spec, tiny_images):
    """Two instances prepared and trained alike (same generators) stamp the same trigger."""
    first = trained(name, tiny_spec).apply(tiny_images)
    second = ready(name, tiny_spec).apply(tiny_images)
    assert torch.equal(first, second)
    assert torch.equal(first, trained(name, tiny_spec).apply(tiny_images)), "apply is repeatable"


def keeps_state(name: str) -> bool:
    return ATTACKS.get(name).state_dict is not Attack.state_dict


@pytest.mark.parametrize("name", [n for n in NAMES if keeps_state(n)])
def test_learned_trigger_depends_on_the_generator_of_its_attack_stage(name, tiny_spec, tiny_images):
    assert not torch.equal(trained(name, tiny_spec).apply(tiny_images), ready(name, tiny_spec, seed=1).apply(tiny_images))


@pytest.mark.parametrize("name", NAMES)
def test_trigger_is_per_image(name, tiny_spec, tiny_images):
    """Vectorised over the batch: an image's trigger does not depend on the other images."""
    attack = trained(name, tiny_spec)
    batch = attack.apply(tiny_images)
    one_by_one = torch.cat([attack.apply(tiny_images[i : i + 1]) for i in range(len(tiny_images))])
    assert torch.equal(batch, one_by_one)


@pytest.mark.parametrize("name", NAMES)
def test_trigger_does_not_modify_its_input(name, tiny_spec, tiny_images):
    before = tiny_images.clone()
    trained(name, tiny_spec).apply(tiny_images)
    assert torch.equal(tiny_images, before)


@pytest.mark.parametrize("name", NAMES)
def test_state_round_trips_through_a_weights_only_file(name, tiny_spec, tiny_images):
    """A fresh instance loaded with the state gives the same trigger (what the defense stage relies on)."""
    attack = trained(name, tiny_spec)
    state = attack.state_dict()
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    restored = build(name, tiny_spec)
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    assert torch.equal(restored.apply(tiny_images), attack.apply(tiny_images))
    if learns(name) and state:
        assert not torch.equal(build(name, tiny_spec).apply(tiny_images), attack.apply(tiny_images)), (
            "the state must matter: an unrestored instance stamps another trigger"
        )


@pytest.mark.parametrize("name", NAMES)
def test_load_state_dict_rejects_keys_it_does_not_know(name, tiny_spec):
    with pytest.raises((ValueError, RuntimeError)):
        build(name, tiny_spec).load_state_dict({"not.a.key": torch.zeros(1)})


@pytest.mark.parametrize("name", NAMES)
def test_attack_rejects_parameters_of_another_type(name, tiny_spec):
    class Other:
        pass

    with pytest.raises(TypeError):
        ATTACKS.get(name)(Other(), tiny_spec)


@pytest.mark.parametrize("name", NAMES)
def test_attack_builds_for_grayscale_and_larger_images(name, make_spec):
    """Every attack works on digits' shape (1×16×16), and on a side that halves only a few times (24)."""
    for spec in (make_spec(channels=1, size=16), make_spec(channels=3, size=24)):
        x = torch.randint(0, 255, (2, spec.channels, spec.size, spec.size), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
        out = build(name, spec).apply(x)
        assert out.shape == x.shape and out.dtype == torch.uint8


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


# ---------------------------------------------------------------- WaNet


def test_wanet_with_zero_strength_is_the_identity(tiny_spec, tiny_images):
    assert torch.equal(build("wanet", tiny_spec, s=0.0).apply(tiny_images), tiny_images)


def test_wanet_warp_samples_the_grid_bilinearly_with_corners_aligned(make_spec):
    """With the grid replaced by a shift of exactly one pixel right, the image moves one pixel left (zeros enter)."""
    attack = build("wanet", make_spec(channels=1, size=4))
    axis = torch.linspace(-1, 1, 4)
    rows, cols = torch.meshgrid(axis, axis, indexing="ij")
    attack.grid = torch.stack((cols + 2 / 3, rows), dim=2)[None]  # one pixel = 2 / (H − 1)
    x = torch.arange(16, dtype=torch.uint8).mul(10).view(1, 1, 4, 4)
    expected = torch.zeros_like(x)
    expected[..., :3] = x[..., 1:]
    assert torch.equal(attack.apply(x), expected)


def test_wanet_field_is_normalised_to_mean_absolute_offset_one(tiny_spec):
    """With k = 2 every control value sits at a corner; grid_rescale 0.5 keeps the corners inside [−1, 1]."""
    size, s = 8, 0.5
    grid = warping_grid(2, s, 0.5, size, torch.Generator().manual_seed(3))
    axis = torch.linspace(-1, 1, size)
    rows, cols = torch.meshgrid(axis, axis, indexing="ij")
    identity = torch.stack((cols, rows), dim=2)[None]
    offsets = (grid / 0.5 - identity) * size / s  # the upsampled field
    corners = offsets[0, [0, 0, -1, -1], [0, -1, 0, -1]]  # [4, 2]
    assert corners.abs().mean().item() == pytest.approx(1.0, abs=1e-5)
    assert offsets.abs().max() > 0.1


def test_wanet_displacement_is_below_a_pixel_at_the_defaults(make_spec):
    """s = 0.5: offsets of s · field / H in grid units, i.e. about a quarter pixel on average."""
    for size in (16, 32):
        attack = build("wanet", make_spec(channels=3, size=size))
        axis = torch.linspace(-1, 1, size)
        rows, cols = torch.meshgrid(axis, axis, indexing="ij")
        pixels = (attack.grid[0] - torch.stack((cols, rows), dim=2)).abs() * (size - 1) / 2
        assert 0.05 < pixels.mean() < 0.5 and pixels.max() < 2


def test_wanet_grid_depends_on_grid_seed_only(tiny_spec, tiny_images):
    assert torch.equal(build("wanet", tiny_spec).grid, build("wanet", tiny_spec).grid)
    assert not torch.equal(build("wanet", tiny_spec, grid_seed=1).apply(tiny_images), build("wanet", tiny_spec).apply(tiny_images))


# ---------------------------------------------------------------- BPP


def floyd_steinberg_reference(image: torch.Tensor, levels: int) -> torch.Tensor:
    """Pixel by pixel in raster order, as BackdoorBench's ``floydDitherspeed`` (levels clamped), float64."""
    img = image.double().clone()
    _, h, w = img.shape
    q = levels - 1
    for y in range(h):
        for x in range(w):
            old = img[:, y, x].clone()
            new = (old * q).round().clamp(0, q) / q
            err = old - new
            img[:, y, x] = new
            for dy, dx, weight in ((0, 1, 7 / 16), (1, -1, 3 / 16), (1, 0, 5 / 16), (1, 1, 1 / 16)):
                if 0 <= y + dy < h and 0 <= x + dx < w:
                    img[:, y + dy, x + dx] += weight * err
    return img


def test_bpp_dithering_by_hand():
    """0.4 everywhere, two levels: 0 (error 0.4 spreads), then 0.575 → 1, then 0.4453 → 0, then 0.487 → 0."""
    x = torch.full((1, 1, 2, 2), 102, dtype=torch.uint8)  # 102 / 255 = 0.4
    out = build("bpp", DatasetSpec("t", 1, 2, 10, (0.5,), (0.25,)), squeeze_num=2).apply(x)
    assert torch.equal(out, torch.tensor([[[[0, 255], [0, 0]]]], dtype=torch.uint8))


def test_bpp_wavefront_dithering_matches_the_raster_loop():
    x = torch.rand(3, 2, 7, 9, generator=torch.Generator().manual_seed(0))
    fast = floyd_steinberg(x, 8)
    slow = torch.stack([floyd_steinberg_reference(img, 8) for img in x]).float()
    assert (fast - slow).abs().max() < 1e-5


def test_bpp_without_dithering_squeezes_each_value_by_hand(make_spec):
    x = torch.tensor([0, 18, 19, 128, 200, 255], dtype=torch.uint8).view(1, 1, 1, 6).expand(1, 1, 6, 6).contiguous()
    out = build("bpp", make_spec(channels=1, size=6), dithering=False).apply(x)
    # round(v / 255 · 7) / 7 · 255, rounded: 18 → 0, 19 → 1 level = 36.43, 128 → 4 levels = 145.7, 200 → 5 levels = 182.1
    assert torch.equal(out[0, 0, 0], torch.tensor([0, 0, 36, 146, 182, 255], dtype=torch.uint8))


@pytest.mark.parametrize("dithering", [True, False])
def test_bpp_output_has_squeeze_num_levels(dithering, tiny_spec, tiny_images):
    out = build("bpp", tiny_spec, squeeze_num=4, dithering=dithering).apply(tiny_images)
    assert set(out.unique().tolist()) <= {0, 85, 170, 255}


# ---------------------------------------------------------------- LIRA


@pytest.mark.parametrize("eps", [0.02, 0.05])
def test_lira_perturbation_is_bounded_by_eps(eps, tiny_spec, tiny_images):
    out = ready("lira", tiny_spec, eps=eps).apply(tiny_images)
    change = (out.int() - tiny_images.int()).abs()
    assert change.max() <= eps * 255 + 0.5
    assert change.float().mean() > 0.1 * eps * 255, "the generator's output is not negligible"


def test_lira_apply_is_the_formula_rounded(tiny_spec, tiny_images):
    attack = trained("lira", tiny_spec)
    with torch.no_grad():
        x = to_float(tiny_images)
        expected = to_uint8((x + 0.05 * attack.generator.eval()(x)).clamp(0, 1))
    assert torch.equal(attack.apply(tiny_images), expected)


# ---------------------------------------------------------------- Input-aware


def test_inputaware_sharpen_by_hand():
    m = torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0])
    expected = torch.tanh(torch.tensor([-10.0, -5.0, 0.0, 5.0, 10.0])) / (2 + 1e-7) + 0.5
    assert torch.allclose(sharpen(m), expected)
    assert sharpen(m)[0] < 1e-6 and sharpen(m)[-1] > 1 - 1e-6 and sharpen(m)[2] == pytest.approx(0.5)


def test_inputaware_apply_is_the_formula_rounded(tiny_spec, tiny_images):
    """x · (1 − t(m(x))) + g(x) · t(m(x)) with both generators in eval mode, then rounded (so no wrap-around)."""
    attack = trained("inputaware", tiny_spec)
    with torch.no_grad():
        x = to_float(tiny_images)
        mask = sharpen(attack.mask.eval()(x))
        expected = to_uint8(x * (1 - mask) + attack.pattern.eval()(x) * mask)
    assert mask.shape == (8, 1, 8, 8)
    assert torch.equal(attack.apply(tiny_images), expected)
    for constant in (0, 255):
        out = attack.apply(torch.full((2, 3, 8, 8), constant, dtype=torch.uint8))
        with torch.no_grad():
            xc = torch.full((2, 3, 8, 8), constant / 255)
            mc = sharpen(attack.mask(xc))
            assert torch.equal(out, to_uint8(xc * (1 - mc) + attack.pattern(xc) * mc))


def test_float_to_uint8_rounds_and_clamps():
    x = torch.tensor([-0.5, 0.0, 1.4 / 255, 1.6 / 255, 254.6 / 255, 1.0, 1.7])
    assert to_uint8(x).tolist() == [0, 0, 1, 2, 255, 255, 255]
