"""ANP: channel-scaled forward passes, the adversarial neuron perturbation, and a pruning
choice that never exceeds the allowed clean-accuracy drop and zeroes exactly the chosen channels."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

import defenses.anp as anp
from bench.core.archs import build_model
from bench.core.data import ImageSet
from bench.core.params import ParamError, field_values
from bench.core.registry import create_defense
from defenses._masking import bn_layers, scaled_bn_forward, zero_bn_channels
from defenses.anp import ANPParams, adversarial_noise, candidate_prunings, choose_pruning
from defenses.base import DefenseContext


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def spec(make_spec):
    return make_spec(channels=3, size=8, num_classes=10)


@pytest.fixture
def model(spec):
    """A small_cnn with non-default BatchNorm statistics and weights (γ, β away from 1, 0)."""
    gen = torch.Generator().manual_seed(0)
    with torch.random.fork_rng(devices=[]):  # weight init reads the global generator; keep it seeded and restored
        torch.manual_seed(1)  # a model whose predictions on the probe images are not all one class
        net = build_model("small_cnn", spec)
    with torch.no_grad():
        for _, bn in bn_layers(net):
            bn.weight.copy_(0.5 + torch.rand(bn.num_features, generator=gen))
            bn.bias.copy_(torch.randn(bn.num_features, generator=gen) * 0.2)
        net.train()
        net(torch.rand(64, 3, 8, 8, generator=gen))
    return net.eval()


@pytest.fixture
def self_labelled(model):
    """120 random images labelled by the model itself: its clean accuracy is exactly 1."""
    x = torch.randint(0, 256, (120, 3, 8, 8), generator=torch.Generator().manual_seed(3), dtype=torch.uint8)
    with torch.no_grad():
        y = model(x.float() / 255).argmax(1)
    return ImageSet(x, y)


def ctx(spec, seed=0):
    return DefenseContext(spec=spec, generator=torch.Generator().manual_seed(seed), device=torch.device("cpu"))


def masks_like(model, seed=4):
    """Masks in [0, 1], most near 1 (P(m ≤ t) = t⁸): thresholds from 0.5 up prune a growing handful of channels."""
    gen = torch.Generator().manual_seed(seed)
    return [torch.rand(bn.num_features, generator=gen) ** (1 / 8) for _, bn in bn_layers(model)]


def accuracy_with_pruned(model, data, pruned):
    """By hand: copy the model, write zeros into γ and β, count correct predictions."""
    net = copy.deepcopy(model).eval()
    with torch.no_grad():
        for bn, chosen in zip([m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)], pruned):
            bn.weight.data[chosen] = 0
            bn.bias.data[chosen] = 0
        return (net(data.x.float() / 255).argmax(1) == data.y).float().mean().item()


# ---------------------------------------------------------------- masked forward


def test_unit_scales_give_the_plain_forward(model):
    x = torch.rand(8, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    ones = [torch.ones(bn.num_features) for _, bn in bn_layers(model)]
    with torch.no_grad():
        assert torch.allclose(scaled_bn_forward(model, x, ones, ones), model(x), atol=1e-6)


def test_zero_scales_equal_zeroed_channels_and_leave_the_module_alone(model):
    x = torch.rand(8, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pruned = [torch.arange(bn.num_features) % 3 == 0 for _, bn in bn_layers(model)]
    scales = [(~p).float() for p in pruned]
    with torch.no_grad():
        scaled = scaled_bn_forward(model, x, scales, scales)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    zeroed = copy.deepcopy(model)
    zero_bn_channels(zeroed, pruned)
    with torch.no_grad():
        assert torch.allclose(scaled, zeroed(x), atol=1e-6)
        assert not torch.allclose(scaled, model(x), atol=1e-3)


def test_adversarial_noise_is_one_signed_step_from_a_uniform_start_projected_to_eps(model):
    x = torch.rand(16, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    y = torch.arange(16) % 10
    masks = [torch.ones(bn.num_features) for _, bn in bn_layers(model)]
    eps = 0.4
    noise_w, noise_b = adversarial_noise(model, x, y, masks, eps, 1, torch.Generator().manual_seed(9))
    # by hand, with the same draws: start u ~ U[−ε, ε], step ε·sign(∂CE/∂u), clamp to [−ε, ε]
    gen = torch.Generator().manual_seed(9)
    start = [(torch.rand(m.shape, generator=gen) * 2 - 1) * eps for m in masks * 2]
    leaves = [s.clone().requires_grad_(True) for s in start]
    n = len(masks)
    out = scaled_bn_forward(model, x, [1 + d for d in leaves[:n]], [1 + b for b in leaves[n:]])
    grads = torch.autograd.grad(F.cross_entropy(out, y), leaves)
    expected = [(s + eps * g.sign()).clamp(-eps, eps) for s, g in zip(start, grads)]
    for got, want in zip(noise_w + noise_b, expected):
        assert torch.allclose(got, want, atol=1e-6)
        assert got.abs().max() <= eps + 1e-6
    assert any((got.abs() == eps).any() for got in noise_w)  # the step reaches the bound somewhere


# ---------------------------------------------------------------- pruning choice


def test_thresholds_run_from_zero_to_prune_max():
    assert ANPParams().levels() == pytest.approx([0.05 * k for k in range(19)])
    assert ANPParams(prune_max=0.3, prune_step=0.1).levels() == pytest.approx([0.0, 0.1, 0.2, 0.3])


def test_candidates_are_the_masks_below_each_threshold(model):
    masks = masks_like(model)
    candidates = candidate_prunings(masks, ANPParams())
    for level, pruned in zip(ANPParams().levels(), candidates):
        assert all(torch.equal(p, m <= level) for p, m in zip(pruned, masks))
    by_fraction = candidate_prunings(masks, ANPParams(prune_by="fraction", prune_max=0.5, prune_step=0.25))
    total = sum(m.numel() for m in masks)  # 32 + 32 + 64 + 64 = 192 channels
    assert [sum(int(p.sum()) for p in c) for c in by_fraction] == [0, 48, 96]
    lowest = torch.cat(masks).sort().values[47]
    assert all(torch.equal(p, m <= lowest) for p, m in zip(by_fraction[1], masks)) and total == 192


def test_choice_is_the_largest_pruning_within_the_allowed_drop(model, self_labelled):
    masks = masks_like(model)
    candidates = candidate_prunings(masks, ANPParams())
    by_hand = [accuracy_with_pruned(model, self_labelled, c) for c in candidates]
    assert min(by_hand) < 0.8, "random masks: large thresholds must wreck the model"
    sizes = []
    for max_drop in (0.0, 0.05, 0.2, 0.3):
        chosen, accuracies = choose_pruning(model, candidates, self_labelled, max_drop)
        assert accuracies == pytest.approx(by_hand)
        admissible = [c for c, acc in zip(candidates, by_hand) if 1.0 - acc <= max_drop + 1e-9]
        expected = admissible[-1] if admissible else [torch.zeros_like(m, dtype=torch.bool) for m in masks]
        assert all(torch.equal(a, b) for a, b in zip(chosen, expected))
        assert 1.0 - accuracy_with_pruned(model, self_labelled, chosen) <= max_drop + 1e-9
        sizes.append(sum(int(p.sum()) for p in chosen))
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1], "a looser budget prunes more"


def test_purify_zeroes_exactly_the_chosen_channels(model, self_labelled, spec, monkeypatch):
    masks = masks_like(model)
    monkeypatch.setattr(anp, "learn_masks", lambda *args: (masks, [1.0]))
    params = ANPParams(max_acc_drop=0.1)
    expected, _ = choose_pruning(model, candidate_prunings(masks, params), self_labelled, 0.1)
    assert 0 < sum(int(p.sum()) for p in expected) < 192
    output = create_defense("anp", **field_values(params)).run(model, self_labelled, ctx(spec))
    before, after = model.state_dict(), output.model.state_dict()
    layers = [name for name, _ in bn_layers(model)]
    for name, chosen in zip(layers, expected):
        for field in ("weight", "bias"):
            b, a = before[f"{name}.{field}"], after[f"{name}.{field}"]
            assert torch.equal(a[chosen], torch.zeros_like(a[chosen]))
            assert torch.equal(a[~chosen], b[~chosen])
    touched = {f"{name}.{field}" for name in layers for field in ("weight", "bias")}
    assert all(torch.equal(after[k], v) for k, v in before.items() if k not in touched)
    drop = 1.0 - accuracy_with_pruned(model, self_labelled, expected)
    assert drop <= 0.1


def test_anp_end_to_end_stays_within_the_allowed_drop(model, self_labelled, spec):
    params = ANPParams(iterations=20, batch_size=32, max_acc_drop=0.05)
    output = create_defense("anp", **field_values(params)).run(model, self_labelled, ctx(spec))
    net = output.model.eval()
    with torch.no_grad():
        acc = (net(self_labelled.x.float() / 255).argmax(1) == self_labelled.y).float().mean().item()
    assert acc >= 1.0 - 0.05 - 1e-9
    after = output.model.state_dict()
    for name, _ in bn_layers(model):
        zero_w, zero_b = after[f"{name}.weight"] == 0, after[f"{name}.bias"] == 0
        assert torch.equal(zero_w, zero_b), "γ and β are pruned together"
    assert output.epoch_losses and all(loss > 0 for loss in output.epoch_losses)


def test_learned_masks_stay_in_the_unit_interval_and_move(model, self_labelled, spec):
    masks, history = anp.learn_masks(model, self_labelled, ANPParams(iterations=5, batch_size=32, lr=2.0), ctx(spec))
    flat = torch.cat(masks)
    assert flat.min() >= 0 and flat.max() <= 1
    assert (flat < 1).any()
    assert len(history) == 1


def test_no_batchnorm_is_an_error(spec, self_labelled):
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 10))
    with pytest.raises(ValueError, match="BatchNorm"):
        create_defense("anp", iterations=1).run(net, self_labelled, ctx(spec))


def test_an_unknown_pruning_rule_is_rejected():
    with pytest.raises(ParamError, match="prune_by") as error:
        ANPParams(prune_by="count")
    assert error.value.field == "prune_by"
