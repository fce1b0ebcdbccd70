"""PreAct-ResNet18 (He et al., 2016), the field's standard backbone for 32×32 inputs.

Stem: one 3×3 conv, stride 1 (CIFAR style). Stages of two pre-activation basic blocks
with 64/128/256/512 channels; global average pooling makes any input size ≥ 8 work.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from bench.core.data import DatasetSpec
from bench.core.registry import ARCHS


class PreActBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, stride=1, padding=1, bias=False)
        self.shortcut = (
            nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False) if stride != 1 or c_in != c_out else None
        )

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(x))
        skip = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + skip


class PreActResNet18(nn.Module):
    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
        widths, strides = (64, 128, 256, 512), (1, 2, 2, 2)
        blocks, c_in = [], 64
        for width, stride in zip(widths, strides):
            blocks += [PreActBlock(c_in, width, stride), PreActBlock(width, width, 1)]
            c_in = width
        self.layers = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(512)
        self.linear = nn.Linear(512, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn(self.layers(self.conv1(x))))
        return self.linear(F.adaptive_avg_pool2d(out, 1).flatten(1))


@ARCHS.register("preactresnet18")
def preactresnet18(spec: DatasetSpec) -> nn.Module:
    return PreActResNet18(spec.channels, spec.num_classes)
