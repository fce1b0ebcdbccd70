"""The fixed-trigger attacks by hand: SIG, Refool, CTRL, FTrojan, and the frequency helpers they share.

The registry-generated tests (tests/test_triggers.py, tests/test_poison.py) already check
shape, dtype, determinism and the poisoning contract; these check what each trigger is.
"""

from __future__ import annotations

import math

import pytest
import torch

from attacks import _frequency as fq
from attacks.ctrl import CtrlParams, truncate_to_uint8
from attacks.ftrojan import FTrojanParams
from attacks.refool import RefoolParams, gaussian_blur, ghost_layer, reflection_image, reflection_layer, vignette
from attacks.sig import sinusoid
from bench.core.params import ParamError
from bench.core.registry import ATTACKS, create_attack


def build(name, spec, **params):
    return create_attack(name, spec, **params)


def images(n, channels, size, low=0, high=256, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(low, high, (n, channels, size, size), generator=gen, dtype=torch.uint8)


def direct_dct(block: torch.Tensor) -> torch.Tensor:
    """Orthonormal 2-D DCT-II of one ``[n, n]`` block by the textbook double sum (float64)."""
    n = block.shape[0]
    out = torch.zeros(n, n, dtype=torch.float64)
    idx = torch.arange(n, dtype=torch.float64)
    for k in range(n):
        for l in range(n):
            ak = math.sqrt((1 if k == 0 else 2) / n)
            al = math.sqrt((1 if l == 0 else 2) / n)
            basis = torch.outer(torch.cos(math.pi * (2 * idx + 1) * k / (2 * n)), torch.cos(math.pi * (2 * idx + 1) * l / (2 * n)))
            out[k, l] = ak * al * (block * basis).sum()
    return out


# ---------------------------------------------------------------- frequency helpers


@pytest.mark.parametrize("space", ["yuv", "ycbcr"])
def test_colour_spaces_round_trip_exactly(space):
    x = images(3, 3, 8).double()
    assert (fq.rgb_from(fq.rgb_to(x, space), space) - x).abs().max() < 1e-9


def test_colour_spaces_by_hand():
    grey = torch.full((1, 3, 1, 1), 100.0, dtype=torch.float64)
    assert torch.allclose(fq.rgb_to(grey, "ycbcr").flatten(), torch.tensor([100.0, 128.0, 128.0], dtype=torch.float64))
    assert torch.allclose(fq.rgb_to(grey, "yuv").flatten(), torch.tensor([100.0, 0.0, 0.0], dtype=torch.float64), atol=1e-9)
    red = torch.tensor([255.0, 0.0, 0.0], dtype=torch.float64).view(1, 3, 1, 1)
    # JPEG: Y = 0.299 R, Cb = 128 − 0.168736 R, Cr = 128 + 0.5 R; YUV: U = −0.147 R, V = 0.615 R
    assert torch.allclose(fq.rgb_to(red, "ycbcr").flatten(), torch.tensor([76.245, 84.97232, 255.5], dtype=torch.float64))
    assert torch.allclose(fq.rgb_to(red, "yuv").flatten(), torch.tensor([76.245, -37.485, 156.825], dtype=torch.float64))
    with pytest.raises(ValueError):
        fq.color_transform("hsv")


def test_block_dct_is_the_orthonormal_dct_of_each_block_and_inverts():
    x = images(1, 1, 8, seed=3).double()
    coefficients = fq.block_dct(x, 4)
    for r in (0, 4):
        for c in (0, 4):
            assert torch.allclose(coefficients[0, 0, r : r + 4, c : c + 4], direct_dct(x[0, 0, r : r + 4, c : c + 4]))
    assert (fq.block_idct(coefficients, 4) - x).abs().max() < 1e-9
    d = fq.dct_matrix(8)
    assert torch.allclose(d @ d.T, torch.eye(8, dtype=torch.float64))


def test_block_dct_rejects_a_side_the_window_does_not_divide():
    with pytest.raises(ValueError):
        fq.block_dct(torch.zeros(1, 1, 10, 10), 4)


@pytest.mark.parametrize(
    ("size", "most", "window"), [(32, 32, 32), (16, 32, 16), (64, 32, 32), (28, 32, 28), (24, 32, 24), (100, 32, 25), (96, 32, 32)]
)
def test_block_window_is_the_largest_divisor_up_to_the_limit(size, most, window):
    assert fq.block_window(size, most) == window


@pytest.mark.parametrize(
    ("p", "window", "scaled"), [(15, 32, 15), (31, 32, 31), (15, 16, 7), (31, 16, 15), (15, 8, 3), (31, 8, 7), (31, 64, 63), (0, 8, 0)]
)
def test_positions_scale_with_the_window(p, window, scaled):
    assert fq.scale_position(p, window) == scaled


@pytest.mark.parametrize(("channels", "space", "perturbed"), [(3, "yuv", (1, 2)), (3, "ycbcr", (1, 2)), (3, "ycbcr", (0,)), (1, "yuv", (0,))])
def test_pattern_is_what_the_literal_pipeline_adds_to_any_image(channels, space, perturbed):
    """Linearity: convert → block DCT → add → inverse → convert back adds one fixed pattern."""
    positions = ((3, 3), (7, 7))
    x = images(4, channels, 16, seed=5).double()
    pattern = fq.frequency_pattern(channels, 16, space, perturbed, positions, 30.0, 8)
    literal = fq.add_in_frequency(x, space, perturbed, positions, 30.0, 8)
    assert (literal - x - pattern).abs().max() < 1e-9
    assert pattern.abs().max() > 1


def test_pattern_has_the_magnitude_at_the_positions_of_every_block_of_the_chroma_channels():
    positions = ((3, 3), (7, 7))
    pattern = fq.frequency_pattern(3, 16, "ycbcr", (1, 2), positions, 30.0, 8)
    coefficients = fq.block_dct(fq.rgb_to(pattern, "ycbcr") - fq.rgb_to(torch.zeros_like(pattern), "ycbcr"), 8)[0]
    mask = fq.coefficient_mask(16, 8, positions)
    assert int(mask.sum()) == 2 * 4  # two positions in each of four blocks
    assert torch.allclose(coefficients[1:, mask], torch.full((2, 8), 30.0, dtype=torch.float64))
    assert coefficients[0].abs().max() < 1e-9, "luma untouched"
    assert coefficients[1:, ~mask].abs().max() < 1e-9, "nothing else in the chroma channels"


# ---------------------------------------------------------------- CTRL and FTrojan


def chroma_change(attack, x, space):
    """Block-DCT coefficients of the change an attack makes, in the attack's colour space (float64 ``[N, 3, H, W]``)."""
    diff = fq.rgb_to(attack.apply(x).double(), space) - fq.rgb_to(x.double(), space)
    return fq.block_dct(diff, attack.window)


@pytest.mark.parametrize(("name", "space", "magnitude"), [("ctrl", "yuv", 100.0), ("ftrojan", "ycbcr", 30.0)])
def test_frequency_trigger_moves_only_the_chosen_chroma_coefficients(name, space, magnitude, make_spec):
    """On images away from 0 and 255 (no clamping), up to the uint8 rounding of the result."""
    attack = build(name, make_spec(channels=3, size=32))
    x = images(4, 3, 32, low=60, high=196, seed=1)
    coefficients = chroma_change(attack, x, space)
    mask = fq.coefficient_mask(32, 32, ((15, 15), (31, 31)))
    assert (coefficients[:, 1:, mask] - magnitude).abs().max() < 2.5
    assert coefficients[:, 0].abs().max() < 2.5, "luma keeps only rounding noise"
    assert coefficients[:, 1:, ~mask].abs().max() < 2.5


@pytest.mark.parametrize("name", ["ctrl", "ftrojan"])
def test_frequency_trigger_is_the_literal_pipeline_rounded(name, make_spec):
    spec = make_spec(channels=3, size=16)
    attack = build(name, spec)
    x = images(6, 3, 16, seed=2)
    space = "yuv" if name == "ctrl" else "ycbcr"
    literal = fq.add_in_frequency(x.double(), space, (1, 2), ((7, 7), (15, 15)), attack.params.magnitude, 16)
    expected = literal.round().clamp(0, 255)
    assert (attack.apply(x).double() - expected).abs().max() <= 1  # float32 vs float64 at .5 ties
    assert (attack.apply(x).double() != expected).float().mean() < 0.01


@pytest.mark.parametrize("name", ["ctrl", "ftrojan"])
def test_grayscale_trigger_perturbs_the_single_channel_at_the_scaled_positions(name, make_spec):
    """Digits' shape: 16×16, one channel, positions 15 and 31 of a 32 window become 7 and 15."""
    attack = build(name, make_spec(channels=1, size=16))
    coefficients = fq.block_dct(attack.pattern.double(), 16)[0, 0]
    expected = torch.zeros(16, 16, dtype=torch.float64)
    expected[7, 7] = expected[15, 15] = attack.params.magnitude
    assert (coefficients - expected).abs().max() < 1e-4


def test_ftrojan_tiles_32_blocks_and_ctrl_uses_one_window_at_64(make_spec):
    spec = make_spec(channels=3, size=64)
    ftrojan, ctrl = build("ftrojan", spec), build("ctrl", spec)
    assert ftrojan.window == 32 and ctrl.window == 64
    p = ftrojan.pattern
    assert torch.equal(p[..., :32, :32], p[..., 32:, 32:]) and torch.equal(p[..., :32, :32], p[..., :32, 32:])
    q = ctrl.pattern
    assert not torch.allclose(q[..., :32, :32], q[..., 32:, 32:], atol=1e-3)
    coefficients = fq.block_dct(fq.rgb_to(q.double(), "yuv"), 64)[0]
    assert abs(coefficients[1, 63, 63] - 100) < 1e-3 and abs(coefficients[2, 31, 31] - 100) < 1e-3


def test_ctrl_pattern_is_negated_by_a_horizontal_flip_its_coefficients_being_odd(make_spec):
    # why training's random flip shows the model CTRL's trigger as often negated as not (docs/attacks.md)
    pattern = build("ctrl", make_spec(channels=3, size=32)).pattern
    assert torch.allclose(pattern.flip(3), -pattern, atol=1e-5)
    even = build("ctrl", make_spec(channels=3, size=32), positions=(14, 30)).pattern
    assert torch.allclose(even.flip(3), even, atol=1e-5)


def test_training_crops_and_flips_leave_ctrl_pattern_uncorrelated_with_the_test_one_on_average(make_spec):
    # docs/attacks.md: over the 9 × 9 crop offsets (padding 4) and 2 flips, mean correlation 0.0, a fifth below −0.5
    pattern = build("ctrl", make_spec(channels=3, size=32)).pattern.double()
    padded = torch.nn.functional.pad(pattern, (4, 4, 4, 4))
    crops = torch.stack([padded[..., dy : dy + 32, dx : dx + 32] for dy in range(9) for dx in range(9)])
    copies = torch.cat([crops, crops.flip(-1)])  # [162, 1, 3, 32, 32]
    corr = (copies * pattern).sum((1, 2, 3, 4)) / pattern.pow(2).sum()
    assert corr.mean().abs() < 1e-6
    assert (corr < -0.5).float().mean() > 0.15 and (corr > 0.5).float().mean() > 0.15
    assert corr.max() == pytest.approx(1.0)  # the unshifted, unflipped copy


def test_frequency_magnitude_scales_the_pattern(make_spec):
    spec = make_spec(channels=3, size=16)
    weak, strong = build("ftrojan", spec, magnitude=10.0), build("ftrojan", spec, magnitude=30.0)
    assert torch.allclose(strong.pattern, 3 * weak.pattern, atol=1e-5)


def test_frequency_params_come_as_tuples_from_lists():
    params = FTrojanParams(positions=[15, 31], channels=[1, 2])
    assert params.positions == (15, 31) and params.channels == (1, 2)
    hash(params)


@pytest.mark.parametrize("cls", [CtrlParams, FTrojanParams])
@pytest.mark.parametrize(
    ("bad", "field"),
    [(dict(positions=()), "positions"), (dict(positions=(15, 15)), "positions"), (dict(positions=(32,)), "positions"),
     (dict(positions=(-1,)), "positions"), (dict(channels=()), "channels"), (dict(channels=(3,)), "channels"),
     (dict(channels=(1, 1)), "channels")],
)  # fmt: skip
def test_frequency_params_reject_bad_positions_and_channels(cls, bad, field):
    with pytest.raises(ParamError, match=field) as info:
        cls(**bad)
    assert info.value.field == field


def test_truncate_to_uint8_goes_toward_zero_then_wraps_around():
    x = torch.tensor([-3.5, -0.4, 0.9, 254.99, 255.5, 256.7, 300.2], dtype=torch.float64)
    assert truncate_to_uint8(x).tolist() == [253, 0, 0, 254, 255, 0, 44]


def backdoorbench_ctrl(x: torch.Tensor, magnitude: float, positions, window: int) -> torch.Tensor:
    """BackdoorBench's CTRL transform, step by step, on uint8 ``[N, 3, H, W]``.

    Kornia's ``rgb_to_yuv``, DCT, ``magnitude`` added to the U and V coefficients, inverse
    DCT, Kornia's ``yuv_to_rgb`` (``r = y + 1.14 v``, ``g = y − 0.396 u − 0.581 v``,
    ``b = y + 2.029 u``), then ``.to(torch.uint8)``.
    """
    yuv = fq.block_dct(fq.rgb_to(x.double(), "yuv"), window)
    for row, col in positions:
        yuv[:, 1:, row, col] += magnitude
    y, u, v = fq.block_idct(yuv, window).unbind(1)
    rgb = torch.stack([y + 1.14 * v, y - 0.396 * u - 0.581 * v, y + 2.029 * u], 1)
    return truncate_to_uint8(rgb)


def test_ctrl_backdoorbench_arithmetic_is_its_literal_pipeline(make_spec):
    attack = build("ctrl", make_spec(channels=3, size=16), arithmetic="backdoorbench")
    x = images(6, 3, 16, seed=4)
    expected = backdoorbench_ctrl(x, 100.0, ((7, 7), (15, 15)), 16)
    assert torch.equal(attack.apply(x), expected)


def test_ctrl_backdoorbench_arithmetic_wraps_where_exact_clamps(make_spec):
    """Mid-range pixels differ by the truncation and Kornia's rounded inverse only; saturated ones flip to the other end."""
    spec = make_spec(channels=3, size=32)
    exact, bb = build("ctrl", spec), build("ctrl", spec, arithmetic="backdoorbench")
    mid = images(4, 3, 32, low=60, high=196, seed=1)
    assert (exact.apply(mid).int() - bb.apply(mid).int()).abs().max() <= 2
    for level in (0, 255):
        flat = torch.full((1, 3, 32, 32), level, dtype=torch.uint8)
        far = (exact.apply(flat).int() - bb.apply(flat).int()).abs() > 128
        assert far.float().mean() > 0.1, f"pixels pushed past {level} wrap around"


def test_ctrl_backdoorbench_arithmetic_on_grayscale_truncates_the_same_pattern(make_spec):
    spec = make_spec(channels=1, size=16)
    exact, bb = build("ctrl", spec), build("ctrl", spec, arithmetic="backdoorbench")
    x = images(3, 1, 16, seed=6)
    assert torch.equal(bb.apply(x), truncate_to_uint8(x.double() + exact.pattern.double()))


def test_ctrl_rejects_an_unknown_arithmetic():
    with pytest.raises(ParamError, match="arithmetic") as info:
        CtrlParams(arithmetic="kornia")
    assert info.value.field == "arithmetic"


# ---------------------------------------------------------------- SIG


def test_sig_by_hand(make_spec):
    """Width 4, f 1, delta 40: the row signal is 40·sin(2πj/4) = [0, 40, 0, −40]."""
    attack = build("sig", make_spec(channels=1, size=4), delta=40.0, f=1.0)
    x = torch.full((1, 1, 4, 4), 100, dtype=torch.uint8)
    x[0, 0, 3] = torch.tensor([250, 250, 20, 20], dtype=torch.uint8)
    expected = torch.tensor([[100, 140, 100, 60]] * 3 + [[250, 255, 20, 0]], dtype=torch.uint8)  # clamped at both ends
    assert torch.equal(attack.apply(x)[0, 0], expected)


def test_sig_is_vertical_stripes_with_f_periods(make_spec):
    attack = build("sig", make_spec(channels=3, size=32))
    x = torch.full((2, 3, 32, 32), 128, dtype=torch.uint8)
    change = attack.apply(x).double() - 128
    assert torch.equal(change, change[:1, :1, :1].expand_as(change)), "the same row signal on every row, channel and image"
    spectrum = torch.fft.rfft(change[0, 0, 0]).abs()
    assert int(spectrum.argmax()) == 6 and spectrum[6] > 10 * torch.cat([spectrum[:6], spectrum[7:]]).max()
    assert change.max() == 40 and change.min() == -40  # sin(3πj/8) is −1 at j = 4 and +1 at j = 12


def test_sig_signal_by_formula():
    j = torch.arange(16, dtype=torch.float64)
    assert torch.allclose(sinusoid(16, 20.0, 3.0), 20.0 * torch.sin(2 * math.pi * j * 3.0 / 16))


# ---------------------------------------------------------------- Refool


def test_reflection_image_is_reproducible_smooth_and_structured():
    first = reflection_image(3, 32, torch.Generator().manual_seed(0))
    again = reflection_image(3, 32, torch.Generator().manual_seed(0))
    other = reflection_image(3, 32, torch.Generator().manual_seed(1))
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert first.shape == (3, 32, 32) and first.min() >= 0 and first.max() <= 1
    assert first.std() > 0.05, "not a flat image"
    neighbour = (first[..., 1:] - first[..., :-1]).abs().mean()
    noise = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert neighbour < 0.2 * (noise[..., 1:] - noise[..., :-1]).abs().mean(), "smooth, unlike white noise"


def test_ghost_layer_mixes_two_shifted_copies():
    r = torch.rand(1, 8, 8, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    only_first = ghost_layer(r, (2, 1), 1.0)
    only_second = ghost_layer(r, (2, 1), 0.0)
    resize = lambda t: torch.nn.functional.interpolate(t[None], size=(8, 8), mode="bilinear", align_corners=False)[0]  # noqa: E731
    assert torch.allclose(only_first, resize(r[:, 2:, 1:]))
    assert torch.allclose(only_second, resize(r[:, :6, :7]))
    assert torch.allclose(ghost_layer(r, (2, 1), 0.3), 0.3 * only_first + 0.7 * only_second)
    flat = torch.full((1, 8, 8), 0.25, dtype=torch.float64)
    assert torch.allclose(ghost_layer(flat, (3, 3), 0.4), flat)


def test_gaussian_blur_keeps_constants_and_spreads_a_point_by_sigma():
    flat = torch.full((2, 16, 16), 0.5, dtype=torch.float64)
    assert torch.allclose(gaussian_blur(flat, 2.0), flat)
    point = torch.zeros(1, 33, 33, dtype=torch.float64)
    point[0, 16, 16] = 1.0
    blurred = gaussian_blur(point, 2.0)[0]
    assert abs(blurred.sum() - 1) < 1e-9
    taps = torch.exp(-torch.arange(-4, 5, dtype=torch.float64) ** 2 / 8)  # side 2⌈2σ⌉ + 1 = 9, as cv2.getGaussianKernel
    taps = taps / taps.sum()
    expected = torch.zeros(33, 33, dtype=torch.float64)
    expected[12:21, 12:21] = torch.outer(taps, taps)
    assert torch.allclose(blurred, expected)


def test_vignette_peaks_at_the_centre_and_fades_to_the_corners():
    v = vignette(32)
    assert v.max() == 1 and torch.allclose(v, v.T) and torch.allclose(v, v.flip(0))
    assert v[15:17, 15:17].min() > 0.95 and v[0, 0] < 0.02 and v[0, 16] < 0.15


@pytest.mark.parametrize("kind", ["ghost", "focus"])
def test_refool_is_the_gamma_blend_of_its_reflection_layer(kind, make_spec):
    spec = make_spec(channels=3, size=16)
    attack = build("refool", spec, kind=kind, alpha_t=0.4)
    layer = reflection_layer(kind, 3, 16, 0.4, 0)
    x = images(4, 3, 16, seed=7)
    expected = ((0.4 * (x.double() / 255) ** 2.2 + layer).clamp(0, 1) ** (1 / 2.2) * 255).round()
    out = attack.apply(x).double()
    assert (out - expected).abs().max() <= 1 and (out != expected).float().mean() < 0.01
    black = attack.apply(torch.zeros(1, 3, 16, 16, dtype=torch.uint8)).double()
    assert black.mean() > 10, "the reflection shows on a black image"


@pytest.mark.parametrize("kind", ["ghost", "focus"])
def test_refool_darkens_the_image_by_alpha_t_and_adds_light(kind, make_spec):
    """In linear light the image keeps ``alpha_t`` of itself and the reflection only adds: ``out ≥ alpha_t^(1/2.2) · x``."""
    attack = build("refool", make_spec(channels=3, size=16), kind=kind, alpha_t=0.5)
    x = images(4, 3, 16, seed=8)
    out = attack.apply(x).double()
    assert (out >= 0.5 ** (1 / 2.2) * x.double() - 1).all()
    assert (out < x.double()).any() and (out > x.double()).any()


def test_refool_is_monotone_in_the_image(make_spec):
    attack = build("refool", make_spec(channels=1, size=16), kind="focus")
    x = images(8, 1, 16, seed=9)
    brighter = (x.int() + torch.randint(0, 60, x.shape, generator=torch.Generator().manual_seed(1))).clamp(max=255).to(torch.uint8)
    assert (attack.apply(brighter) >= attack.apply(x)).all()


def test_refool_trigger_depends_on_seed_kind_and_alpha(make_spec):
    spec = make_spec(channels=3, size=16)
    x = images(2, 3, 16, seed=10)
    base = build("refool", spec).apply(x)
    assert torch.equal(base, build("refool", spec, reflection_seed=0).apply(x))
    for other in (dict(reflection_seed=1), dict(kind="focus"), dict(alpha_t=0.7)):
        assert not torch.equal(base, build("refool", spec, **other).apply(x)), other


def test_refool_rejects_an_unknown_kind():
    with pytest.raises(ParamError, match="kind") as info:
        RefoolParams(kind="mirror")
    assert info.value.field == "kind"


# ---------------------------------------------------------------- label semantics


@pytest.mark.parametrize(("name", "clean"), [("sig", True), ("refool", True), ("ctrl", True), ("ftrojan", False)])
def test_label_semantics(name, clean):
    cls = ATTACKS.get(name)
    assert cls.clean_label is clean
    assert set(cls.label_modes) == ({"all2one"} if clean else {"all2one", "all2all"})
