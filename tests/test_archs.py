"""Every registered architecture: logits of the right shape, finite gradients for every parameter."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bench.core.archs import build_model, build_seeded_model, is_heavy
from bench.core.archs.base import Normalized
from bench.core.registry import ARCHS

SHAPES = [(3, 16), (1, 16)]  # (channels, side)
# Heavy ones are too slow for a CPU unit test; tests/test_archs_zoo.py covers them under the `slow` marker.
HEAVY = [name for name in ARCHS.names() if is_heavy(name)]
LIGHT = [name for name in ARCHS.names() if not is_heavy(name)]


@pytest.mark.parametrize(("channels", "size"), SHAPES, ids=[f"{c}x{s}x{s}" for c, s in SHAPES])
@pytest.mark.parametrize("arch", LIGHT)
def test_forward_and_backward(arch, channels, size, make_spec):
    spec = make_spec(channels=channels, size=size, num_classes=10)
    model = build_model(arch, spec)
    x = torch.rand(4, channels, size, size, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 3, 7, 9])
    logits = model(x)
    assert logits.shape == (4, 10)
    assert torch.isfinite(logits).all()
    F.cross_entropy(logits, y).backward()
    for name, param in model.named_parameters():
        assert param.grad is not None, f"{name} gets no gradient"
        assert torch.isfinite(param.grad).all(), f"{name} has a non-finite gradient"
    assert any(param.grad.abs().sum() > 0 for param in model.parameters())


@pytest.mark.parametrize("arch", LIGHT)
def test_number_of_classes_follows_the_spec(arch, make_spec):
    model = build_model(arch, make_spec(channels=3, size=8, num_classes=4)).eval()
    assert model(torch.rand(2, 3, 8, 8)).shape == (2, 4)


@pytest.mark.parametrize("arch", LIGHT)
def test_state_dict_round_trips_between_builds(arch, make_spec):
    """What an artifact stores (the state dict) loads strictly into a fresh build, and gives the same outputs."""
    spec = make_spec(channels=3, size=8)
    trained, fresh = build_model(arch, spec).eval(), build_model(arch, spec).eval()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in trained.parameters():
            param.add_(0.01 * torch.randn(param.shape, generator=gen))
    fresh.load_state_dict(trained.state_dict(), strict=True)
    x = torch.rand(2, 3, 8, 8)
    assert torch.equal(fresh(x), trained(x))


def test_normalized_subtracts_mean_and_divides_by_std_per_channel():
    model = Normalized(nn.Identity(), mean=(0.5, 0.0), std=(0.25, 2.0))
    x = torch.tensor([1.0, 0.5]).view(1, 2, 1, 1).expand(1, 2, 2, 2)
    out = model(x)
    assert torch.allclose(out[0, 0], torch.full((2, 2), 2.0))  # (1 − 0.5) / 0.25
    assert torch.allclose(out[0, 1], torch.full((2, 2), 0.25))  # (0.5 − 0) / 2
    assert "mean" not in model.state_dict() and "std" not in model.state_dict()


@pytest.mark.parametrize("arch", LIGHT)
def test_seeded_build_depends_on_the_seed_only_and_leaves_the_global_rng(arch, make_spec):
    spec = make_spec(channels=3, size=8)
    before = torch.random.get_rng_state()
    a, b, c = (build_seeded_model(arch, spec, seed) for seed in (11, 11, 12))
    assert torch.equal(torch.random.get_rng_state(), before)
    pairs = list(zip(a.state_dict().values(), b.state_dict().values(), c.state_dict().values()))
    assert all(torch.equal(x, y) for x, y, _ in pairs)
    assert any(not torch.equal(x, z) for x, _, z in pairs)
