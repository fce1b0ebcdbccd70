"""Blended (Chen et al., 2017): ``x' = (1 − alpha)·x + alpha·pattern`` over the whole image.

BackdoorBench blends a Hello Kitty photo; here the pattern is uniform noise drawn from a
fixed ``pattern_seed``, so it is reproducible anywhere and needs no resource file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import torch
from torch import Tensor

from attacks.base import Attack
from bench.core.data import DatasetSpec
from bench.core.params import BackdoorBench, BenchOwn, Params, Range
from bench.core.registry import ATTACKS
from bench.core.seeding import make_generator


@dataclass(frozen=True)
class BlendedParams(Params):
    alpha: Annotated[float, Range("(0, 1]"), BackdoorBench("config/attack/blended/default.yaml")] = 0.2
    """blend weight of the pattern"""
    pattern_seed: Annotated[int, Range("any"), BenchOwn("seeded noise, not BackdoorBench's hello_kitty.jpeg (no resource)")] = 0
    """seed of the uniform-noise pattern"""


@ATTACKS.register("blended")
class Blended(Attack):
    Params = BlendedParams

    def __init__(self, params: BlendedParams, spec: DatasetSpec) -> None:
        super().__init__(params, spec)
        gen = make_generator("blended-pattern", params.pattern_seed)
        shape = (1, spec.channels, spec.size, spec.size)
        self.pattern = torch.randint(0, 256, shape, generator=gen, dtype=torch.uint8)  # [1, C, H, W]

    def apply(self, x: Tensor) -> Tensor:
        alpha = self.params.alpha
        mixed = (1 - alpha) * x.float() + alpha * self.pattern.to(x.device).float()
        return mixed.round_().clamp_(0, 255).to(torch.uint8)
