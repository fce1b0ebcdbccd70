"""FIP's loss pieces against hand computation on tiny models: Fisher trace, diagonal Fisher, CDA term, step."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bench.core.data import ImageSet
from bench.core.params import field_values
from bench.core.registry import DEFENSES, create_defense
from bench.core.train import GradientStep, TrainConfig, TrainingDiverged, sgd, train
from bench.core.modes import eval_mode
from defenses._fisher import (
    FisherStep,
    cda_penalty,
    check_finite,
    diagonal_fisher,
    fisher_trace,
    module_fn,
    per_sample_grads,
    relative_trace_weight,
)
from defenses.base import DefenseContext
from defenses.fast_fip import SpectralShift
from defenses.fip import FIPParams


def tiny_net() -> nn.Module:
    """Conv → ReLU → pool → linear, no BatchNorm: train and eval mode compute the same function."""
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5))
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    return net


def batch(n: int = 6, classes: int = 10):
    gen = torch.Generator().manual_seed(42)
    return torch.rand(n, 3, 8, 8, generator=gen), torch.randint(0, classes, (n,), generator=gen)


def loop_grads(net: nn.Module, x, y, create_graph: bool = False):
    """Per-sample ∇ log p(y_i | x_i), one autograd call per sample."""
    params = [p for p in net.parameters()]
    return [
        torch.autograd.grad(-F.cross_entropy(net(x[i : i + 1]), y[i : i + 1]), params, create_graph=create_graph)
        for i in range(len(x))
    ]


def test_per_sample_grads_match_a_loop_over_samples(model):
    x, y = batch()
    model.double().eval()  # float64: the two computations agree to rounding, far inside the tolerance
    x = x.double()
    params = dict(model.named_parameters())
    fast = per_sample_grads(module_fn(model), params, x, y)
    slow = loop_grads(model, x, y)
    for j, name in enumerate(params):
        assert torch.allclose(fast[name], torch.stack([g[j] for g in slow]), atol=1e-6)


def test_fisher_trace_is_the_mean_squared_per_sample_gradient_norm(model):
    x, y = batch()
    model.double().eval()
    x = x.double()
    expected = sum(sum(g.pow(2).sum() for g in grads) for grads in loop_grads(model, x, y)) / len(x)
    got = fisher_trace(module_fn(model), dict(model.named_parameters()), x, y)
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)
    assert got.item() > 0  # the public code's "trace" has expectation 0; this is a sum of squares


def test_fisher_trace_uses_each_samples_own_label(model):
    """Changing one label changes T: labels are gathered per sample, not indexed as a B×B matrix."""
    x, y = batch()
    model.double().eval()
    x = x.double()
    fn, params = module_fn(model), dict(model.named_parameters())
    y2 = y.clone()
    y2[0] = (y[0] + 1) % 10
    single = fisher_trace(fn, params, x[:1], y2[:1]) / len(x)
    rest = fisher_trace(fn, params, x[1:], y[1:]) * (len(x) - 1) / len(x)
    assert fisher_trace(fn, params, x, y2).item() == pytest.approx((single + rest).item(), rel=1e-5)
    assert fisher_trace(fn, params, x, y2).item() != pytest.approx(fisher_trace(fn, params, x, y).item(), rel=1e-9)


def test_fisher_trace_gradient_matches_double_backward_of_the_loop(model):
    x, y = batch(n=4)
    model.double().eval()
    x = x.double()
    params = dict(model.named_parameters())
    fast = torch.autograd.grad(fisher_trace(module_fn(model), params, x, y), list(params.values()))
    loop = sum(sum(g.pow(2).sum() for g in grads) for grads in loop_grads(model, x, y, create_graph=True)) / len(x)
    slow = torch.autograd.grad(loop, list(params.values()))
    for a, b in zip(fast, slow):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4)


def test_diagonal_fisher_is_the_mean_of_squared_per_sample_gradients(model, make_imageset):
    data = make_imageset(n=7, channels=3, size=8, num_classes=10, seed=3)
    model.eval()
    params = dict(model.named_parameters())
    got = diagonal_fisher(module_fn(model), params, data, batch_size=3)  # batches of 3, 3, 1
    x = data.x.float() / 255
    slow = loop_grads(model, x, data.y)
    for j, name in enumerate(params):
        expected = torch.stack([g[j] for g in slow]).pow(2).mean(0)
        assert torch.allclose(got[name], expected, atol=1e-7, rtol=1e-5)
        assert not got[name].requires_grad


def test_cda_penalty_is_zero_at_the_anchor_and_matches_the_formula():
    theta = {"a": torch.tensor([1.0, 2.0]), "b": torch.tensor([[3.0]])}
    anchor = {"a": torch.tensor([0.0, 1.0]), "b": torch.tensor([[1.0]])}
    fisher = {"a": torch.tensor([2.0, 0.5]), "b": torch.tensor([[0.25]])}
    # (w/2) Σ F (θ − θ⁰)² with w = 4: 2·(2·1 + 0.5·1 + 0.25·4) = 7
    assert cda_penalty(theta, anchor, fisher, 4.0).item() == pytest.approx(7.0)
    assert cda_penalty(anchor, anchor, fisher, 4.0).item() == 0.0


def test_fisher_step_adds_the_trace_on_every_kth_step_only():
    net = tiny_net()
    x, y = batch(classes=5)
    params = dict(net.named_parameters())
    fn = module_fn(net)
    with torch.no_grad():
        ce = F.cross_entropy(net(x), y).item()
    with eval_mode(net):
        trace = fisher_trace(fn, params, x, y).item()
    anchor = {k: v.detach().clone() for k, v in params.items()}
    fisher = {k: torch.ones_like(v) for k, v in params.items()}
    step = FisherStep(net, fn, params, torch.optim.SGD(params.values(), lr=0.0), 0.5, 3, 7.0, anchor, fisher)
    losses = [step(x, y, None).item() for _ in range(4)]  # its objective is its own
    assert losses == pytest.approx([ce + 0.5 * trace, ce, ce, ce + 0.5 * trace], rel=1e-5)  # CDA is 0 at θ⁰


def test_fisher_step_gradient_is_that_of_the_total_loss():
    net, ref = tiny_net(), tiny_net()
    x, y = batch(classes=5)
    params = dict(net.named_parameters())
    anchor = {k: v.detach() + 0.1 for k, v in params.items()}
    fisher = {k: torch.full_like(v, 0.3) for k, v in params.items()}
    FisherStep(net, module_fn(net), params, torch.optim.SGD(params.values(), lr=0.1), 0.5, 1, 2.0, anchor, fisher)(x, y, None)
    ref_params = dict(ref.named_parameters())
    loss = F.cross_entropy(ref(x), y) + 0.5 * fisher_trace(module_fn(ref), ref_params, x, y)
    loss = loss + 0.5 * 2.0 * sum((0.3 * (p - anchor[k]).pow(2)).sum() for k, p in ref_params.items())
    grads = torch.autograd.grad(loss, list(ref_params.values()))
    for (k, p), g in zip(ref_params.items(), grads):
        assert torch.allclose(params[k], p.detach() - 0.1 * g, atol=1e-6)


def test_without_regularisers_fip_is_plain_sgd_fine_tuning(model, spec, make_imageset):
    clean = make_imageset(n=20, channels=3, size=8, num_classes=10, seed=1)
    params = FIPParams(iterations=6, batch_size=8, lr=0.01, reg_F=0.0, cda_weight=0.0)
    ctx = DefenseContext(spec=spec, generator=torch.Generator().manual_seed(4), device=torch.device("cpu"))
    out = create_defense("fip", **field_values(params)).run(model, clean, ctx).model
    ref = copy.deepcopy(model)
    cfg = TrainConfig(epochs=2, batch_size=8, lr=0.01, momentum=0.95, weight_decay=0.0, schedule="constant")
    train(ref, clean, cfg, spec.augmentation, torch.Generator().manual_seed(4), GradientStep(sgd(ref, cfg)))
    for k, v in ref.state_dict().items():
        assert torch.allclose(out.state_dict()[k], v, atol=1e-6), k
    reg = create_defense("fip", iterations=6, batch_size=8, lr=0.01, cda_weight=0.0, trace_every=1)
    ctx = DefenseContext(spec=spec, generator=torch.Generator().manual_seed(4), device=torch.device("cpu"))
    with_trace = reg.run(model, clean, ctx).model
    assert not all(torch.equal(with_trace.state_dict()[k], v) for k, v in ref.state_dict().items())


def test_iterations_are_rounded_up_to_whole_epochs():
    assert FIPParams(iterations=10, batch_size=8).train_config(20).epochs == 4  # 3 batches an epoch
    assert FIPParams(iterations=9, batch_size=8).train_config(20).epochs == 3
    assert FIPParams(iterations=5, batch_size=128).train_config(20).epochs == 5  # the whole set is one batch
    cfg = FIPParams(lr=0.02, momentum=0.5, weight_decay=0.1).train_config(20)
    assert (cfg.schedule, cfg.lr, cfg.momentum, cfg.weight_decay) == ("constant", 0.02, 0.5, 0.1)
    with pytest.raises(ValueError, match="empty"):
        FIPParams().train_config(0)


def test_non_finite_weights_raise_training_diverged(model, spec, make_imageset):
    clean = make_imageset(n=8, channels=3, size=8, num_classes=10, seed=1)
    broken = copy.deepcopy(model)
    with torch.no_grad():
        next(broken.parameters()).fill_(float("nan"))
    ctx = DefenseContext(spec=spec, generator=torch.Generator().manual_seed(0), device=torch.device("cpu"))
    with pytest.raises(TrainingDiverged):
        create_defense("fip", iterations=2, batch_size=8).run(broken, clean, ctx)
    with pytest.raises(TrainingDiverged):
        check_finite({"w": torch.tensor([1.0, float("inf")])}, [0.5])


def test_defaults_are_the_public_codes_but_the_relative_trace_weight():
    p = FIPParams()
    assert (p.iterations, p.batch_size, p.lr, p.momentum, p.trace_every, p.cda_weight) == (2000, 128, 0.005, 0.95, 5, 5.0)
    assert (p.reg_F, p.max_grad_norm) == (0.15, 20.0)


def test_fisher_step_clips_the_gradient_to_max_grad_norm():
    """Plain SGD (lr 1, no momentum): the step is −g, rescaled to norm c when ‖g‖ > c; with c = inf unchanged."""
    x, y = batch(classes=5)
    steps = {}
    for clip in (math.inf, 1e-3):
        net = tiny_net()
        params = dict(net.named_parameters())
        before = {k: v.detach().clone() for k, v in params.items()}
        step = FisherStep(net, module_fn(net), params, torch.optim.SGD(params.values(), lr=1.0), 0.0, 1, 0.0, before, {}, clip)
        step(x, y, None)
        steps[clip] = torch.cat([(before[k] - v.detach()).flatten() for k, v in params.items()])
    assert steps[math.inf].norm() > 1e-3
    assert steps[1e-3].norm().item() == pytest.approx(1e-3, rel=1e-3)
    assert torch.allclose(steps[1e-3], steps[math.inf] * 1e-3 / steps[math.inf].norm(), atol=1e-7)


def test_relative_trace_weight_divides_by_the_clean_fisher_trace():
    fisher = {"a": torch.tensor([2.0, 0.5]), "b": torch.tensor([[1.5]])}  # Tr(F̂) = 4
    assert relative_trace_weight(0.2, fisher) == pytest.approx(0.05)
    assert relative_trace_weight(0.2, {"a": torch.zeros(3)}) == 0.0  # nothing to scale by


def test_fip_trace_term_is_relative_to_the_input_models_trace(model, spec, make_imageset):
    """The first step's loss is CE + η_F · T(θ⁰) / Tr(F̂⁰): on the unaugmented, full clean set that is CE + η_F."""
    clean = make_imageset(n=8, channels=3, size=8, num_classes=10, seed=1)
    net = copy.deepcopy(model).eval()
    params = {k: v for k, v in net.named_parameters() if v.requires_grad}
    fn = module_fn(net)
    fisher = diagonal_fisher(fn, params, clean, 8)
    x, y = clean.x.float().div(255), clean.y
    anchor = {k: v.detach().clone() for k, v in params.items()}
    weight = relative_trace_weight(0.3, fisher)
    step = FisherStep(net, fn, params, torch.optim.SGD(params.values(), lr=0.0), weight, 1, 0.0, anchor, fisher)
    with torch.no_grad():
        ce = F.cross_entropy(net(x), y).item()
    assert step(x, y, None).item() == pytest.approx(ce + 0.3, rel=1e-4)


