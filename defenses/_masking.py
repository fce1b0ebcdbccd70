"""Pieces shared by ANP, I-BAU and Neural Cleanse.

BatchNorm channels and forward passes with their affine parameters rescaled (without
touching the module), batches drawn with the defense's generator, clean accuracy on an
image set, and the divergence check. Not a defense: the leading underscore keeps it out
of the registry.
"""

from __future__ import annotations

import math
from typing import Iterator, Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call

from bench.core.augment import augment
from bench.core.data import Augmentation, ImageSet, to_float
from bench.core.metrics import accuracy, predict
from bench.core.train import TrainingDiverged

BatchNorm = nn.modules.batchnorm._BatchNorm


def bn_layers(model: nn.Module) -> list[tuple[str, BatchNorm]]:
    """The affine BatchNorm modules of ``model`` with their qualified names, in registration order."""
    return [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, BatchNorm) and module.affine
    ]


def scaled_bn_forward(
    model: nn.Module,
    x: Tensor,
    weight_scale: Sequence[Tensor],
    bias_scale: Sequence[Tensor] | None = None,
) -> Tensor:
    """``model(x)`` with every affine BatchNorm ``l`` (in ``bn_layers`` order) computing
    ``γ_l ⊙ weight_scale[l]`` and ``β_l ⊙ bias_scale[l]`` in place of γ_l and β_l.

    The scales are per channel, ``[C_l]``, and may require grad; the module's own
    parameters are not modified (``torch.func.functional_call``), so the model keeps its
    class and state_dict layout. In training mode BatchNorm still updates its running
    statistics as a plain forward pass would.
    """
    layers = bn_layers(model)
    if len(weight_scale) != len(layers) or (bias_scale is not None and len(bias_scale) != len(layers)):
        raise ValueError(f"need one scale per BatchNorm layer ({len(layers)})")
    replaced: dict[str, Tensor] = {}
    for i, (name, module) in enumerate(layers):
        prefix = f"{name}." if name else ""
        replaced[prefix + "weight"] = module.weight * weight_scale[i]
        if bias_scale is not None:
            replaced[prefix + "bias"] = module.bias * bias_scale[i]
    return functional_call(model, replaced, (x,))


@torch.no_grad()
def zero_bn_channels(model: nn.Module, pruned: Sequence[Tensor]) -> None:
    """Set γ and β of the channels where ``pruned[l]`` (bool ``[C_l]``) is true to 0, in place.

    A pruned channel then outputs 0 whatever its input; every other value is untouched.
    """
    layers = bn_layers(model)
    if len(pruned) != len(layers):
        raise ValueError(f"need one channel selection per BatchNorm layer ({len(layers)})")
    for (_, module), chosen in zip(layers, pruned):
        chosen = chosen.to(module.weight.device)
        module.weight[chosen] = 0.0
        module.bias[chosen] = 0.0


def clean_accuracy(model: nn.Module, data: ImageSet) -> float:
    """Accuracy of ``model`` (evaluation mode) on ``data``'s uint8 images."""
    pred = predict(model, data.x)
    return accuracy(pred, data.y.to(pred.device))


def float_batch(data: ImageSet, index: Tensor, aug: Augmentation, gen: torch.Generator) -> tuple[Tensor, Tensor]:
    """Images ``data.x[index]`` as floats in [0, 1], augmented with ``gen``, and their labels."""
    index = index.to(data.x.device)
    return augment(to_float(data.x[index]), aug, gen), data.y[index]


def sample_index(n: int, batch_size: int, gen: torch.Generator) -> Tensor:
    """``batch_size`` indices into ``n`` samples, drawn uniformly with replacement."""
    return torch.randint(0, n, (batch_size,), generator=gen)


def epoch_index(n: int, batch_size: int, gen: torch.Generator) -> Iterator[Tensor]:
    """The batches of one pass over ``n`` samples in an order drawn from ``gen`` (the last may be short)."""
    order = torch.randperm(n, generator=gen)
    for start in range(0, n, batch_size):
        yield order[start : start + batch_size]


def cycle_index(n: int, batch_size: int, gen: torch.Generator) -> Iterator[Tensor]:
    """Batches of ``epoch_index`` without end: a fresh order for every pass over the data."""
    while True:
        yield from epoch_index(n, batch_size, gen)


def check_finite(loss: float, step: int, history: list[float]) -> None:
    """Raise ``TrainingDiverged`` (at ``step``, with ``history``) when ``loss`` is NaN or infinite."""
    if not math.isfinite(loss):
        raise TrainingDiverged(step, [*history, loss])
