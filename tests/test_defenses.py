"""Every registered defense on a tiny small_cnn and tiny random data; FT-SAM's step in detail."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bench.core.params import field_values, smoke_values
from bench.core.registry import DEFENSES, create_defense
from bench.core.train import GradientStep
from defenses.base import DefenseContext, DefenseOutput
from defenses.ftsam import LabelSmoothing, SAMStep

def small_params(name: str, **extra):
    """The defense's parameters at the smoke-run values it declares for its cost-controlling fields."""
    params_cls = DEFENSES.get(name).Params
    return params_cls(**{**smoke_values(params_cls), **extra})


def run(name: str, model, clean, spec, seed: int = 0, **extra) -> DefenseOutput:
    defense = create_defense(name, **field_values(small_params(name, **extra)))
    if defense.data == "none":
        clean = clean.subset(torch.empty(0, dtype=torch.int64))
    ctx = DefenseContext(spec=spec, generator=torch.Generator().manual_seed(seed), device=torch.device("cpu"))
    return defense.run(model, clean, ctx)


def snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------- every defense


@pytest.mark.parametrize("name", DEFENSES.names())
def test_defense_returns_a_model_of_the_same_class_and_layout(name, model, clean, spec):
    output = run(name, model, clean, spec)
    assert isinstance(output, DefenseOutput)
    assert type(output.model) is type(model)
    assert output.model is not model
    before, after = model.state_dict(), output.model.state_dict()
    assert list(after) == list(before)
    assert all(after[k].shape == before[k].shape and after[k].dtype == before[k].dtype for k in before)
    assert all(torch.isfinite(v).all() for v in after.values() if v.is_floating_point())


@pytest.mark.parametrize("name", DEFENSES.names())
def test_defense_leaves_its_input_model_unchanged(name, model, clean, spec):
    before = snapshot(model)
    clean_before = clean.x.clone(), clean.y.clone()
    run(name, model, clean, spec)
    assert same_weights(snapshot(model), before), "weights or BatchNorm statistics of the input changed"
    assert torch.equal(clean.x, clean_before[0]) and torch.equal(clean.y, clean_before[1])


@pytest.mark.parametrize("name", DEFENSES.names())
def test_defense_is_deterministic_given_the_generator(name, model, clean, spec):
    a = run(name, model, clean, spec, seed=5)
    b = run(name, model, clean, spec, seed=5)
    assert same_weights(snapshot(a.model), snapshot(b.model))
    assert a.epoch_losses == b.epoch_losses


@pytest.mark.parametrize("name", DEFENSES.names())
def test_defense_rejects_parameters_of_another_type(name):
    class Other:
        pass

    with pytest.raises(TypeError):
        DEFENSES.get(name)(Other())


@pytest.mark.parametrize("name", DEFENSES.names())
def test_defense_params_have_defaults(name):
    DEFENSES.get(name).Params()  # a grid may name a defense without parameters


# ---------------------------------------------------------------- particular defenses


@pytest.mark.parametrize("name", ["ft", "ftsam"])
def test_fine_tuning_defenses_change_the_weights_and_report_losses(name, model, clean, spec):
    output = run(name, model, clean, spec)
    after, before = snapshot(output.model), snapshot(model)
    changed = [k for k in before if before[k].is_floating_point() and not torch.equal(before[k], after[k])]
    assert any(k.endswith("weight") for k in changed)
    assert len(output.epoch_losses) == smoke_values(DEFENSES.get(name).Params)["epochs"]
    assert all(loss > 0 for loss in output.epoch_losses)


@pytest.mark.parametrize("name", ["ft", "ftsam"])
def test_fine_tuning_depends_on_the_generator(name, model, clean, spec):
    a = run(name, model, clean, spec, seed=1)
    b = run(name, model, clean, spec, seed=2)
    assert not same_weights(snapshot(a.model), snapshot(b.model))


def test_none_returns_the_weights_unchanged(model, clean, spec):
    output = run("none", model, clean, spec)
    assert same_weights(snapshot(output.model), snapshot(model))
    assert DEFENSES.get("none").data == "none"


def test_ft_and_ftsam_differ(model, clean, spec):
    """FT-SAM is not plain fine-tuning under another name."""
    ft = run("ft", model, clean, spec, seed=3)
    ftsam = run("ftsam", model, clean, spec, seed=3)
    assert not same_weights(snapshot(ft.model), snapshot(ftsam.model))


