"""LC, LF and TrojanNN by hand: the corner pattern, PGD, the low-pass filter, neuron selection, and their surrogate.

The registry-generated tests (test_triggers, test_poison) cover the generic contract;
these check what is specific to each attack, and the shared surrogate helper, on tiny
tensors.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from attacks._generators import build
from attacks._surrogate import FastAdversarial, check_surrogate_arch, train_surrogate
from attacks.base import AttackContext
from attacks.lc import LEFT_CORNER, LabelConsistent, LcParams, corner_pattern, pgd_away_from_labels
from attacks.lf import LfParams, LowFrequency, gaussian_transfer, into_ball, low_pass
from attacks.trojannn import TrojanNN, TrojanNNParams, excite, last_linear, most_connected
from bench.core.data import DatasetSpec, ImageSet, LoadedDataset, to_float
from bench.core.params import ParamError
from bench.core.poison import Target
from bench.core.train import train_step
from tests.test_attack_training import Recording

CPU = torch.device("cpu")


pytestmark = pytest.mark.usefixtures("one_thread")


def spec(channels: int = 3, size: int = 16) -> DatasetSpec:
    return DatasetSpec(f"t{channels}x{size}", channels, size, 10, (0.5,) * channels, (0.25,) * channels)


def images(n: int, channels: int = 3, size: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, channels, size, size), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def ctx(seed: int = 0, target: Target = Target("all2one", 0), rho: float = 0.1) -> AttackContext:
    return AttackContext(target, rho, torch.Generator().manual_seed(seed), CPU)


def loaded(size: int = 16, n: int = 40, seed: int = 7) -> LoadedDataset:
    x = images(n, 3, size, seed=seed)
    y = torch.arange(n) % 10
    return LoadedDataset(spec(3, size), ImageSet(x, y), ImageSet(x[:8], y[:8]))


def conv_model(seed: int = 3, features: int = 8) -> nn.Module:
    """Conv → ReLU → global pooling → Linear: ``features`` penultimate features, 10 logits, in eval mode."""
    factory = lambda: nn.Sequential(  # noqa: E731
        nn.Conv2d(3, features, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(features, 10)
    )
    return build(factory, torch.Generator().manual_seed(seed)).eval()


# ---------------------------------------------------------------- LC: the corner pattern

LEFT = [[1, -1, -1], [-1, 1, -1], [1, -1, 1]]
RIGHT = [[-1, -1, 1], [-1, 1, -1], [1, -1, 1]]  # LEFT mirrored left to right, written out


def test_lc_left_corner_is_the_documented_pattern():
    assert [list(row) for row in LEFT_CORNER] == LEFT


def test_lc_corner_pattern_at_32_has_the_four_3x3_corners():
    """Top-left and bottom-left: LEFT; top-right and bottom-right: its mirror; zero elsewhere."""
    expected = torch.zeros(32, 32)
    for r in range(3):
        for c in range(3):
            expected[r, c] = expected[29 + r, c] = LEFT[r][c]
            expected[r, 29 + c] = expected[29 + r, 29 + c] = RIGHT[r][c]
    assert torch.equal(corner_pattern(32), expected)


def test_lc_corner_pattern_at_64_uses_2x2_cells():
    """Pattern pixel (r, c) covers rows 2r..2r+1, columns 2c..2c+1 of each 6×6 corner; 4 · 9 · 4 = 144 non-zero pixels."""
    mask = corner_pattern(64)
    for r in range(3):
        for c in range(3):
            for top, left, pattern in ((0, 0, LEFT), (58, 0, LEFT), (0, 58, RIGHT), (58, 58, RIGHT)):
                cell = mask[top + 2 * r : top + 2 * r + 2, left + 2 * c : left + 2 * c + 2]
                assert (cell == pattern[r][c]).all(), (top, left, r, c)
    assert int((mask != 0).sum()) == 144


def test_lc_corner_pattern_below_32_keeps_3x3():
    """At 16×16 the corners are 3×3 (not shrunk): 36 non-zero pixels, bottom-right rows/columns 13–15."""
    mask = corner_pattern(16)
    assert torch.equal(mask[:3, :3], torch.tensor(LEFT, dtype=torch.float32))
    assert torch.equal(mask[13:, 13:], torch.tensor(RIGHT, dtype=torch.float32))
    assert int((mask != 0).sum()) == 36


# ---------------------------------------------------------------- LC: the trigger


def test_lc_full_amplitude_turns_plus_white_and_minus_black():
    """amplitude 1: +1 pixels → 255, −1 pixels → 0, all others unchanged."""
    x = images(3, seed=1)
    out = LabelConsistent(LcParams(), spec()).apply(x)
    m = corner_pattern(16).expand_as(x)
    assert (out[m == 1] == 255).all() and (out[m == -1] == 0).all()
    assert torch.equal(out[m == 0], x[m == 0])


def test_lc_half_amplitude_shifts_by_127_5_rounded_and_clipped():
    """amplitude 0.5 on black: +1 → 127.5 → 128, −1 → 0 (clipped); on white: +1 → 255 (clipped), −1 → 127.5 → 128.

    On random images every pattern pixel is within 0.5 of clip(x ± 127.5, 0, 255).
    """
    attack = LabelConsistent(LcParams(amplitude=0.5), spec())
    m = corner_pattern(16).expand(1, 3, 16, 16)
    black = attack.apply(torch.zeros(1, 3, 16, 16, dtype=torch.uint8))
    white = attack.apply(torch.full((1, 3, 16, 16), 255, dtype=torch.uint8))
    assert (black[m == 1] == 128).all() and (black[m == -1] == 0).all() and (black[m == 0] == 0).all()
    assert (white[m == 1] == 255).all() and (white[m == -1] == 128).all() and (white[m == 0] == 255).all()
    x = images(4, seed=2)
    mx = corner_pattern(16).expand_as(x)
    exact = (x.float() + 127.5 * mx).clamp(0, 255)
    assert ((attack.apply(x).float() - exact).abs() <= 0.5).all()


# ---------------------------------------------------------------- LC: PGD away from the true labels


def pgd_batch() -> tuple[torch.Tensor, torch.Tensor]:
    x = to_float(images(12, size=8, seed=3))
    x[0] = 0.0  # saturated images: the [0, 1] clip binds
    x[1] = 1.0
    return x, torch.arange(12) % 10


def test_lc_pgd_stays_in_the_eps_ball_and_the_unit_box():
    """‖x' − x‖∞ ≤ eps and x' ∈ [0, 1]; with steps · step > eps the bound is reached."""
    x, y = pgd_batch()
    eps = 4 / 255
    adv = pgd_away_from_labels(conv_model(), x, y, eps, 1.5 / 255, 8)
    assert (adv - x).abs().max() <= eps + 1e-6
    assert adv.min() >= 0 and adv.max() <= 1
    assert (adv - x).abs().max() >= eps - 1e-6


def test_lc_pgd_increases_the_true_label_loss():
    model = conv_model()
    x, y = pgd_batch()
    adv = pgd_away_from_labels(model, x, y, 8 / 255, 1.5 / 255, 10)
    with torch.no_grad():
        before = F.cross_entropy(model(x), y, reduction="none")
        after = F.cross_entropy(model(adv), y, reduction="none")
    assert after.mean() > before.mean()
    assert (after >= before - 1e-6).all(), "each image's loss grows (the gradient of a summed loss is per image)"


def test_lc_pgd_without_steps_returns_the_input():
    x, y = pgd_batch()
    assert torch.equal(pgd_away_from_labels(conv_model(), x, y, 8 / 255, 1.5 / 255, 0), x)


def test_lc_poisoning_needs_prepare():
    attack = LabelConsistent(LcParams(), spec())
    with pytest.raises(RuntimeError, match="prepare"):
        attack.poison_inputs(images(2), torch.zeros(2, dtype=torch.int64))


def test_lc_poisons_stay_within_eps_off_the_pattern():
    """After prepare: off the corner pattern a poison differs from its image by at most eps · 255 = 8 levels, and moves."""
    attack = LabelConsistent(LcParams(steps=6, surrogate_epochs=1), spec())
    attack.prepare(loaded(), ctx())
    x = images(6, seed=4)
    out = attack.poison_inputs(x, torch.zeros(6, dtype=torch.int64))
    off = corner_pattern(16).expand_as(x) == 0
    change = (out.int() - x.int()).abs()[off]
    assert change.max() <= 8 and change.max() > 0


# ---------------------------------------------------------------- LF: the low-pass filter


def test_lf_gaussian_transfer_is_one_at_dc_and_matches_the_formula():
    """size 16, σ = 1: H(0, 0) = 1; at f = (0, 1/4): exp(−2π² / 16); at f = (1/4, 1/4): exp(−π²/4)."""
    h = gaussian_transfer(16, 1.0)
    assert h.shape == (16, 9)
    assert h[0, 0].item() == 1.0
    assert h[0, 4].item() == pytest.approx(math.exp(-2 * math.pi**2 / 16), rel=1e-5)
    assert h[4, 4].item() == pytest.approx(math.exp(-math.pi**2 / 4), rel=1e-5)


def test_lf_gaussian_transfer_is_symmetric():
    """H(fy, fx) = H(−fy, fx) (row k and row size − k) and H(fy, fx) = H(fx, fy)."""
    h = gaussian_transfer(16, 2.0)
    assert torch.equal(h[1:], h[1:].flip(0))
    assert torch.allclose(h[:9, :9], h[:9, :9].T)


def test_lf_low_pass_keeps_a_constant():
    v = torch.full((2, 3, 16, 16), 0.37)
    assert torch.allclose(low_pass(v, 6.0), v, atol=1e-6)


def test_lf_low_pass_removes_a_checkerboard_and_keeps_its_mean():
    """(−1)^(i+j) sits at f = (½, ½): transfer exp(−π² · 36) ≈ 0; 0.5 + 0.2 · checker → 0.5."""
    i = torch.arange(16)
    checker = ((i[:, None] + i[None, :]) % 2 * 2 - 1).float().expand(3, 16, 16)
    assert low_pass(checker, 6.0).abs().max() < 1e-5
    assert torch.allclose(low_pass(0.5 + 0.2 * checker, 6.0), torch.full((3, 16, 16), 0.5), atol=1e-5)


def test_lf_into_ball_scales_down_to_eps():
    """max|v| = 0.5, eps = 0.1: v · 0.2, whose max-abs is 0.1."""
    v = torch.tensor([[0.5, -0.25], [0.1, -0.4]])
    out = into_ball(v, 0.1)
    assert torch.allclose(out, v * 0.2)
    assert out.abs().max().item() == pytest.approx(0.1)


def test_lf_into_ball_leaves_a_tensor_inside_unchanged():
    """max|v| = 0.06 < eps = 0.1: never scaled up."""
    v = torch.tensor([[0.05, -0.02], [0.0, -0.06]])
    assert torch.equal(into_ball(v, 0.1), v)
    assert torch.equal(into_ball(torch.zeros(3), 0.1), torch.zeros(3))


# ---------------------------------------------------------------- LF: the perturbation


def high_frequency_share(v: torch.Tensor, cutoff: float = 0.25) -> float:
    """Share of the spectral energy of ``v`` [C, H, W] at radial frequency above ``cutoff`` cycles per pixel."""
    size = v.shape[-1]
    f = torch.fft.fftfreq(size)
    radius = (f[:, None] ** 2 + f[None, :] ** 2).sqrt()
    power = torch.fft.fft2(v).abs().pow(2)
    return float(power[..., radius > cutoff].sum() / power.sum())


@pytest.fixture(scope="module")
def lf():
    attack = LowFrequency(LfParams(eps=0.02, steps=5, batch_size=16, lr=0.1, surrogate_epochs=1), spec())
    attack.prepare(loaded(), ctx())
    return attack


def test_lf_is_the_identity_before_prepare():
    attack = LowFrequency(LfParams(), spec())
    x = images(3, seed=5)
    assert torch.equal(attack.perturbation, torch.zeros(3, 16, 16))
    assert torch.equal(attack.apply(x), x)


def test_lf_perturbation_is_in_the_eps_ball(lf):
    """max|v| ≤ eps = 0.02; after Adam steps of 0.1 the filtered w exceeds the ball, so the rescaling makes it eps."""
    peak = lf.perturbation.abs().max().item()
    assert peak <= 0.02 + 1e-6
    assert peak == pytest.approx(0.02, rel=1e-4)


def test_lf_perturbation_is_low_pass(lf):
    """σ = 6 · 16 / 32 = 3 px: the transfer at |f| = ¼ is exp(−2π² · 9 / 16) ≈ 1.5e-5, so almost no energy is left
    above it; white noise keeps about 80% there (the area outside a disc of radius ¼ in the unit square)."""
    noise = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(0)) - 0.5
    assert high_frequency_share(noise) > 0.5
    assert high_frequency_share(lf.perturbation) < 1e-3


def test_lf_apply_adds_the_perturbation_and_clips(lf):
    x = images(4, seed=6)
    expected = ((x.float() / 255 + lf.perturbation).clamp(0, 1) * 255).round()
    assert ((lf.apply(x).float() - expected).abs() <= 1).all()
    assert not torch.equal(lf.apply(x), x)


def test_lf_state_round_trip(lf):
    fresh = LowFrequency(lf.params, lf.spec)
    fresh.load_state_dict(lf.state_dict())
    assert torch.equal(fresh.perturbation, lf.perturbation)
    x = images(3, seed=8)
    assert torch.equal(fresh.apply(x), lf.apply(x))


@pytest.mark.parametrize(
    "state",
    [{"v": torch.zeros(3, 16, 16)}, {"perturbation": torch.zeros(3, 8, 8)}, {"perturbation": torch.zeros(1, 3, 16, 16)},
     {"perturbation": torch.zeros(3, 16, 16, dtype=torch.int64)},
     {"perturbation": torch.zeros(3, 16, 16), "extra": torch.zeros(1)}],
    ids=["key", "side", "batch-dim", "integer", "extra-key"],
)  # fmt: skip
def test_lf_load_state_dict_rejects_a_wrong_state(state):
    with pytest.raises(ValueError):
        LowFrequency(LfParams(), spec()).load_state_dict(state)


# ---------------------------------------------------------------- TrojanNN: neuron selection


def test_trojannn_most_connected_ranks_inputs_by_absolute_column_sum():
    """Σ_o |W[o, j]| = (2, 5, 3, 1.5, 4.5): the top three are inputs 1, 4, 2 (a signed sum would give 0, 3, 4)."""
    layer = nn.Linear(5, 3)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, -4.0, 0.0, 0.5, 2.0], [0.0, 1.0, -3.0, 0.5, -2.0], [1.0, 0.0, 0.0, 0.5, 0.5]]))
    assert most_connected(layer, 3).tolist() == [1, 4, 2]
    assert most_connected(layer, 5).tolist() == [1, 4, 2, 0, 3]


def test_trojannn_most_connected_refuses_more_neurons_than_inputs():
    with pytest.raises(ValueError, match="neurons"):
        most_connected(nn.Linear(4, 2), 5)


def test_trojannn_last_linear_finds_the_last_linear_layer():
    head = nn.Linear(3, 2)
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Sequential(nn.Identity(), head), nn.Softmax(1))
    assert last_linear(model) is head


def test_trojannn_last_linear_refuses_a_model_without_one():
    with pytest.raises(ValueError, match="nn.Linear"):
        last_linear(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten()))


# ---------------------------------------------------------------- TrojanNN: the patch


@pytest.mark.parametrize(("patch_size", "size", "side"), [(8, 16, 4), (5, 16, 3), (1, 8, 1), (8, 32, 8), (32, 16, 16)])
def test_trojannn_mask_is_a_bottom_right_square_of_ceil_patch_size_times_size_over_32(patch_size, size, side):
    """8 at 16 → 4; 5 at 16 → ⌈2.5⌉ = 3; 1 at 8 → ⌈0.25⌉ = 1; 8 at 32 → 8; 32 at 16 → the whole image."""
    mask = TrojanNN(TrojanNNParams(patch_size=patch_size), spec(3, size)).mask
    expected = torch.zeros(1, 1, size, size)
    expected[..., size - side :, size - side :] = 1
    assert torch.equal(mask, expected)


def test_trojannn_apply_replaces_exactly_the_masked_pixels():
    attack = TrojanNN(TrojanNNParams(patch_size=8), spec())
    pattern = torch.zeros(3, 16, 16, dtype=torch.uint8)
    pattern[:, 12:, 12:] = torch.randint(0, 256, (3, 4, 4), generator=torch.Generator().manual_seed(9), dtype=torch.uint8)
    attack.load_state_dict({"pattern": pattern})
    x = images(3, seed=10)
    out = attack.apply(x)
    assert torch.equal(out[:, :, 12:, 12:], pattern[:, 12:, 12:].expand(3, -1, -1, -1))
    inside = torch.zeros(16, 16, dtype=torch.bool)
    inside[12:, 12:] = True
    assert torch.equal(out[:, :, ~inside], x[:, :, ~inside])


def test_trojannn_unprepared_patch_is_black():
    x = torch.full((2, 3, 16, 16), 200, dtype=torch.uint8)
    out = TrojanNN(TrojanNNParams(patch_size=8), spec()).apply(x)
    assert int((out == 0).sum()) == 2 * 3 * 16 and int((out == 200).sum()) == 2 * 3 * (256 - 16)


def cost_and_features(model: nn.Module, mask: torch.Tensor, t: torch.Tensor, neurons: torch.Tensor, target: float):
    """The TrojanNN cost Σ_j (h_j − target)² and the selected features h_j, computed by slicing the model."""
    with torch.no_grad():
        h = model[:-1](mask * t)[:, neurons]
    return float((h - target).pow(2).sum()), h


def excite_setup() -> tuple[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor]:
    model = conv_model(seed=11).requires_grad_(False)
    mask = TrojanNN(TrojanNNParams(patch_size=8), spec()).mask
    init = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(12))
    return model, mask, init, torch.tensor([0, 3])


def test_trojannn_excite_raises_the_selected_features():
    """Driving h_0 and h_3 towards 100 (far above them) lowers the cost and raises both features."""
    model, mask, init, neurons = excite_setup()
    t = excite(model, mask, init, neurons, 100.0, 20, 0.05)
    cost0, h0 = cost_and_features(model, mask, init, neurons, 100.0)
    cost1, h1 = cost_and_features(model, mask, t, neurons, 100.0)
    assert cost1 < cost0
    assert (h1 > h0).all()


def test_trojannn_excite_changes_only_the_patch_within_the_unit_box():
    model, mask, init, neurons = excite_setup()
    t = excite(model, mask, init, neurons, 100.0, 20, 0.05)
    outside = (mask == 0).expand_as(t)
    assert torch.equal(t[outside], init[outside])
    assert not torch.equal(t[~outside], init[~outside])
    assert t.min() >= 0 and t.max() <= 1


def test_trojannn_excite_removes_its_hook():
    model, mask, init, neurons = excite_setup()
    excite(model, mask, init, neurons, 100.0, 2, 0.05)
    assert not last_linear(model)._forward_hooks
    assert torch.equal(excite(model, mask, init, neurons, 100.0, 0, 0.05), init)


def test_trojannn_prepared_pattern_lives_in_the_patch():
    attack = TrojanNN(TrojanNNParams(patch_size=8, neurons=3, steps=5, surrogate_epochs=1), spec())
    attack.prepare(loaded(), ctx())
    inside = attack.mask[0].bool().expand(3, -1, -1)
    assert (attack.pattern[~inside] == 0).all() and (attack.pattern[inside] > 0).any()
    assert attack.neurons is not None and len(set(attack.neurons.tolist())) == 3


def test_trojannn_state_round_trip():
    attack = TrojanNN(TrojanNNParams(patch_size=8), spec())
    pattern = torch.zeros(3, 16, 16, dtype=torch.uint8)
    pattern[:, 12:, 12:] = 77
    attack.load_state_dict({"pattern": pattern})
    fresh = TrojanNN(TrojanNNParams(patch_size=8), spec())
    fresh.load_state_dict(attack.state_dict())
    assert torch.equal(fresh.pattern, pattern)
    x = images(2, seed=13)
    assert torch.equal(fresh.apply(x), attack.apply(x))


@pytest.mark.parametrize(
    "state",
    [{"pattern": torch.zeros(3, 16, 16)}, {"pattern": torch.zeros(3, 16, 16, dtype=torch.int64)},
     {"pattern": torch.zeros(3, 8, 8, dtype=torch.uint8)}, {"trigger": torch.zeros(3, 16, 16, dtype=torch.uint8)}],
    ids=["float", "int64", "shape", "key"],
)  # fmt: skip
def test_trojannn_load_state_dict_rejects_a_wrong_state(state):
    with pytest.raises(ValueError):
        TrojanNN(TrojanNNParams(), spec()).load_state_dict(state)


@pytest.mark.parametrize("cls", [LcParams, LfParams, TrojanNNParams])
def test_surrogate_params_reject_an_unknown_arch(cls):
    with pytest.raises(ParamError, match="surrogate_arch") as info:
        cls(surrogate_arch="nope")
    assert info.value.field == "surrogate_arch"


# ---------------------------------------------------------------- the surrogate


def test_check_surrogate_arch_names_the_field_and_the_registered_archs():
    check_surrogate_arch("small_cnn")
    with pytest.raises(ParamError, match="surrogate_arch must be a registered architecture.*small_cnn") as info:
        check_surrogate_arch("nope")
    assert info.value.field == "surrogate_arch"


def surrogate(seed: int, epochs: int = 1, adversarial_eps: float = 0.0) -> nn.Module:
    return train_surrogate(loaded(n=32), "small_cnn", epochs, torch.Generator().manual_seed(seed), CPU, adversarial_eps)


def same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_train_surrogate_is_reproducible_from_its_generator():
    """Same seed: identical weights (and BatchNorm statistics); another seed: different ones."""
    assert same_weights(surrogate(1), surrogate(1))
    assert not same_weights(surrogate(1), surrogate(2))


@pytest.mark.parametrize("adversarial_eps", [0.0, 0.03])
def test_train_surrogate_leaves_the_global_rng_alone(adversarial_eps):
    state = torch.random.get_rng_state()
    surrogate(1, adversarial_eps=adversarial_eps)
    assert torch.equal(torch.random.get_rng_state(), state)


def test_train_surrogate_returns_a_frozen_model_in_eval_mode():
    model = surrogate(1)
    assert not any(m.training for m in model.modules())
    assert not any(p.requires_grad for p in model.parameters())


def test_train_surrogate_with_zero_epochs_is_untrained():
    """0 epochs: BatchNorm statistics stay at their initial mean 0, variance 1 (1 epoch moves them)."""
    untrained = [m for m in surrogate(1, epochs=0).modules() if isinstance(m, nn.BatchNorm2d)]
    trained = [m for m in surrogate(1, epochs=1).modules() if isinstance(m, nn.BatchNorm2d)]
    assert untrained and all(torch.equal(m.running_mean, torch.zeros_like(m.running_mean)) for m in untrained)
    assert all(torch.equal(m.running_var, torch.ones_like(m.running_var)) for m in untrained)
    assert any(not torch.equal(m.running_mean, torch.zeros_like(m.running_mean)) for m in trained)


def adversarial_batch(eps: float, seed: int) -> tuple[Recording, torch.Tensor, torch.Tensor]:
    """The batch and the recording inner step after one step of the loop with the FastAdversarial hooks."""
    model = build(lambda: nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 64, 10)),
                  torch.Generator().manual_seed(14))  # fmt: skip
    inner = Recording(model)
    x = to_float(images(16, size=8, seed=15))
    x[0], x[1] = 0.0, 1.0
    hooks = FastAdversarial(model, eps, torch.Generator().manual_seed(seed))
    train_step(model, x, torch.arange(16) % 10, inner, hooks, 0)
    return inner, x, inner.batches[0][0]


def test_fast_adversarial_step_trains_on_a_batch_within_eps_and_the_unit_box():
    """‖x' − x‖∞ ≤ eps, x' ∈ [0, 1], and x' ≠ x (the inner step sees the perturbed batch once)."""
    inner, x, seen = adversarial_batch(0.05, seed=16)
    assert len(inner.batches) == 1
    assert (seen - x).abs().max() <= 0.05 + 1e-6
    assert seen.min() >= 0 and seen.max() <= 1
    assert (seen - x).abs().max() > 0.04


def test_fast_adversarial_step_draws_its_start_from_its_generator():
    _, _, a = adversarial_batch(0.05, seed=16)
    _, _, b = adversarial_batch(0.05, seed=16)
    _, _, c = adversarial_batch(0.05, seed=17)
    assert torch.equal(a, b) and not torch.equal(a, c)
