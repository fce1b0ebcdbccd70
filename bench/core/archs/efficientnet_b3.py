"""EfficientNet-B3 (Tan & Le, 2019): torchvision's ``efficientnet_b3``, CIFAR-style.

torchvision's network divides the side by 32 (stem conv stride 2, then the stride-2 first
blocks of stages 2, 3, 4 and 6), leaving a 32×32 image at 1×1 from stage 6 on. As for the
CIFAR ResNet-18, the first ×4 of that is removed: the stem is a 3×3 conv, stride 1, from
``spec.channels`` (torchvision's init), and stage 2's first block (24 → 32 channels, no
residual either way) runs at stride 1. Width 1.2, depth 1.4, squeeze-excitation,
stochastic depth 0.2, the head (1536 → K after dropout 0.3) and the state-dict names and
shapes are torchvision's.

Shapes: ``[N, C, S, S]`` → 40, 24, 32 channels at S → 48 at S/2 → 96, 136 at S/4 →
232, 384 at S/8 (4×4 at 32×32) → 1536 → pooled → logits ``[N, K]``. Any S ≥ 1 works.
10.71M parameters at K = 10. BackdoorBench uses the unmodified network (1×1 at 32×32),
so its numbers for this model are not comparable with these.
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


HEAVY = True  # ImageNet-scale: seconds per CPU training step even at 16×16


@ARCHS.register("efficientnet_b3")
def efficientnet_b3(spec: DatasetSpec) -> nn.Module:
    model = models.efficientnet_b3(weights=None, num_classes=spec.num_classes)
    stem = nn.Conv2d(spec.channels, model.features[0][0].out_channels, kernel_size=3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(stem.weight, mode="fan_out")
    model.features[0][0] = stem
    _unstride_first_downsampling(model.features)
    return model
