"""I-BAU: the implicit hypergradient against closed forms on a quadratic bilevel problem,
the inner perturbation, and the wiring of the outer step."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from bench.core.archs import build_model
from bench.core.params import field_values
from bench.core.registry import create_defense
from defenses.base import DefenseContext
from defenses.ibau import (
    HypergradientStep,
    IBAUParams,
    _project_l2,
    fixed_point_hypergradient,
    universal_perturbation,
)


pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------- the hypergradient on a quadratic
#
# Inner: L_in(δ, θ) = ½ δᵀAδ − δᵀBθ, so δ*(θ) = A⁻¹Bθ and Φ(δ, θ) = δ − η(Aδ − Bθ).
# Outer: L_out(δ, θ) = ½‖Eδ − c‖² + ½ θᵀDθ.
# Exact: dL_out/dθ = BᵀA⁻¹Eᵀ(Eδ* − c) + Dθ.  K fixed-point steps: Dθ + ηBᵀ Σ_{k<K} (I − ηA)ᵏ Eᵀ(Eδ − c).


@pytest.fixture
def quadratic():
    gen = torch.Generator().manual_seed(0)
    d, p = 5, 3
    m = torch.randn(d, d, generator=gen, dtype=torch.float64)
    a = m @ m.T / d + torch.eye(d, dtype=torch.float64)  # symmetric positive definite
    b = torch.randn(d, p, generator=gen, dtype=torch.float64)
    e = torch.randn(4, d, generator=gen, dtype=torch.float64)
    c = torch.randn(4, generator=gen, dtype=torch.float64)
    dmat = torch.diag(torch.rand(p, generator=gen, dtype=torch.float64))
    theta = torch.randn(p, generator=gen, dtype=torch.float64, requires_grad=True)

    def inner(delta):
        return 0.5 * delta @ a @ delta - delta @ b @ theta

    def outer(delta):
        return 0.5 * (e @ delta - c).pow(2).sum() + 0.5 * theta @ dmat @ theta

    return dict(a=a, b=b, e=e, c=c, dmat=dmat, theta=theta, inner=inner, outer=outer)


def truncated(q, delta, eta, k):
    g_delta = q["e"].T @ (q["e"] @ delta - q["c"])
    contraction = torch.eye(len(delta), dtype=delta.dtype) - eta * q["a"]
    v = sum((torch.linalg.matrix_power(contraction, j) @ g_delta for j in range(k)), torch.zeros_like(delta))
    return q["dmat"] @ q["theta"].detach() + eta * q["b"].T @ v


def exact(q):
    theta = q["theta"].detach().clone().requires_grad_(True)
    delta_star = torch.linalg.solve(q["a"], q["b"] @ theta)  # brute force: solve the inner problem, differentiate through it
    loss = 0.5 * (q["e"] @ delta_star - q["c"]).pow(2).sum() + 0.5 * theta @ q["dmat"] @ theta
    (grad,) = torch.autograd.grad(loss, theta)
    return grad


@pytest.mark.parametrize("k", [0, 1, 5])
def test_fixed_point_iterations_are_the_truncated_neumann_series(quadratic, k):
    delta = torch.randn(5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)  # any δ, not only δ*
    grads, _ = fixed_point_hypergradient(delta, [quadratic["theta"]], quadratic["inner"], quadratic["outer"], 0.1, k)
    assert torch.allclose(grads[0], truncated(quadratic, delta, 0.1, k), atol=1e-12)


def test_hypergradient_converges_to_the_brute_force_gradient_at_the_inner_optimum(quadratic):
    delta_star = torch.linalg.solve(quadratic["a"], quadratic["b"] @ quadratic["theta"].detach())
    eta = 1.0 / torch.linalg.eigvalsh(quadratic["a"]).max().item()  # contraction: ‖I − ηA‖ < 1
    grads, loss = fixed_point_hypergradient(delta_star, [quadratic["theta"]], quadratic["inner"], quadratic["outer"], eta, 400)
    assert torch.allclose(grads[0], exact(quadratic), atol=1e-8)
    assert loss.item() == pytest.approx(quadratic["outer"](delta_star).item())


def test_few_iterations_are_not_the_exact_gradient(quadratic):
    """K = 5 with η = 0.1 is a visible approximation; K = 0 drops the implicit term altogether."""
    delta_star = torch.linalg.solve(quadratic["a"], quadratic["b"] @ quadratic["theta"].detach())
    for k in (0, 5):
        grads, _ = fixed_point_hypergradient(delta_star, [quadratic["theta"]], quadratic["inner"], quadratic["outer"], 0.1, k)
        assert not torch.allclose(grads[0], exact(quadratic), atol=1e-3)


def test_unused_parameters_get_zero_gradient(quadratic):
    unused = torch.ones(2, dtype=torch.float64, requires_grad=True)
    delta = torch.zeros(5, dtype=torch.float64)
    grads, _ = fixed_point_hypergradient(delta, [quadratic["theta"], unused], quadratic["inner"], quadratic["outer"], 0.1, 3)
    assert torch.equal(grads[1], torch.zeros(2, dtype=torch.float64))


# ---------------------------------------------------------------- on a network


@pytest.fixture
def spec(make_spec):
    return make_spec(channels=3, size=8, num_classes=10)


@pytest.fixture
def model(spec):
    with torch.random.fork_rng(devices=[]):  # weight init reads the global generator; keep it seeded and restored
        torch.manual_seed(0)
        net = build_model("small_cnn", spec)
    with torch.no_grad():
        net.train()
        net(torch.rand(16, 3, 8, 8, generator=torch.Generator().manual_seed(0)))
    return net.eval()


@pytest.fixture
def clean(make_imageset):
    return make_imageset(n=24, channels=3, size=8, num_classes=10, seed=1)


def ctx(spec, seed=0):
    return DefenseContext(spec=spec, generator=torch.Generator().manual_seed(seed), device=torch.device("cpu"))


def std(spec):
    return torch.tensor(spec.std).view(1, -1, 1, 1)


def test_universal_perturbation_stays_in_the_ball_and_raises_the_loss(model, clean, spec):
    params = IBAUParams(perturbation_steps=5, batch_size=24, inner_lr=5000.0, radius=2.0, reg=0.0)
    delta = universal_perturbation(model, clean, params, std(spec), ctx(spec))
    assert delta.shape == (1, 3, 8, 8)
    assert delta.norm().item() <= 2.0 + 1e-5
    assert delta.norm().item() > 1.0  # the large step reaches the boundary
    x, y = clean.x.float() / 255, clean.y
    with torch.no_grad():
        assert F.cross_entropy(model(x + delta * std(spec)), y) > F.cross_entropy(model(x), y)
    assert all(p.grad is None for p in model.parameters())


def unused_loss(x, y):
    raise AssertionError("I-BAU's outer step has its own objective; it must not call the loop's loss")


def test_outer_step_moves_the_weights_by_the_hypergradient(model, clean, spec):
    """With every image carrying δ and SGD at lr 1, the update is exactly minus the hypergradient."""
    params = IBAUParams(perturbed_fraction=1.0, fixed_point_iters=3)
    delta = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    x, y = clean.x.float() / 255, clean.y
    reference = copy.deepcopy(model)
    weights = list(reference.parameters())
    s = std(spec)
    expected, _ = fixed_point_hypergradient(
        delta,
        weights,
        lambda d: -F.cross_entropy(reference(x + d * s), y) + params.reg * d.pow(2).sum(),
        lambda d: F.cross_entropy(reference(x + d * s), y),
        params.fixed_point_lr,
        params.fixed_point_iters,
    )
    net = copy.deepcopy(model)
    before = [p.detach().clone() for p in net.parameters()]
    step = HypergradientStep(net, torch.optim.SGD(net.parameters(), lr=1.0), delta, s, params, torch.Generator())
    step(x, y, unused_loss)
    for p, b, g in zip(net.parameters(), before, expected):
        assert torch.allclose(p.detach(), b - g, atol=1e-5)
    assert any(g.abs().sum() > 0 for g in expected)


def test_the_implicit_term_changes_the_update(model, clean, spec):
    """K = 0 (direct gradient only) and K = 5 give different steps: the hypergradient is not plain fine-tuning."""
    x, y = clean.x.float() / 255, clean.y
    delta = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    results = []
    for k in (0, 5):
        net = copy.deepcopy(model)
        params = IBAUParams(perturbed_fraction=1.0, fixed_point_iters=k)
        step = HypergradientStep(net, torch.optim.SGD(net.parameters(), lr=1.0), delta, std(spec), params, torch.Generator())
        step(x, y, unused_loss)
        results.append(torch.cat([p.detach().flatten() for p in net.parameters()]))
    assert not torch.allclose(results[0], results[1], atol=1e-7)


def test_ibau_changes_weights_but_not_batchnorm_statistics(model, clean, spec):
    """I-BAU runs in evaluation mode, as BackdoorBench does: running statistics stay the input's."""
    params = IBAUParams(rounds=2, batch_size=12, lr=1e-3, perturbation_steps=2)
    output = create_defense("ibau", **field_values(params)).run(model, clean, ctx(spec))
    before, after = model.state_dict(), output.model.state_dict()
    stats = [k for k in before if "running_" in k or "num_batches" in k]
    assert stats and all(torch.equal(before[k], after[k]) for k in stats)
    assert any(not torch.equal(before[k], after[k]) for k in before if k.endswith("weight"))
    assert len(output.epoch_losses) == 2  # one pass over the clean data per round


def test_an_infinite_radius_leaves_the_perturbation_unprojected():
    delta = torch.full((1, 3, 4, 4), 100.0)
    _project_l2(delta, IBAUParams(radius=float("inf")).radius)
    assert torch.equal(delta, torch.full((1, 3, 4, 4), 100.0))
