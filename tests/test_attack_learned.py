"""Blind, SSBA and Poison Ink by hand: the blind loss and its MGDA scales, the stego triggers' properties.

The registry-generated tests (test_triggers, test_poison, test_attack_training) cover the
generic contract; these check what is specific to each attack on tiny tensors.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from attacks._generators import BACKDOOR, CLEAN, build
from attacks._stego import StegoEncoder, ramp, round_straight_through
from attacks.base import AttackContext
from attacks.blind import PATTERN, Blind, BlindParams, mgda_scales, pattern_mask
from attacks.poison_ink import PoisonInk, PoisonInkParams, edge_mask
from attacks.ssba import SSBA, SSBAParams, secret_bits
from bench.core.data import DatasetSpec, ImageSet, LoadedDataset, to_float, to_uint8
from bench.core.params import ParamError
from bench.core.poison import Target
from bench.core.train import GradientStep, train_step


pytestmark = pytest.mark.usefixtures("one_thread")


def spec(channels: int = 3, size: int = 8) -> DatasetSpec:
    return DatasetSpec(f"t{channels}x{size}", channels, size, 10, (0.5,) * channels, (0.25,) * channels)


def images(n: int, channels: int = 3, size: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 255, (n, channels, size, size), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def ctx(seed: int = 0, target: Target = Target("all2one", 0), rho: float = 0.25) -> AttackContext:
    return AttackContext(target, rho, torch.Generator().manual_seed(seed), torch.device("cpu"))


# ---------------------------------------------------------------- Blind: the pattern


@pytest.mark.parametrize(("size", "top", "left"), [(32, 3, 23), (16, 1, 11), (8, 0, 5), (64, 6, 46)])
def test_blind_stamps_the_5x3_pattern_at_backdoorbench_position(size, top, left):
    """Rows 3–7, columns 23–25 at 32×32 (BackdoorBench), scaled in position, 5×3 pixels at every side."""
    x = images(2, 3, size, seed=size)  # values in [0, 254]: a white pixel is a change
    out = Blind(BlindParams(), spec(3, size)).apply(x)
    expected = x.clone()
    for r, row in enumerate(PATTERN):
        for c, v in enumerate(row):
            if v >= 0:
                expected[:, :, top + r, left + c] = 255 * v
    assert torch.equal(out, expected)
    assert int((out != x).flatten(2).any(1).sum(1).max()) <= 9, "only the 9 pattern pixels may change"


def test_blind_pattern_mask_has_six_white_and_three_black_pixels():
    mask, values = pattern_mask(16)
    assert int(mask.sum()) == 9
    assert int(values[mask].sum()) == 6 and int((values[mask] == 0).sum()) == 3
    assert (values[~mask] == 0).all()


def test_blind_refuses_images_smaller_than_its_pattern():
    with pytest.raises(ValueError, match="side"):
        Blind(BlindParams(), spec(3, 4))


# ---------------------------------------------------------------- Blind: MGDA


def as_grads(*vectors: list[float]) -> list[list[torch.Tensor]]:
    """Each vector as a two-parameter gradient list (to check that dot products run over all parameters)."""
    return [[torch.tensor(v[:1]), torch.tensor(v[1:])] for v in vectors]


def test_mgda_orthogonal_gradients_weigh_the_shorter_one_more():
    """g_b ⊥ g_n: γ = ‖g_n‖² / (‖g_b‖² + ‖g_n‖²), the minimum-norm point of the segment."""
    g_b, g_n = as_grads([3.0, 0.0], [0.0, 1.0])
    s_b, s_n = mgda_scales(g_b, g_n, torch.tensor(1.0), torch.tensor(1.0), "none")
    assert s_b.item() == pytest.approx(1 / 10) and s_n.item() == pytest.approx(9 / 10)


def test_mgda_aligned_gradients_put_all_weight_on_the_shorter_one():
    g_b, g_n = as_grads([1.0, 1.0], [2.0, 2.0])
    s_b, s_n = mgda_scales(g_b, g_n, torch.tensor(1.0), torch.tensor(1.0), "none")
    assert (s_b.item(), s_n.item()) == (1.0, 0.0)
    s_b, _ = mgda_scales(g_n, g_b, torch.tensor(1.0), torch.tensor(1.0), "none")
    assert s_b.item() == 0.0


def test_mgda_equal_gradients_split_evenly():
    g, h = as_grads([1.0, -2.0], [1.0, -2.0])
    s_b, s_n = mgda_scales(g, h, torch.tensor(1.0), torch.tensor(1.0), "none")
    assert s_b.item() == 0.5 and s_n.item() == 0.5


@pytest.mark.parametrize(("normalize", "expected"), [("none", 0.2), ("loss", 0.5), ("loss+", 0.8), ("l2", 0.5)])
def test_mgda_normalisers(normalize, expected):
    """g_b = (2, 0), g_n = (0, 1), losses 1 and 0.5; orthogonal, so γ = ‖v_n‖² / (‖v_b‖² + ‖v_n‖²).

    none: v_b = (2, 0), v_n = (0, 1) → 1 / 5. loss: divided by 1 and 0.5 → (2, 0), (0, 2) → 1 / 2.
    loss+: divided by ℓ‖g‖ = 2 and 0.5 → (1, 0), (0, 2) → 4 / 5. l2: unit vectors → 1 / 2.
    """
    g_b, g_n = as_grads([2.0, 0.0], [0.0, 1.0])
    s_b, s_n = mgda_scales(g_b, g_n, torch.tensor(1.0), torch.tensor(0.5), normalize)
    assert s_b.item() == pytest.approx(expected, abs=1e-4)
    assert (s_b + s_n).item() == pytest.approx(1.0)


# ---------------------------------------------------------------- Blind: the loss it trains with


def linear_model() -> nn.Module:
    return build(lambda: nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 10)), torch.Generator().manual_seed(3))


def batch(seed: int = 4, n: int = 20) -> tuple[torch.Tensor, torch.Tensor]:
    return to_float(images(n, seed=seed)), torch.arange(n) % 10


class BlindTraining:
    """Blind's hooks around a plain SGD step (lr 0.5), fed one batch at a time as the shared loop feeds them."""

    def __init__(self, params: BlindParams, model: nn.Module, rho: float, seed: int, target: Target) -> None:
        self.attack, self.model = Blind(params, spec()), model
        self.hooks = self.attack.training_hooks(model, ctx(seed, target, rho))
        self.update, self.step = GradientStep(torch.optim.SGD(model.parameters(), lr=0.5)), 0

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.step += 1
        return train_step(self.model, x, y, self.update, self.hooks, self.step - 1)

    @property
    def last(self):
        return self.hooks.last

    @property
    def last_scales(self):
        return self.hooks.last_scales


