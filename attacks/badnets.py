"""BadNets (Gu et al., 2017): a white square patch in the bottom-right corner.

The patch is 3×3 at 32×32 (BackdoorBench's ``trigger_image.png``: pixels 29–31), scaled
with the image side and rounded up: 2×2 at 16×16, 6×6 at 64×64.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated

from torch import Tensor

from attacks.base import Attack
from bench.core.params import BackdoorBench, Params, Range
from bench.core.registry import ATTACKS


@dataclass(frozen=True)
class BadNetsParams(Params):
    patch_size: Annotated[int, Range("[1, 32]"), BackdoorBench("resource/badnet/trigger_image.png")] = 3
    """side of the patch at 32×32, in pixels"""
    value: Annotated[int, Range("[0, 255]"), BackdoorBench("resource/badnet/trigger_image.png")] = 255
    """intensity of the patch, 0–255"""


@ATTACKS.register("badnets")
class BadNets(Attack):
    Params = BadNetsParams

    @property
    def side(self) -> int:
        return max(1, math.ceil(self.params.patch_size * self.spec.size / 32))

    def apply(self, x: Tensor) -> Tensor:
        out = x.clone()
        out[:, :, -self.side :, -self.side :] = self.params.value
        return out
