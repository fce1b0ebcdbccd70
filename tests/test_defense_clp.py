"""CLP: the channel Lipschitz bound against hand computation, what it prunes and what it leaves alone."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from bench.core.archs import build_model
from bench.core.data import ImageSet
from bench.core.registry import DEFENSES, create_defense
from defenses._layers import conv_bn_pairs, example_input
from defenses.base import DefenseContext
from defenses.clp import channel_lipschitz, clp_prune


def conv_bn_net(width: int = 16) -> nn.Module:
    """conv→BN→ReLU twice, then a linear head; every weight and BN statistic drawn from a fixed generator."""
    gen = torch.Generator().manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
        nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 10),
    )
    with torch.no_grad():
        for conv in (net[0], net[3]):
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen) * 0.2)
        for bn in (net[1], net[4]):
            bn.weight.copy_(torch.empty(width).uniform_(0.8, 1.2, generator=gen))
            bn.bias.copy_(torch.empty(width).uniform_(-0.1, 0.1, generator=gen))
            bn.running_var.copy_(torch.empty(width).uniform_(0.5, 2.0, generator=gen))
    return net.eval()


def run_clp(net: nn.Module, spec, u: float = 3.0) -> nn.Module:
    ctx = DefenseContext(spec=spec, generator=torch.Generator().manual_seed(0), device=torch.device("cpu"))
    empty = ImageSet(torch.empty(0, 3, 8, 8, dtype=torch.uint8), torch.empty(0, dtype=torch.int64))
    return create_defense("clp", u=u).run(net, empty, ctx).model


def test_bound_is_the_spectral_norm_of_the_bn_scaled_kernel():
    """Kernels of rank one, a·bᵀ in [C_in, kh·kw], have spectral norm ‖a‖·‖b‖; BN scales it by |γ|/√(var+ε)."""
    conv, bn = nn.Conv2d(2, 3, 3, bias=False), nn.BatchNorm2d(3)
    a = torch.tensor([[1.0, 2.0], [0.5, 0.0], [3.0, 4.0]])  # per output channel, over C_in
    b = torch.arange(9.0).reshape(3, 3)
    with torch.no_grad():
        conv.weight.copy_(a[:, :, None, None] * b)
        bn.weight.copy_(torch.tensor([1.0, -2.0, 0.5]))
        bn.running_var.copy_(torch.tensor([4.0, 1.0, 0.25]))
    expected = [
        abs(g) / math.sqrt(v + bn.eps) * a[k].norm().item() * b.norm().item()
        for k, (g, v) in enumerate(zip([1.0, -2.0, 0.5], [4.0, 1.0, 0.25]))
    ]
    assert channel_lipschitz(conv, bn).tolist() == pytest.approx(expected, rel=1e-5)


def test_prunes_exactly_a_planted_channel_and_nothing_else(make_spec):
    spec = make_spec(channels=3, size=8)
    net = conv_bn_net()
    assert not any(len(i) for i in clp_prune(conv_bn_net(), example_input(net, 3, 8), u=3.0).values()), "clean net: nothing stands out"
    with torch.no_grad():
        net[0].weight[5] *= 50.0
    before = {k: v.clone() for k, v in net.state_dict().items()}
    after = run_clp(net, spec).state_dict()
    assert after["1.weight"][5] == 0 and after["1.bias"][5] == 0
    changed = {(k, i) for k in before for i in range(before[k].numel()) if before[k].flatten()[i] != after[k].flatten()[i]}
    assert changed == {("1.weight", 5), ("1.bias", 5)}


def test_threshold_is_mean_plus_u_standard_deviations():
    net = conv_bn_net()
    lips = channel_lipschitz(net[3], net[4])
    for u in (0.0, 0.5, 1.0):
        expected = {k for k in range(16) if lips[k] > lips.mean() + u * lips.std(unbiased=True)}
        pruned = clp_prune(conv_bn_net(), example_input(net, 3, 8), u=u)["4"]
        assert set(pruned.tolist()) == expected and expected
    assert all(len(i) == 0 for i in clp_prune(conv_bn_net(), example_input(net, 3, 8), u=100.0).values())


def test_pairs_follow_data_flow_not_registration_order(make_spec):
    """In a pre-activation ResNet only the stem's BN and each block's bn2 read a conv's output directly."""
    spec = make_spec(channels=3, size=8)
    net = build_model("preactresnet18", spec)
    pairs = [(c, b) for c, _, b, _ in conv_bn_pairs(net, example_input(net, 3, 8))]
    expected = [("net.conv1", "net.layers.0.bn1")] + [(f"net.layers.{i}.conv1", f"net.layers.{i}.bn2") for i in range(8)]
    assert pairs == expected
    small = build_model("small_cnn", spec)
    assert [(c, b) for c, _, b, _ in conv_bn_pairs(small, example_input(small, 3, 8))] == [
        ("net.0", "net.1"), ("net.3", "net.4"), ("net.7", "net.8"), ("net.10", "net.11")
    ]


def test_a_conv_feeding_a_residual_sum_is_not_pruned(make_spec):
    spec = make_spec(channels=3, size=8)
    net = build_model("preactresnet18", spec).eval()
    with torch.no_grad():
        net.net.layers[3].conv2.weight[7] *= 100.0  # its output joins the skip before any BN
        net.net.layers[3].conv1.weight[9] *= 100.0  # its output goes straight into bn2
    after = run_clp(net, spec).state_dict()
    before = net.state_dict()
    assert after["net.layers.3.bn2.weight"][9] == 0
    assert torch.equal(after["net.layers.4.bn1.weight"], before["net.layers.4.bn1.weight"])


def test_is_data_free():
    assert DEFENSES.get("clp").data == "none"
