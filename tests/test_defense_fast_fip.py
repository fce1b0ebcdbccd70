"""Fast FIP's spectral-shift parametrisation against hand computation on a tiny small_cnn."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
import torch.nn.functional as F

from bench.core.registry import create_defense
from bench.core.modes import eval_mode
from bench.core.params import declared
from defenses._fisher import diagonal_fisher, fisher_trace
from defenses.base import DefenseContext
from defenses.fast_fip import FastFIPParams, SpectralFactors, SpectralShift, spectral_weights
from defenses.fip import FIPParams


@pytest.fixture
def model(model):
    """The shared small_cnn, in eval mode."""
    return model.eval()


def batch(n: int = 5):
    gen = torch.Generator().manual_seed(42)
    return torch.rand(n, 3, 8, 8, generator=gen), torch.randint(0, 10, (n,), generator=gen)


def random_shifts(shift: SpectralShift) -> dict[str, torch.Tensor]:
    """Small shifts, and one large negative one per layer so that ReLU clips a singular value to 0."""
    gen = torch.Generator().manual_seed(7)
    deltas = {}
    for name, f in shift.factors.items():
        d = 0.1 * torch.randn(f.s.shape, generator=gen)
        d[-1] = -(f.s[-1] + 1.0)
        deltas[name] = d
    return deltas


def test_every_conv_and_linear_weight_is_reparametrised(model):
    assert spectral_weights(model) == ["net.0.weight", "net.3.weight", "net.7.weight", "net.10.weight", "net.16.weight"]
    shift = SpectralShift(model)
    assert {k: v.shape for k, v in shift.zero_shifts().items()} == {
        "net.0.weight": (27,), "net.3.weight": (32,), "net.7.weight": (64,), "net.10.weight": (64,), "net.16.weight": (10,)
    }


def test_at_zero_shift_the_model_is_the_original(model):
    shift = SpectralShift(model)
    x, _ = batch()
    weights = dict(model.named_parameters())
    for name, w in shift.weights(shift.zero_shifts()).items():
        assert torch.equal(w, weights[name])
    assert torch.equal(shift.fn()(shift.zero_shifts(), x), model(x))


def test_shifted_weights_are_u_relu_s_plus_delta_vt(model):
    shift = SpectralShift(model)
    deltas = random_shifts(shift)
    weights = dict(model.named_parameters())
    for name, w in shift.weights(deltas).items():
        original = weights[name].detach()
        u, s, vh = torch.linalg.svd(original.reshape(original.shape[0], -1).double(), full_matrices=False)
        expected = (u @ torch.diag(torch.relu(s + deltas[name].double())) @ vh).reshape(original.shape)
        assert torch.allclose(w.double(), expected, atol=1e-5)
        assert torch.linalg.matrix_rank(w.reshape(w.shape[0], -1).double(), atol=1e-4) < len(s)  # one value clipped


def test_fold_writes_the_shifted_weights_and_keeps_the_layout(model):
    shift = SpectralShift(model)
    deltas = random_shifts(shift)
    x, _ = batch()
    expected = shift.fn()(deltas, x)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    shift.fold(deltas)
    assert torch.allclose(model(x), expected, atol=1e-6)
    after = model.state_dict()
    assert list(after) == list(before) and all(after[k].shape == before[k].shape for k in before)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == set(spectral_weights(model))


def test_project_recovers_the_shifts_of_a_folded_model(model):
    shift = SpectralShift(model)
    deltas = {name: 0.1 * torch.randn(f.s.shape, generator=torch.Generator().manual_seed(3)) for name, f in shift.factors.items()}
    folded = copy.deepcopy(model)
    SpectralShift(folded).fold(deltas)
    got = shift.project(folded)
    assert set(got) == set(deltas)
    for name in deltas:
        assert torch.allclose(got[name], deltas[name], atol=1e-5)
    assert all(torch.allclose(v, torch.zeros_like(v), atol=1e-5) for v in shift.project(model).values())


def test_fn_on_another_model_uses_that_models_buffers(model):
    shift = SpectralShift(model)
    other = copy.deepcopy(model)
    with torch.no_grad():
        other.train()
        other(3 * torch.rand(16, 3, 8, 8, generator=torch.Generator().manual_seed(5)))  # new running statistics
        other.eval()
    x, _ = batch()
    assert torch.equal(shift.fn(other)(shift.zero_shifts(), x), other(x))
    assert not torch.allclose(shift.fn()(shift.zero_shifts(), x), other(x))


def test_fisher_trace_in_delta_is_the_chain_rule_of_per_sample_weight_gradients(model):
    """∂ log p_i / ∂δ_k = 1[S_k + δ_k > 0] · u_kᵀ G_i v_k with G_i = ∂ log p_i / ∂W, by a loop over samples."""
    shift = SpectralShift(model)
    deltas = random_shifts(shift)
    x, y = batch()
    with eval_mode(model):
        got = fisher_trace(shift.fn(), deltas, x, y)
    folded = copy.deepcopy(model)
    SpectralShift(folded).fold(deltas)
    names = spectral_weights(folded)
    weights = dict(folded.named_parameters())
    total = 0.0
    for i in range(len(x)):
        grads = torch.autograd.grad(-F.cross_entropy(folded(x[i : i + 1]), y[i : i + 1]), [weights[n] for n in names])
        for n, g in zip(names, grads):
            f = shift.factors[n]
            active = (f.s + deltas[n] > 0).float()
            per_delta = active * torch.diagonal(f.u.T @ g.reshape(g.shape[0], -1) @ f.vh.T)
            total += per_delta.pow(2).sum()
    assert got.item() == pytest.approx(total.item() / len(x), rel=1e-4)
    zero_fisher = diagonal_fisher(shift.fn(), deltas, _as_imageset(x, y), batch_size=2)
    assert all((zero_fisher[n][-1] == 0).all() for n in names)  # a clipped singular value has no gradient


def _as_imageset(x, y):
    from bench.core.data import ImageSet

    return ImageSet((x * 255).round().to(torch.uint8), y)


def test_fast_fip_moves_only_singular_values(model, spec, make_imageset):
    """Weights keep their singular vectors (Uᵀ W' V is diagonal); biases and BatchNorm affine stay fixed."""
    clean = make_imageset(n=20, channels=3, size=8, num_classes=10, seed=1)
    ctx = DefenseContext(spec=spec, generator=torch.Generator().manual_seed(0), device=torch.device("cpu"))
    out = create_defense("fast_fip", iterations=4, batch_size=8, lr=0.5, trace_every=2).run(model, clean, ctx).model
    before, after = dict(model.named_parameters()), dict(out.named_parameters())
    moved = []
    for name in before:
        if name in spectral_weights(model):
            f = SpectralFactors.of(before[name])
            core = f.u.T @ after[name].detach().reshape(f.u.shape[0], -1) @ f.vh.T
            moved.append(not torch.allclose(core.diagonal(), f.s, atol=1e-4))
            assert torch.allclose(core - torch.diag(core.diagonal()), torch.zeros_like(core), atol=1e-4), name
        else:
            assert torch.equal(before[name], after[name]), name
    assert any(moved)
    assert all(p.requires_grad for p in out.parameters()), "requires_grad restored"


def test_fast_fip_keeps_fips_defaults():
    assert dataclasses.asdict(FastFIPParams()) == dataclasses.asdict(FIPParams())
    assert FastFIPParams().lr == 0.005
    same = [(d.name, d.type, d.default, d.range, d.smoke) for d in declared(FastFIPParams)]
    assert same == [(d.name, d.type, d.default, d.range, d.smoke) for d in declared(FIPParams)]