# ---------------------------------------------------------------- FT-SAM's step


def batch(n: int = 8):
    gen = torch.Generator().manual_seed(42)
    return torch.rand(n, 3, 8, 8, generator=gen), torch.randint(0, 10, (n,), generator=gen)


def ce(net: nn.Module):
    """The loop's plain loss for ``net``: ``(x, y) → cross-entropy``."""
    return lambda x, y: F.cross_entropy(net(x), y)


def smoothed(net: nn.Module):
    """FT-SAM's loss for ``net``: cross-entropy with label smoothing 0.1."""
    return lambda x, y: LabelSmoothing(0.1).loss(net, x, y)


def bn_running_stats(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items() if "running_" in k}


@pytest.mark.parametrize("adaptive", [True, False])
def test_sam_step_restores_the_weights_it_perturbs(adaptive, model):
    """With a zero learning rate the optimiser does nothing, so every parameter must be back where it was."""
    net = copy.deepcopy(model).train()
    before = {k: v.clone() for k, v in net.named_parameters()}
    step = SAMStep(net, torch.optim.SGD(net.parameters(), lr=0.0), rho=2.0, adaptive=adaptive)
    step(*batch(), ce(net))
    after = dict(net.named_parameters())
    assert all(torch.allclose(after[k], before[k], atol=1e-6) for k in before)


def test_sam_step_updates_batchnorm_statistics_once_at_the_unperturbed_weights(model):
    x, y = batch()
    sam_net, plain_net = copy.deepcopy(model).train(), copy.deepcopy(model).train()
    step = SAMStep(sam_net, torch.optim.SGD(sam_net.parameters(), lr=0.0), rho=2.0, adaptive=True)
    step(x, y, ce(sam_net))
    with torch.no_grad():
        plain_net(x)  # one forward at θ: what the running statistics should have seen
    sam_stats, plain_stats = bn_running_stats(sam_net), bn_running_stats(plain_net)
    assert all(torch.allclose(sam_stats[k], plain_stats[k], atol=1e-6) for k in plain_stats)
    assert all(m.momentum == 0.1 for m in sam_net.modules() if isinstance(m, nn.BatchNorm2d)), "momentum restored"


@pytest.mark.parametrize("adaptive", [True, False])
def test_sam_perturbation_has_radius_rho(adaptive, model):
    """SAM: ‖ε‖ = ρ. Adaptive SAM: ‖ε / |θ|‖ = ρ (the ball is measured in the scaled coordinates)."""
    net = copy.deepcopy(model).train()
    step = SAMStep(net, torch.optim.SGD(net.parameters(), lr=0.0), rho=0.5, adaptive=adaptive)
    step._loss_and_grad(*batch(), ce(net))
    eps = step._perturbation()
    pairs = [(p, e) for p, e in zip(step.params, eps) if e is not None]
    assert len(pairs) == len(step.params)
    if adaptive:  # ε/|θ| is defined where θ ≠ 0; where θ = 0, ε is 0 and adds nothing to the scaled norm
        assert all((e[p == 0] == 0).all() for p, e in pairs)
        norm = torch.sqrt(sum(((e[p != 0] / p[p != 0].abs()) ** 2).sum() for p, e in pairs))
    else:
        norm = torch.sqrt(sum((e**2).sum() for _, e in pairs))
    assert norm.item() == pytest.approx(0.5, rel=1e-4)


def test_sam_step_takes_a_different_step_from_plain_sgd(model):
    x, y = batch()
    sam_net, sgd_net = copy.deepcopy(model).train(), copy.deepcopy(model).train()
    SAMStep(sam_net, torch.optim.SGD(sam_net.parameters(), lr=0.1), rho=2.0, adaptive=True)(x, y, smoothed(sam_net))
    GradientStep(torch.optim.SGD(sgd_net.parameters(), lr=0.1))(x, y, smoothed(sgd_net))
    assert not same_weights(snapshot(sam_net), snapshot(sgd_net))


def test_sam_step_returns_the_loss_at_the_unperturbed_weights(model):
    x, y = batch()
    net = copy.deepcopy(model).train()
    with torch.no_grad():
        expected = F.cross_entropy(copy.deepcopy(net)(x), y)
    loss = SAMStep(net, torch.optim.SGD(net.parameters(), lr=0.1), rho=2.0, adaptive=True)(x, y, ce(net))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
