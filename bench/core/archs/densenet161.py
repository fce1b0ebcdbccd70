"""DenseNet-161 (Huang et al., 2017): torchvision's ``densenet161`` with a CIFAR-style stem.

torchvision's stem (7×7 conv stride 2, then a stride-2 max-pool) quarters the side before
the first dense block; with the three stride-2 transitions a 32×32 image ends at 1×1, and
a 16×16 one cannot pass the third transition at all. Here the stem is one 3×3 conv,
stride 1, from ``spec.channels`` (torchvision's init), and there is no max-pool, as in
kuangliu's CIFAR DenseNets. Growth rate 48, blocks (6, 12, 36, 24), 96 initial features,
the head (2208 → K) and the state-dict names are torchvision's; only ``features.conv0``
changes shape.

Shapes: ``[N, C, S, S]`` → 96 channels at S → dense blocks at S, S/2, S/4, S/8 (4×4 at
32×32) → 2208 channels → pooled → logits ``[N, K]``. Any S ≥ 8 works (the transitions'
2×2 average pools need a side of at least 2). 26.48M parameters at K = 10; about 2.5
GMAC per 32×32 image, the heaviest convnet here. BackdoorBench uses the unmodified network,
so its numbers for this model are not comparable with these.
"""

from __future__ import annotations

from torch import nn
from torchvision import models

from bench.core.data import DatasetSpec
from bench.core.registry import ARCHS


HEAVY = True  # ImageNet-scale: seconds per CPU training step even at 16×16


@ARCHS.register("densenet161")
def densenet161(spec: DatasetSpec) -> nn.Module:
    model = models.densenet161(weights=None, num_classes=spec.num_classes)
    stem = nn.Conv2d(spec.channels, model.features.conv0.out_channels, kernel_size=3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(stem.weight)
    model.features.conv0 = stem
    model.features.pool0 = nn.Identity()
    return model