def blind_update(params: BlindParams, model: nn.Module, rho: float = 0.25, seed: int = 0, target=Target("all2one", 0)):
    training = BlindTraining(params, model, rho, seed, target)
    return training.attack, training.update, training


@pytest.mark.parametrize("balance", ["fixed", "mgda"])
def test_blind_step_is_the_gradient_of_the_weighted_sum_of_both_tasks(balance):
    """One SGD step moves the weights by −lr ∇(s_b ℓ(copy) + s_n ℓ(batch)), with the copy and scales it reports."""
    params = BlindParams(loss_balance=balance, backdoor_weight=0.7, normal_weight=1.3)
    model = linear_model()
    reference = copy.deepcopy(model)
    _, inner, update = blind_update(params, model)
    x, y = batch()
    update(x, y)
    s_b, s_n = update.last_scales
    if balance == "fixed":
        assert (s_b.item(), s_n.item()) == pytest.approx((0.7, 1.3))
    else:
        assert 0 <= s_b.item() <= 1 and (s_b + s_n).item() == pytest.approx(1.0)
    copy_x, copy_y = update.last.x, update.last.y
    loss = s_b * F.cross_entropy(reference(copy_x), copy_y) + s_n * F.cross_entropy(reference(x), y)
    loss.backward()
    for p, q in zip(model.parameters(), reference.parameters()):
        assert torch.allclose(p, q - 0.5 * q.grad, atol=1e-6)


