"""ConvNeXt-Tiny (Liu et al., 2022): torchvision's ``convnext_tiny`` with a CIFAR-style stem.

torchvision's stem is a 4×4 "patchify" conv, stride 4; with the three stride-2
downsampling layers a 32×32 image ends at 1×1, and a 16×16 one cannot pass the third
downsampling at all. As for the CIFAR ResNet-18, the stem's ×4 is removed: it is a 3×3
conv, stride 1, from ``spec.channels`` (torchvision's init: truncated normal, std 0.02),
followed by torchvision's stem LayerNorm. Stages (96, 192, 384, 768 channels; 3, 3, 9, 3
blocks with 7×7 depthwise convs, layer scale 1e-6), stochastic depth 0.1, the head
(LayerNorm, 768 → K) and the state-dict names are torchvision's; only the stem conv
changes shape.

Shapes: ``[N, C, S, S]`` → 96 channels at S → 192 at S/2 → 384 at S/4 → 768 at S/8 (4×4
at 32×32) → pooled → logits ``[N, K]``. Any S ≥ 8 works. 27.83M parameters at K = 10.
BackdoorBench fine-tunes the unmodified network from ImageNet weights, which cannot be
used here, so its numbers for this model are not comparable with these either way.
"""

from __future__ import annotations

from torch import nn
from torchvision import models

from bench.core.data import DatasetSpec
from bench.core.registry import ARCHS


HEAVY = True  # ImageNet-scale: seconds per CPU training step even at 16×16


@ARCHS.register("convnext_tiny")
def convnext_tiny(spec: DatasetSpec) -> nn.Module:
    model = models.convnext_tiny(weights=None, num_classes=spec.num_classes)
    stem = nn.Conv2d(spec.channels, model.features[0][0].out_channels, kernel_size=3, stride=1, padding=1)
    nn.init.trunc_normal_(stem.weight, std=0.02)
    nn.init.zeros_(stem.bias)
    model.features[0][0] = stem
    return model
