"""NFT: per-layer clip bounds, the MixUp + mask-penalty loss by hand, masks-only training, folding."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from bench.core.archs import build_model
from bench.core.data import Augmentation
from bench.core.params import ParamError, field_values
from bench.core.registry import create_defense
from defenses import nft
from defenses._layers import batchnorms
from defenses.base import DefenseContext
from defenses.nft import MaskedBN, MaskMixUpStep, NFTParams, mask_bounds


@pytest.fixture
def spec(make_spec):
    return make_spec(channels=3, size=8, num_classes=10, augmentation=Augmentation())


@pytest.fixture
def model(spec):
    net = build_model("small_cnn", spec)
    with torch.no_grad():
        net.train()(torch.rand(16, 3, 8, 8, generator=torch.Generator().manual_seed(0)))
        for _, bn in batchnorms(net):
            bn.weight.uniform_(0.5, 1.5, generator=torch.Generator().manual_seed(1))
    return net


def batch(n: int = 8):
    gen = torch.Generator().manual_seed(42)
    return torch.rand(n, 3, 8, 8, generator=gen), torch.randint(0, 10, (n,), generator=gen)


def test_clip_bounds_are_alpha_exp_minus_beta_l():
    assert mask_bounds(4, 0.8, 0.5) == pytest.approx([0.8 * math.exp(-0.5 * l) for l in (1, 2, 3, 4)])
    assert mask_bounds(3, 0.8, 0.5) == pytest.approx([0.485225, 0.294304, 0.178504], abs=1e-6)


def test_clip_puts_each_layer_into_its_own_range(model):
    masked = MaskedBN(model, alpha=0.8, beta=0.5)
    assert len(masked.masks) == 4
    with torch.no_grad():
        for m in masked.masks:
            m.copy_(torch.linspace(-1.0, 2.0, len(m)))
    masked.clip()
    for layer, m in enumerate(masked.masks, start=1):
        low = 0.8 * math.exp(-0.5 * layer)
        assert m.min().item() == pytest.approx(low) and m.max().item() == 1.0
        inside = torch.linspace(-1.0, 2.0, len(m))
        assert torch.equal(m, inside.clamp(low, 1.0))


def test_a_step_trains_only_the_masks_and_keeps_them_in_bounds(model):
    masked = MaskedBN(model, alpha=0.8, beta=0.5)
    before = {k: v.clone() for k, v in model.named_parameters()}
    step = MaskMixUpStep(masked, torch.optim.SGD(masked.masks, lr=1e4), 0.0, torch.Generator().manual_seed(0))
    step(*batch(), None)  # its objective is its own
    assert all(torch.equal(v, before[k]) for k, v in model.named_parameters()), "the network's own weights are untouched"
    for m, low in zip(masked.masks, mask_bounds(4, 0.8, 0.5)):
        assert (m >= low - 1e-7).all() and (m <= 1.0).all()
    assert any((m == low).any() for m, low in zip(masked.masks, mask_bounds(4, 0.8, 0.5))), "a huge step hits the bounds"


def test_step_loss_is_mixed_cross_entropy_plus_mask_penalty(model):
    masked = MaskedBN(model, alpha=0.8, beta=0.5)
    with torch.no_grad():
        for m in masked.masks:
            m.fill_(0.9)
    x, y = batch()
    gen = torch.Generator().manual_seed(3)
    twin = torch.Generator()
    twin.set_state(gen.get_state())
    lam = torch.rand((), generator=twin).item()  # the step draws λ, then the permutation
    perm = torch.randperm(len(x), generator=twin)

    reference = copy.deepcopy(model).train()
    with torch.no_grad():
        for _, bn in batchnorms(reference):
            bn.weight.mul_(0.9)
        out = reference(lam * x + (1 - lam) * x[perm])
    n_masks = sum(bn.weight.numel() for _, bn in batchnorms(model))
    expected = lam * F.cross_entropy(out, y) + (1 - lam) * F.cross_entropy(out, y[perm]) + 0.01 * 0.1 * n_masks

    loss = MaskMixUpStep(masked, torch.optim.SGD(masked.masks, lr=0.0), 0.01, gen)(x, y, None)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_folding_the_masks_gives_the_masked_network(model):
    masked = MaskedBN(model, alpha=0.8, beta=0.5)
    with torch.no_grad():
        for m in masked.masks:
            m.uniform_(0.2, 1.0, generator=torch.Generator().manual_seed(5))
    x, _ = batch()
    model.eval()
    with torch.no_grad():
        expected = masked.forward(x)
        masked.fold()
        assert torch.allclose(model(x), expected, atol=1e-6)


def test_defense_changes_only_bn_scales_and_statistics_within_the_bounds(model, spec, make_imageset):
    clean = make_imageset(n=20, channels=3, size=8, num_classes=10, seed=1)
    ctx = DefenseContext(spec=spec, generator=torch.Generator().manual_seed(0), device=torch.device("cpu"))
    params = NFTParams(iterations=6, batch_size=10, lr=5.0)
    out = create_defense("nft", **field_values(params)).run(model, clean, ctx).model
    before, after = model.state_dict(), out.state_dict()
    bn_names = [name for name, _ in batchnorms(model)]
    for key in before:
        owner, _, leaf = key.rpartition(".")
        if owner in bn_names and leaf in ("weight", "running_mean", "running_var", "num_batches_tracked"):
            continue
        assert torch.equal(before[key], after[key]), key
    for layer, name in enumerate(bn_names, start=1):
        ratio = after[f"{name}.weight"] / before[f"{name}.weight"]
        low = 0.8 * math.exp(-0.5 * layer)
        assert (ratio >= low - 1e-6).all() and (ratio <= 1 + 1e-6).all()
        assert after[f"{name}.num_batches_tracked"] == before[f"{name}.num_batches_tracked"] + 6, "BN in train mode"
    assert any(not torch.equal(before[f"{n}.weight"], after[f"{n}.weight"]) for n in bn_names)


def test_penalty_weight_is_reg_over_samples_per_class(model, spec, make_imageset, monkeypatch):
    seen = []

    class Spy(MaskMixUpStep):
        def __init__(self, masked, optimizer, reg_weight, gen):
            seen.append(reg_weight)
            super().__init__(masked, optimizer, reg_weight, gen)

    monkeypatch.setattr(nft, "MaskMixUpStep", Spy)
    clean = make_imageset(n=40, channels=3, size=8, num_classes=10, seed=1)  # N_c = 4
    ctx = DefenseContext(spec=spec, generator=torch.Generator().manual_seed(0), device=torch.device("cpu"))
    create_defense("nft", iterations=1, batch_size=40).run(model, clean, ctx)
    assert seen == [pytest.approx(0.001 / 4)]


def test_params_reject_lr_min_above_lr_naming_lr_min():
    with pytest.raises(ParamError, match="lr_min") as error:
        NFTParams(lr_min=0.1)
    assert error.value.field == "lr_min"
    assert NFTParams(lr=0.03, lr_min=0.03).lr_min == 0.03