@pytest.mark.parametrize("target", [Target("all2one", 7), Target("all2all")], ids=["all2one", "all2all"])
def test_blind_copy_stamps_rho_of_the_rows_and_relabels_them(target):
    attack, _, update = blind_update(BlindParams(loss_balance="fixed"), linear_model(), rho=0.5, target=target)
    x, y = batch(n=40)
    update(x, y)
    roles, xs, ys = update.last.role, update.last.x, update.last.y
    bd = roles == BACKDOOR
    assert int(bd.sum()) == 20
    assert torch.equal(xs[bd], attack.stamp(x[bd])) and torch.equal(xs[~bd], x[~bd])
    expected = torch.full_like(y[bd], 7) if target.mode == "all2one" else (y[bd] + 1) % 10
    assert torch.equal(ys[bd], expected) and torch.equal(ys[~bd], y[~bd])
    assert torch.equal(to_uint8(attack.stamp(x)), attack.apply(to_uint8(x))), "the training stamp is the test trigger"


def test_blind_warmup_waits_for_a_low_main_task_loss():
    """No copy until warmup_batches main-task losses average below the threshold; never, with a tiny threshold."""
    _, _, waiting = blind_update(BlindParams(warmup_batches=2, loss_threshold=100.0), linear_model(), rho=0.5)
    _, _, never = blind_update(BlindParams(warmup_batches=2, loss_threshold=1e-9), linear_model(), rho=0.5)
    seen_waiting, seen_never = [], []
    for i in range(4):
        x, y = batch(seed=10 + i)
        for update, seen in ((waiting, seen_waiting), (never, seen_never)):
            update(x, y)
            seen.append(int((update.last.role == BACKDOOR).sum()))
            if seen[-1] == 0:
                assert (update.last.role == CLEAN).all() and torch.equal(update.last.y, y)
    assert seen_waiting[:2] == [0, 0] and all(n == 10 for n in seen_waiting[2:])
    assert seen_never == [0, 0, 0, 0]


def test_blind_loss_is_the_loop_loss_of_any_update():
    """The blind loss reaches the classifier through the loop's loss hook, whatever the victim's update does with it."""
    params = BlindParams(loss_balance="fixed", backdoor_weight=0.7, normal_weight=1.3)
    model = linear_model()
    hooks = Blind(params, spec()).training_hooks(model, ctx(0, Target("all2one", 0), 0.25))
    x, y = batch()
    seen = []

    class Observer:
        optimizer = torch.optim.SGD(model.parameters(), lr=0.0)

        def __call__(self, bx, by, loss):
            seen.append(loss(bx, by).detach())
            return seen[-1]

    train_step(model, x, y, Observer(), hooks, 0)
    copy_x, copy_y = hooks.last.x, hooks.last.y
    with torch.no_grad():
        expected = 0.7 * F.cross_entropy(model(copy_x), copy_y) + 1.3 * F.cross_entropy(model(x), y)
    assert torch.allclose(seen[0], expected)
    assert not torch.equal(copy_x, x)


@pytest.mark.parametrize(
    "bad, field",
    [(dict(loss_balance="sum"), "loss_balance"), (dict(mgda_normalize="max"), "mgda_normalize"),
     (dict(backdoor_weight=0.0, normal_weight=0.0), "backdoor_weight")],
)  # fmt: skip
def test_blind_rejects_broken_rules(bad, field):
    with pytest.raises(ParamError, match=field) as raised:
        BlindParams(**bad)
    assert raised.value.field == field


# ---------------------------------------------------------------- shared stego pieces


def test_ramp_is_zero_then_linear_to_one():
    assert [ramp(s, 10, 0.4) for s in (0, 3)] == [0.0, 0.0]
    assert [ramp(s, 10, 0.4) for s in (4, 6, 9)] == pytest.approx([1 / 6, 3 / 6, 1.0])
    assert ramp(0, 10, 0.0) == pytest.approx(0.1)