def test_max_grad_norm_inf_means_never_clip_and_is_accepted():
    assert FIPParams(max_grad_norm=math.inf).max_grad_norm == math.inf


def clean_trace(name: str, model: nn.Module, clean: ImageSet) -> float:
    """Tr(F̂⁰) of the input model on ``clean``, w.r.t. what the defense trains (weights, or spectral shifts)."""
    net = copy.deepcopy(model).eval()
    if name == "fip":
        fn, params = module_fn(net), {k: v for k, v in net.named_parameters() if v.requires_grad}
    else:
        shift = SpectralShift(net)
        fn, params = shift.fn(), shift.zero_shifts()
    return float(sum(v.sum() for v in diagonal_fisher(fn, params, clean, 8).values()))


@pytest.mark.parametrize("name", ["fip", "fast_fip"])
def test_fip_and_fast_fip_hand_their_step_the_relative_trace_weight(name, model, spec, make_imageset, monkeypatch):
    module = __import__(f"defenses.{name}", fromlist=["FisherStep"])
    seen: list[float] = []

    class Recording(FisherStep):
        def __init__(self, model, fn, params, optimizer, reg_F, *rest):
            seen.append(reg_F)
            super().__init__(model, fn, params, optimizer, reg_F, *rest)

    monkeypatch.setattr(module, "FisherStep", Recording)
    clean = make_imageset(n=8, channels=3, size=8, num_classes=10, seed=1)
    ctx = DefenseContext(spec=spec, generator=torch.Generator().manual_seed(0), device=torch.device("cpu"))
    params = DEFENSES.get(name).Params(iterations=1, batch_size=8, reg_F=0.3)
    create_defense(name, **field_values(params)).run(model, clean, ctx)
    assert seen == [pytest.approx(0.3 / clean_trace(name, model, clean), rel=1e-5)]
