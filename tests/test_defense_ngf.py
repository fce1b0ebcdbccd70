"""NGF: one layer changes, by the damped diagonal natural-gradient step computed by hand."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bench.core.params import ParamError
from bench.core.registry import create_defense
from defenses._fisher import module_fn
from defenses.base import DefenseContext
from defenses.ngf import NaturalGradientStep, NGFParams, layer_names, layer_parameters


def tiny_net() -> nn.Module:
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5))
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    return net


def batch(n: int = 6, classes: int = 5):
    gen = torch.Generator().manual_seed(42)
    return torch.rand(n, 3, 8, 8, generator=gen), torch.randint(0, classes, (n,), generator=gen)


def run(model, clean, spec, **params):
    ctx = DefenseContext(spec=spec, generator=torch.Generator().manual_seed(0), device=torch.device("cpu"))
    return create_defense("ngf", **{"iterations": 3, "batch_size": 8, "lr": 0.05, **params}).run(model, clean, ctx).model


def changed_entries(before: nn.Module, after: nn.Module) -> set[str]:
    a, b = before.state_dict(), after.state_dict()
    return {k for k in a if not torch.equal(a[k], b[k])}


def test_only_the_final_linear_layer_changes_by_default(model, clean, spec):
    out = run(model, clean, spec)
    assert changed_entries(model, out) == {"net.16.weight", "net.16.bias"}  # BatchNorm statistics included


def test_a_named_layer_is_the_only_one_that_changes(model, clean, spec):
    out = run(model, clean, spec, layer="net.0")
    assert changed_entries(model, out) == {"net.0.weight"}


def test_an_unknown_layer_is_rejected_with_the_available_names(model, clean, spec):
    with pytest.raises(ValueError, match=r"'net\.99'.*net\.0, net\.1, .*net\.16"):
        run(model, clean, spec, layer="net.99")
    with pytest.raises(ValueError, match="net.1"):  # "net.1" is a layer; "net.1" is no prefix of "net.16"
        layer_parameters(model, "net.1x")
    assert set(layer_parameters(model, "net.1")) == {"net.1.weight", "net.1.bias"}


def test_layer_names_are_the_modules_that_own_parameters(model):
    assert layer_names(model) == ["net.0", "net.1", "net.3", "net.4", "net.7", "net.8", "net.10", "net.11", "net.16"]


def test_the_step_is_the_damped_natural_gradient_of_ce_plus_the_cda_term():
    net = tiny_net()
    x, y = batch()
    params = layer_parameters(net, None)
    assert set(params) == {"4.weight", "4.bias"}
    theta = {k: v.detach().clone() for k, v in params.items()}
    anchor = {k: v + 0.1 for k, v in theta.items()}
    gen = torch.Generator().manual_seed(3)
    clean_fisher = {k: torch.rand(v.shape, generator=gen) for k, v in theta.items()}
    lr, damping, decay, eta = 0.3, 0.01, 0.8, 2.0
    step = NaturalGradientStep(net, module_fn(net), params, lr, damping, decay, eta, anchor, clean_fisher)

    names = list(params)
    per_sample = [
        torch.autograd.grad(-F.cross_entropy(net(x[i : i + 1]), y[i : i + 1]), [params[n] for n in names])
        for i in range(len(x))
    ]
    with torch.no_grad():
        ce = F.cross_entropy(net(x), y)
    expected_loss = ce + 0.5 * eta * sum((clean_fisher[k] * (theta[k] - anchor[k]) ** 2).sum() for k in names)
    expected = {}
    for j, k in enumerate(names):
        g = torch.stack([ps[j] for ps in per_sample])
        fisher = decay * clean_fisher[k] + (1 - decay) * g.pow(2).mean(0)
        gradient = -g.mean(0) + eta * clean_fisher[k] * (theta[k] - anchor[k])
        expected[k] = theta[k] - lr * gradient / (fisher + damping)
        assert k in step.fisher

    loss = step(x, y, None)  # its objective is its own
    assert loss.item() == pytest.approx(expected_loss.item(), rel=1e-5)
    for k in names:
        assert torch.allclose(params[k].detach(), expected[k], atol=1e-6), k
        assert not torch.allclose(expected[k], theta[k])
    assert all(torch.equal(a, b) for a, b in zip(net[0].parameters(), tiny_net()[0].parameters()))


def test_the_running_fisher_is_an_exponential_average_started_at_the_clean_fisher():
    net = tiny_net()
    x, y = batch()
    params = layer_parameters(net, "4")
    clean_fisher = {k: torch.full_like(v, 0.5) for k, v in params.items()}
    anchor = {k: v.detach().clone() for k, v in params.items()}
    step = NaturalGradientStep(net, module_fn(net), params, 1e-9, 1.0, 0.5, 0.0, anchor, clean_fisher)
    step(x, y, None)
    step(x, y, None)  # lr ~ 0: the same batch Fisher both times
    for k, p in params.items():
        grads = torch.stack([torch.autograd.grad(-F.cross_entropy(net(x[i : i + 1]), y[i : i + 1]), p)[0] for i in range(len(x))])
        batch_fisher = grads.pow(2).mean(0)
        assert torch.allclose(step.fisher[k], 0.25 * 0.5 + 0.75 * batch_fisher, atol=1e-6)
        assert torch.equal(clean_fisher[k], torch.full_like(p, 0.5)), "the CDA Fisher is not the running one"


def test_params_reject_an_empty_layer_naming_it():
    with pytest.raises(ParamError, match="layer") as error:
        NGFParams(layer="")
    assert error.value.field == "layer"
