"""ViT-B/16 (Dosovitskiy et al., 2021): torchvision's ``vit_b_16`` behind a resize to 224×224.

The image is resized in the model (bilinear, ``align_corners=False``), then torchvision's
ViT-B/16 runs unchanged: 16×16 patches → 196 tokens + class token, 12 layers, width 768,
12 heads, MLP 3072, head 768 → K (zero-initialised, as in torchvision). The patch
embedding reads ``spec.channels`` (torchvision's init). The module is
``nn.Sequential(Upsample, VisionTransformer)``, the layout of BackdoorBench's
``Sequential(Resize((224, 224)), vit_b_16)``.

Why a resize rather than a smaller patch: it is what BackdoorBench does, so the token
grid, the attention pattern and the cost match its ViT-B/16; parameter names and shapes
(197 position embeddings) are torchvision's and do not depend on the dataset, so ImageNet
or BackdoorBench checkpoints obtained elsewhere load as they are (BackdoorBench fine-tunes
from ImageNet weights, which cannot be downloaded here); and every side works (8, 16, 28,
32, 64), where a patch that divides the side would change with the dataset (4 at 32, 2 at
16, none sensible at 28) and change the network with it. The price is compute: 196 tokens
whatever the input, about 17.6 GMAC per image, 3× a patch-4 ViT-B on 32×32.

Shapes: ``[N, C, S, S]`` → ``[N, C, 224, 224]`` → tokens ``[N, 197, 768]`` → logits
``[N, K]``. 85.81M parameters at K = 10.
"""

from __future__ import annotations

import math

from torch import nn
from torchvision import models

from bench.core.data import DatasetSpec
from bench.core.registry import ARCHS

IMAGE_SIZE = 224  # side the ViT sees, whatever the dataset's


HEAVY = True  # ImageNet-scale: seconds per CPU training step even at 16×16


@ARCHS.register("vit_b_16")
def vit_b_16(spec: DatasetSpec) -> nn.Module:
    vit = models.vit_b_16(weights=None, num_classes=spec.num_classes, image_size=IMAGE_SIZE)
    patch = nn.Conv2d(spec.channels, vit.hidden_dim, kernel_size=vit.patch_size, stride=vit.patch_size)
    nn.init.trunc_normal_(patch.weight, std=math.sqrt(1 / (spec.channels * vit.patch_size**2)))
    nn.init.zeros_(patch.bias)
    vit.conv_proj = patch
    return nn.Sequential(nn.Upsample(size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=False), vit)
