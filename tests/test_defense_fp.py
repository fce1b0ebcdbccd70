"""Fine-Pruning on a hand-built net whose channel activations and accuracies are known exactly."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bench.core.archs import build_model
from bench.core.data import Augmentation, ImageSet
from bench.core.params import field_values
from bench.core.registry import create_defense
from defenses.base import DefenseContext, FineTuneParams
from defenses.fp import FPParams, mean_activation, prune_dormant

# Four channels feed the linear head directly. Rows: samples; columns in order of
# activation, least active first (means 10, 17.5, 45, 150). Class 0 scores the sum of
# the channels, class 1 a constant 150, every label is 0: a sample stays right while
# the sum of its unpruned channels exceeds 150. Pruning the 1, 2, 3 least active
# channels leaves clean accuracy 1, 0.75, 0.5.
BY_ACTIVITY = torch.tensor([[0, 0, 0, 250], [0, 0, 0, 250], [20, 60, 0, 100], [20, 10, 180, 0]])
POSITION = [2, 0, 3, 1]  # where each column sits in the input: the least active channel is channel 2
LEAST_ACTIVE_FIRST = [2, 0, 3, 1]


def planted() -> tuple[nn.Module, ImageSet]:
    x = torch.zeros(4, 4, dtype=torch.uint8)
    x[:, POSITION] = BY_ACTIVITY.to(torch.uint8)
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    with torch.no_grad():
        net[1].weight.copy_(torch.tensor([[1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0]]))
        net[1].bias.copy_(torch.tensor([0.0, 150 / 255]))
    return net, ImageSet(x[:, :, None, None], torch.zeros(4, dtype=torch.int64))


def test_mean_activation_is_the_mean_input_of_the_last_linear_layer():
    net, clean = planted()
    expected = torch.tensor([17.5, 150.0, 10.0, 45.0]) / 255
    assert torch.allclose(mean_activation(net, clean), expected)


@pytest.mark.parametrize(
    "prune_step, max_drop, pruned",
    [
        (0.25, 0.0, [2]),  # 1 channel: no drop; 2 channels: drop 0.25 > 0
        (0.25, 0.1, [2]),
        (0.25, 0.25, [2, 0]),  # the bound is inclusive
        (0.25, 0.5, [2, 0, 3]),  # never all channels
        (0.5, 0.25, [2, 0]),  # steps of 2 channels
        (0.5, 0.1, []),  # the first step already breaks the bound
    ],
)
def test_prunes_least_active_first_and_stops_at_the_accuracy_bound(prune_step, max_drop, pruned):
    net, clean = planted()
    got = prune_dormant(net, clean, prune_step, max_drop)
    assert got.tolist() == pruned
    assert LEAST_ACTIVE_FIRST[: len(pruned)] == pruned
    weight = net[1].weight
    for channel in range(4):
        expected = torch.zeros(2) if channel in pruned else torch.tensor([1.0, 0.0])
        assert torch.equal(weight[:, channel], expected)


def test_pruned_channels_stay_zero_through_fine_tuning(make_spec):
    net, clean = planted()
    spec = make_spec(channels=4, size=1, num_classes=2, augmentation=Augmentation())
    ctx = DefenseContext(spec=spec, generator=torch.Generator().manual_seed(0), device=torch.device("cpu"))
    params = FPParams(epochs=3, batch_size=2, lr=0.5, prune_step=0.25, max_acc_drop=0.25)
    out = create_defense("fp", **field_values(params)).run(net, clean, ctx)
    weight = out.model[1].weight
    assert torch.equal(weight[:, [2, 0]], torch.zeros(2, 2))
    assert not torch.equal(weight[:, [3, 1]], net[1].weight[:, [3, 1]]), "the rest is fine-tuned"
    assert len(out.epoch_losses) == 3


@pytest.mark.parametrize("arch, size, channels", [("small_cnn", 8, 64), ("preactresnet18", 8, 512)])
def test_channels_are_the_pooled_last_conv_features_of_both_archs(arch, size, channels, make_spec, make_imageset):
    spec = make_spec(channels=3, size=size)
    net = build_model(arch, spec).eval()
    clean = make_imageset(n=6, channels=3, size=size)
    activation = mean_activation(net, clean)
    assert activation.shape == (channels,)
    features = {}
    head = net.net[-1] if arch == "small_cnn" else net.net.linear
    handle = head.register_forward_hook(lambda m, args, out: features.setdefault("x", args[0]))
    with torch.no_grad():
        net(clean.x.float() / 255)
    handle.remove()
    assert torch.allclose(activation, features["x"].mean(0), atol=1e-6)


def test_params_extend_the_fine_tuning_settings():
    params = FPParams()
    assert isinstance(params, FineTuneParams)
    assert (params.epochs, params.batch_size, params.lr, params.prune_step, params.max_acc_drop) == (100, 256, 0.01, 0.01, 0.1)
