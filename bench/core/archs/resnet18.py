"""ResNet-18 (He et al., 2016): torchvision's ``resnet18`` with a CIFAR-style stem.

torchvision's stem (7×7 conv stride 2, then a stride-2 max-pool) quarters the side before
the first block and leaves a 32×32 image at 1×1 after ``layer4``. Here the stem is one 3×3
conv, stride 1, from ``spec.channels`` (initialised as torchvision initialises its convs),
and there is no max-pool: the CIFAR ResNet-18 of the backdoor literature (kuangliu's
pytorch-cifar). Blocks, widths, strides, the pooled head (``fc`` with ``num_classes``
outputs) and state-dict names are torchvision's; only ``conv1`` changes shape.

Shapes: ``[N, C, S, S]`` → ``layer1`` ``[N, 64, S, S]`` → ``layer4`` ``[N, 512, S/8, S/8]``
(4×4 at 32×32) → pooled → logits ``[N, K]``. Any S ≥ 1 works. 11.17M parameters at K = 10.
BackdoorBench's ``resnet18`` is torchvision's unmodified (ImageNet stem), so its numbers
are not comparable with this one's; its CIFAR backbone is ``preactresnet18``.
"""

from __future__ import annotations

from torch import nn
from torchvision import models

from bench.core.data import DatasetSpec
from bench.core.registry import ARCHS


@ARCHS.register("resnet18")
def resnet18(spec: DatasetSpec) -> nn.Module:
    model = models.resnet18(weights=None, num_classes=spec.num_classes)
    model.conv1 = nn.Conv2d(spec.channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    model.maxpool = nn.Identity()
    return model
