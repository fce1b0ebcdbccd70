"""MobileNetV3-Large (Howard et al., 2019): torchvision's ``mobilenet_v3_large``, CIFAR-style.

torchvision's network divides the side by 32 (stem conv stride 2, then four stride-2
bottlenecks), leaving a 32×32 image at 1×1 from the 160-channel stage on. As for the
CIFAR ResNet-18, the first ×4 of that is removed: the stem is a 3×3 conv, stride 1, from
``spec.channels`` (torchvision's init), and the first stride-2 bottleneck (16 → 24
channels, no residual either way) runs at stride 1. Everything else, the head
(960 → 1280 → K, hardswish, dropout 0.2) and the state-dict names and shapes are
torchvision's.

Shapes: ``[N, C, S, S]`` → 16, 24 channels at S → 40 at S/2 → 80, 112 at S/4 → 160 at S/8
(4×4 at 32×32) → 960 → pooled → logits ``[N, K]``. Any S ≥ 1 works. 4.21M parameters at
K = 10. BackdoorBench uses the unmodified network (1×1 at 32×32), so its numbers for this
model are not comparable with these.
"""

from __future__ import annotations

from torch import nn
from torchvision import models

from bench.core.data import DatasetSpec
from bench.core.registry import ARCHS


def _unstride_first_downsampling(features: nn.Sequential) -> None:
    """Set the first stride-2 conv after the stem to stride 1 (its padding keeps the side)."""
    for block in features[1:]:
        for module in block.modules():
            if isinstance(module, nn.Conv2d) and module.stride == (2, 2):
                module.stride = (1, 1)
                return
    raise ValueError("no stride-2 conv after the stem")


@ARCHS.register("mobilenet_v3_large")
def mobilenet_v3_large(spec: DatasetSpec) -> nn.Module:
    model = models.mobilenet_v3_large(weights=None, num_classes=spec.num_classes)
    stem = nn.Conv2d(spec.channels, model.features[0][0].out_channels, kernel_size=3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(stem.weight, mode="fan_out")
    model.features[0][0] = stem
    _unstride_first_downsampling(model.features)
    return model
