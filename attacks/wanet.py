"""WaNet (Nguyen & Tran, ICLR 2021): a small, smooth, fixed warp of the whole image.

The warping field: a ``k×k`` grid of 2-D offsets uniform in [−1, 1], divided by its
mean absolute value, upsampled bicubically (``align_corners=True``) to the image side;
the sampling grid is ``clamp((identity + s · field / H) · grid_rescale, −1, 1)`` and the
trigger is ``grid_sample(x, grid, bilinear, align_corners=True)``. The field is drawn
at construction from a generator seeded by ``grid_seed`` (as Blended's ``pattern_seed``),
so it is reproducible anywhere and the attack keeps no state (``state_dict`` is empty).

Training control (``training_hooks``, no poisoned dataset): in every augmented batch
a fraction ``rho`` of the rows is warped and relabelled with the target (backdoor), and
a fraction ``cross_ratio · rho`` is warped with the grid plus uniform noise in
``[−1, 1] / H`` per pixel (noise mode) and keeps its label; counts per batch are
rounded stochastically (``attacks._generators.split_roles``). BackdoorBench defaults:
k 4, s 0.5, grid_rescale 1, cross_ratio 2. BackdoorBench warps before its own
augmentation (random crop 5, rotation 10°); here the shared loop augments first, so
the warp is stamped on the augmented images, aligned with the image frame as at test time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attacks._generators import BACKDOOR, CROSS, PoisonedBatch, PoisoningHooks, apply_float, split_roles
from attacks.base import AttackContext, BatchPoisoningAttack
from bench.core.data import DatasetSpec
from bench.core.params import BackdoorBench, BenchOwn, Params, Range
from bench.core.poison import Target, target_labels
from bench.core.registry import ATTACKS
from bench.core.seeding import make_generator


_BB = "config/attack/wanet/default.yaml"


@dataclass(frozen=True)
class WaNetParams(Params):
    k: Annotated[int, Range(">= 2"), BackdoorBench(_BB)] = 4
    """side of the control grid"""
    s: Annotated[float, Range(">= 0"), BackdoorBench(_BB)] = 0.5
    """warping strength"""
    grid_rescale: Annotated[float, Range("> 0"), BackdoorBench(_BB)] = 1.0
    """scale of the sampling grid (1: none)"""
    cross_ratio: Annotated[float, Range(">= 0"), BackdoorBench(_BB)] = 2.0
    """noise-mode rows per backdoor row"""
    grid_seed: Annotated[int, Range("any"), BenchOwn("the field comes from a seed: reproducible anywhere")] = 0
    """seed of the warping field"""


def warping_grid(k: int, s: float, grid_rescale: float, size: int, gen: torch.Generator) -> Tensor:
    """The sampling grid float32 ``[1, H, W, 2]`` (``[..., 0]`` is x, ``[..., 1]`` is y, in [−1, 1])."""
    ins = torch.rand(1, 2, k, k, generator=gen) * 2 - 1
    ins = ins / ins.abs().mean()
    field = F.interpolate(ins, size=(size, size), mode="bicubic", align_corners=True).permute(0, 2, 3, 1)
    axis = torch.linspace(-1, 1, size)
    rows, cols = torch.meshgrid(axis, axis, indexing="ij")
    identity = torch.stack((cols, rows), dim=2)[None]
    return ((identity + s * field / size) * grid_rescale).clamp(-1, 1)


@ATTACKS.register("wanet")
class WaNet(BatchPoisoningAttack):
    Params = WaNetParams

    def __init__(self, params: WaNetParams, spec: DatasetSpec) -> None:
        super().__init__(params, spec)
        gen = make_generator("wanet-grid", params.grid_seed)
        self.grid = warping_grid(params.k, params.s, params.grid_rescale, spec.size, gen)  # [1, H, W, 2]

    def warp(self, x: Tensor, noise: Tensor | None = None) -> Tensor:
        """Float images in [0, 1] warped by the grid (plus ``noise`` ``[N, H, W, 2]``, then clamped, if given)."""
        grid = self.grid.to(x.device).expand(len(x), -1, -1, -1)
        if noise is not None:
            grid = (grid + noise).clamp(-1, 1)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=True)

    def apply(self, x: Tensor) -> Tensor:
        return apply_float(self.warp, x)

    def poison_batch(self, x: Tensor, y: Tensor, target: Target, rho: float, gen: torch.Generator) -> PoisonedBatch:
        """One training batch (float ``[B, C, H, W]`` in [0, 1], labels ``[B]``) with backdoor and noise-mode rows."""
        roles = split_roles(len(x), (rho, self.params.cross_ratio * rho), gen)
        bd = torch.nonzero(roles == BACKDOOR).flatten().to(x.device)
        cross = torch.nonzero(roles == CROSS).flatten().to(x.device)
        size = self.spec.size
        noise = (torch.rand(len(cross), size, size, 2, generator=gen) * 2 - 1).div_(size).to(x.device)
        x, y = x.clone(), y.clone()
        x[bd] = self.warp(x[bd])
        x[cross] = self.warp(x[cross], noise)
        y[bd] = target_labels(y[bd], target, self.spec.num_classes)
        return PoisonedBatch(x, y, roles.to(x.device))

    def training_hooks(self, model: nn.Module, ctx: AttackContext) -> PoisoningHooks:
        return PoisoningHooks(lambda x, y: self.poison_batch(x, y, ctx.target, ctx.poison_ratio, ctx.generator))

    def cross_fraction(self, rho: float) -> float:
        return self.params.cross_ratio * rho