def test_straight_through_rounding_rounds_forward_and_passes_gradients():
    x = torch.tensor([0.1, 0.5, 0.999], requires_grad=True)
    out = round_straight_through(x)
    assert torch.allclose(out, torch.tensor([26.0, 128.0, 255.0]) / 255)  # 25.5 and 127.5: half to even
    out.sum().backward()
    assert torch.equal(x.grad, torch.ones(3))


def test_stego_encoder_residual_is_bounded_and_per_image():
    enc = build(lambda: StegoEncoder(3, 2, 8, eps=0.05), torch.Generator().manual_seed(0))
    with torch.no_grad():
        enc.out.bias.fill_(50.0)  # saturate tanh
        x, s = torch.rand(4, 3, 8, 8), torch.rand(4, 2, 8, 8)
        r = enc.residual(x, s)
        assert r.abs().max() <= 0.05 + 1e-6 and r.abs().min() > 0.049
        assert torch.allclose(enc(x, s), (x + r).clamp(0, 1))
        assert torch.allclose(enc(x[1:2], s[1:2]), enc(x, s)[1:2], atol=1e-6)


# ---------------------------------------------------------------- SSBA


def prepared(cls, params, channels: int = 3, size: int = 8, n: int = 48, seed: int = 0):
    attack = cls(params, spec(channels, size))
    x = images(n, channels, size, seed=7)
    attack.prepare(LoadedDataset(attack.spec, ImageSet(x, torch.arange(n) % 10), ImageSet(x[:8], torch.arange(8))), ctx(seed))
    return attack


@pytest.fixture(scope="module")
def ssba():
    return prepared(SSBA, SSBAParams(secret="Hi", epochs=3, batch_size=16))


def test_secret_bits_by_hand():
    assert secret_bits("A").tolist() == [0, 1, 0, 0, 0, 0, 0, 1]
    assert secret_bits("Stega!!").shape == (56,)
    assert secret_bits("Hi")[8:].tolist() == [0, 1, 1, 0, 1, 0, 0, 1]


def test_ssba_residual_is_bounded_by_eps_and_sample_specific(ssba):
    x = images(6, seed=11)
    residual = ssba.apply(x).int() - x.int()
    assert residual.abs().max() <= round(0.1 * 255) + 1
    assert residual.abs().float().mean() > 0.5, "the trained encoder leaves a visible-to-the-model residual"
    # sample-specific: not one additive pattern (compare where neither image is clipped)
    inside = ((x[0] > 30) & (x[0] < 225) & (x[1] > 30) & (x[1] < 225))
    assert not torch.equal(residual[0][inside], residual[1][inside])


def test_ssba_trigger_is_the_encoder_with_the_secret_code(ssba):
    x = images(4, seed=12)
    with torch.no_grad():
        expected = to_uint8(ssba.encoder(to_float(x), ssba.code.expand(4, -1, -1, -1)))
    assert torch.equal(ssba.apply(x), expected)
    assert ssba.code.shape == (1, 3, 8, 8)
    assert 0.0 <= ssba.decoder_bit_accuracy <= 1.0


def test_ssba_secret_changes_the_trigger():
    a = SSBA(SSBAParams(secret="Hi"), spec())
    b = SSBA(SSBAParams(secret="Ho"), spec())
    x = images(4, seed=13)
    assert torch.equal(a.encoder.state_dict()["out.weight"], b.encoder.state_dict()["out.weight"])  # same init
    assert not torch.equal(a.apply(x), b.apply(x)), "a different string hides a different code"


def test_ssba_state_needs_the_code(ssba):
    state = ssba.state_dict()
    assert "code" in state and any(k.startswith("encoder.") for k in state)
    del state["code"]
    with pytest.raises(ValueError, match="code"):
        SSBA(ssba.params, ssba.spec).load_state_dict(state)


