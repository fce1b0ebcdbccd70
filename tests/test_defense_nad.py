"""NAD: the attention map and loss by hand, the layer groups of both archs, the distillation loss."""

from __future__ import annotations

import copy
import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from bench.core.archs import build_model
from bench.core.data import Augmentation
from bench.core.params import field_values
from bench.core.registry import create_defense
from bench.core.train import train
from defenses._layers import Capture, example_input, stage_ends
from defenses.base import DefenseContext
from defenses.nad import Distillation, NADParams, attention_loss, attention_map


def test_attention_map_sums_powers_over_channels_and_normalises_over_space():
    features = torch.zeros(1, 2, 2, 2)
    features[0, 0, 0, 0] = 1.0
    features[0, 1, 0, 1] = -2.0
    squared = attention_map(features, p=2.0)
    assert squared.shape == (1, 1, 2, 2)
    assert torch.allclose(squared[0, 0], torch.tensor([[1.0, 4.0], [0.0, 0.0]]) / (math.sqrt(17) + 1e-6))
    linear = attention_map(features, p=1.0)
    assert torch.allclose(linear[0, 0], torch.tensor([[1.0, 2.0], [0.0, 0.0]]) / (math.sqrt(5) + 1e-6))


def test_attention_loss_is_the_mean_squared_difference_of_the_maps():
    s = torch.zeros(1, 1, 2, 2)
    s[0, 0, 0, 0] = 3.0  # map [[1, 0], [0, 0]]
    t = torch.zeros(1, 1, 2, 2)
    t[0, 0, 1, 1] = 5.0  # map [[0, 0], [0, 1]]
    eps = 1e-6
    expected = ((9 / (9 + eps)) ** 2 + (25 / (25 + eps)) ** 2) / 4  # two of four entries differ
    assert attention_loss(s, t, p=2.0).item() == pytest.approx(expected, rel=1e-6)
    assert attention_loss(s, 7 * s, p=2.0).item() == pytest.approx(0.0, abs=1e-10), "scale-free"


@pytest.mark.parametrize(
    "arch, size, expected",
    [
        ("preactresnet18", 32, ["net.layers.3", "net.layers.5", "net.layers.7"]),  # ends of stages 2, 3, 4
        ("preactresnet18", 8, ["net.layers.1", "net.layers.3", "net.layers.5"]),  # stage 4 is 1×1 there
        ("small_cnn", 16, ["net.3", "net.7", "net.10"]),  # two resolutions: their last convs, plus conv 3
    ],
)
def test_layer_groups(arch, size, expected, make_spec):
    net = build_model(arch, make_spec(channels=3, size=size))
    assert stage_ends(net, example_input(net, 3, size)) == expected


@pytest.fixture
def spec(make_spec):
    return make_spec(channels=3, size=8, num_classes=10, augmentation=Augmentation(crop_padding=1, flip=True))


def test_distillation_loss_is_ce_plus_weighted_attention_terms(spec):
    student = build_model("small_cnn", spec).train()
    teacher = build_model("small_cnn", spec).eval()  # other random weights
    layers = ["net.3", "net.7", "net.10"]
    gen = torch.Generator().manual_seed(0)
    x, y = torch.rand(6, 3, 8, 8, generator=gen), torch.randint(0, 10, (6,), generator=gen)
    with Capture(student, layers) as s_maps, Capture(teacher, layers) as t_maps:
        hooks = Distillation(teacher, layers, (500.0, 1000.0, 1000.0), 2.0, s_maps, t_maps)
        loss = hooks.loss(student, x, y)

    def prefix(net, upto, inputs):  # features computed without hooks: the Sequential up to the layer
        return net.net[: upto + 1]((inputs - net.mean) / net.std)

    with torch.no_grad():
        expected = F.cross_entropy(student(x), y)
        for index, beta in zip((3, 7, 10), (500.0, 1000.0, 1000.0)):
            a_s, a_t = attention_map(prefix(student, index, x), 2.0), attention_map(prefix(teacher, index, x), 2.0)
            expected = expected + beta * ((a_s - a_t) ** 2).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert loss.item() > F.cross_entropy(student(x), y).item() + 1e-3, "the attention terms are not zero here"


def test_with_zero_betas_nad_is_teacher_training_then_plain_fine_tuning(spec, make_imageset):
    """β = 0 leaves CE: the student must equal FT run after the teacher has drawn its batches from the generator."""
    model = build_model("small_cnn", spec)
    clean = make_imageset(n=20, channels=3, size=8, num_classes=10, seed=1)
    params = NADParams(epochs=2, teacher_epochs=3, batch_size=8, beta1=0.0, beta2=0.0, beta3=0.0)
    ctx = DefenseContext(spec=spec, generator=torch.Generator().manual_seed(4), device=torch.device("cpu"))
    out = create_defense("nad", **field_values(params)).run(model, clean, ctx)

    gen = torch.Generator().manual_seed(4)
    teacher, student = copy.deepcopy(model), copy.deepcopy(model)
    cfg = params.train_config()
    train(teacher, clean, dataclasses.replace(cfg, epochs=3), spec.augmentation, gen)
    losses = train(student, clean, cfg, spec.augmentation, gen)
    assert out.epoch_losses == pytest.approx(losses, rel=1e-6)
    got, want = out.model.state_dict(), student.state_dict()
    assert all(torch.allclose(got[k].float(), want[k].float(), atol=1e-6) for k in want)


def test_attention_terms_change_the_result(spec, make_imageset):
    model = build_model("small_cnn", spec)
    clean = make_imageset(n=20, channels=3, size=8, num_classes=10, seed=1)
    runs = []
    for beta in (0.0, 1000.0):
        params = NADParams(epochs=1, teacher_epochs=2, batch_size=10, lr=0.1, beta1=beta, beta2=beta, beta3=beta)
        ctx = DefenseContext(spec=spec, generator=torch.Generator().manual_seed(4), device=torch.device("cpu"))
        runs.append(create_defense("nad", **field_values(params)).run(model, clean, ctx).model.state_dict())
    assert any(not torch.equal(runs[0][k], runs[1][k]) for k in runs[0] if runs[0][k].is_floating_point())


def test_defaults():
    p = NADParams()
    assert (p.teacher_epochs, p.epochs, p.beta1, p.beta2, p.beta3, p.p, p.lr, p.weight_decay) == (10, 10, 500.0, 1000.0, 1000.0, 2.0, 0.01, 1e-4)
