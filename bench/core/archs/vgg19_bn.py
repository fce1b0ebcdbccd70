"""VGG-19 with BatchNorm (Simonyan & Zisserman, 2015): torchvision's ``vgg19_bn``, kept whole.

BackdoorBench trains torchvision's ``vgg19_bn(num_classes=K)`` on 32×32 images unchanged
(it is one of its model-zoo backbones), so this keeps its features, its head and its
state-dict names and shapes; three things differ:

- the first conv reads ``spec.channels`` (initialised as torchvision initialises its convs);
- the last Linear has ``spec.num_classes`` outputs;
- the five 2×2 max-pools use ``ceil_mode``, so a side that is not a multiple of 32 ends at
  1×1 instead of 0×0 (8 → 4 → 2 → 1 → 1 → 1; 28 → 14 → 7 → 4 → 2 → 1). At sides that are
  multiples of 32 (cifar10, gtsrb, tiny) the network is exactly torchvision's.

Shapes: ``[N, C, S, S]`` → features ``[N, 512, ⌈S/32⌉, ⌈S/32⌉]`` (1×1 at 32×32, 2×2 at 64×64)
→ adaptive average pool ``[N, 512, 7, 7]`` → 25088 → 4096 → 4096 → logits ``[N, K]``
(dropout 0.5). At 32×32 the pool copies one 512-vector into 49 cells, so 103M of the
139.6M parameters (K = 10) sit in a first Linear layer that sees only 512 distinct values;
that is BackdoorBench's network, kept so that its numbers and checkpoints stay comparable.
"""

from __future__ import annotations

from torch import nn
from torchvision import models

from bench.core.data import DatasetSpec
from bench.core.registry import ARCHS


HEAVY = True  # ImageNet-scale: seconds per CPU training step even at 16×16


@ARCHS.register("vgg19_bn")
def vgg19_bn(spec: DatasetSpec) -> nn.Module:
    model = models.vgg19_bn(weights=None, num_classes=spec.num_classes)
    first = nn.Conv2d(spec.channels, 64, kernel_size=3, padding=1)
    nn.init.kaiming_normal_(first.weight, mode="fan_out", nonlinearity="relu")
    nn.init.zeros_(first.bias)
    model.features[0] = first
    for module in model.features:
        if isinstance(module, nn.MaxPool2d):
            module.ceil_mode = True
    return model