@pytest.mark.parametrize("secret", ["", "é"])
def test_ssba_secret_must_be_non_empty_ascii(secret):
    with pytest.raises(ParamError, match="secret") as raised:
        SSBAParams(secret=secret)
    assert raised.value.field == "secret"


# ---------------------------------------------------------------- Poison Ink


def step_image(height: int) -> torch.Tensor:
    """1×1×6×6: columns 0–2 black, 3–5 at ``height`` (0–255 units), as float."""
    x = torch.zeros(1, 1, 6, 6)
    x[..., 3:] = height / 255
    return x


def test_edge_mask_marks_the_two_columns_of_a_step_above_the_threshold():
    """A step of h gives a Sobel magnitude of h / √2 on both sides: an edge when h / √2 > 28, i.e. h >= 40."""
    mask = edge_mask(step_image(40), 28.0)
    expected = torch.zeros(1, 1, 6, 6)
    expected[..., 2:4] = 1
    assert torch.equal(mask, expected)
    assert edge_mask(step_image(39), 28.0).sum() == 0
    assert edge_mask(torch.full((2, 3, 6, 6), 0.7), 1.0).sum() == 0, "a flat image has no edges"


def test_edge_mask_uses_the_luma_of_colour_images():
    x = torch.zeros(1, 3, 6, 6)
    x[:, 1, :, 3:] = 1.0  # a green step: luma 0.587
    assert edge_mask(x, 0.587 * 255 / 2**0.5 - 1).sum() == 12
    assert edge_mask(x, 0.587 * 255 / 2**0.5 + 1).sum() == 0


@pytest.mark.parametrize(("channels", "ink"), [(3, (80, 160, 80)), (1, (127,))])
def test_poison_ink_watermark_is_the_coloured_edges_on_white(channels, ink):
    attack = PoisonInk(PoisonInkParams(), spec(channels, 6))
    x = step_image(200).expand(1, channels, 6, 6)
    watermark, mask = attack.watermark(x)
    assert torch.equal(mask[0, 0, :, 2:4], torch.ones(6, 2)) and mask.sum() == 12
    inked = to_uint8(watermark[0, :, 0, 2])
    assert inked.tolist() == list(ink)
    assert (watermark[0, :, :, [0, 1, 4, 5]] == 1).all()


@pytest.fixture(scope="module")
def poison_ink():
    return prepared(PoisonInk, PoisonInkParams(epochs=3, batch_size=16))


def test_poison_ink_inks_only_the_edges_at_most_max_opacity(poison_ink):
    """x' = x + o · M · (ink − x) with 0 < o < max_opacity: off the edges nothing changes."""
    x = images(4, seed=14)
    f = to_float(x)
    out = poison_ink.apply(x)
    with torch.no_grad():
        _, mask = poison_ink.watermark(f)
        opacity = 0.5 * torch.sigmoid(poison_ink.injector.residual(f, poison_ink.watermark(f)[0]))
        expected = to_uint8(f + opacity * mask * (poison_ink.ink - f))
    assert torch.equal(out, expected)
    off = (mask == 0).expand_as(x)
    assert torch.equal(out[off], x[off]) and off.any()
    change = (out.int() - x.int()).abs().float()
    room = (poison_ink.ink * 255 - x.float()).abs()
    assert (change <= 0.5 * room + 0.5).all()
    assert (change[~off] > 0).float().mean() > 0.5, "most edge pixels are inked"


def test_poison_ink_injection_depends_on_the_edges(poison_ink):
    """The injection network reads the watermark: other edges (same image) give another trigger."""
    f = to_float(images(2, seed=15))
    with torch.no_grad():
        own = poison_ink.injector(f, poison_ink.watermark(f)[0])
        blank = poison_ink.injector(f, torch.ones_like(f))
    assert not torch.allclose(own, blank)


@pytest.mark.parametrize("color", [(0, 0, 256), (-1, 0, 0), (1, 2)])
def test_poison_ink_color_must_be_three_values_in_0_255(color):
    with pytest.raises(ParamError, match="color") as raised:
        PoisonInkParams(color=color)
    assert raised.value.field == "color"
