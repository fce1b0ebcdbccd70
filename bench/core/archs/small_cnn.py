"""A small VGG-style CNN with BatchNorm for CPU work: four 3×3 conv blocks, global pooling."""

from __future__ import annotations

from torch import nn

from bench.core.data import DatasetSpec
from bench.core.registry import ARCHS


def _block(c_in: int, c_out: int, pool: bool) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
    return layers + [nn.MaxPool2d(2)] if pool else layers


@ARCHS.register("small_cnn")
def small_cnn(spec: DatasetSpec, width: int = 32) -> nn.Module:
    return nn.Sequential(
        *_block(spec.channels, width, pool=False),
        *_block(width, width, pool=True),
        *_block(width, 2 * width, pool=False),
        *_block(2 * width, 2 * width, pool=True),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(2 * width, spec.num_classes),
    )
