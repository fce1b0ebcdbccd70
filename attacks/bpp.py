"""BppAttack (Wang et al., CVPR 2022): colour-depth squeezing with Floyd–Steinberg dithering.

The trigger quantises every channel to ``squeeze_num`` evenly spaced levels in [0, 1]
(level ``round(v · (q − 1)) / (q − 1)``); with ``dithering`` the quantisation error
of each pixel is diffused to its unprocessed neighbours with the Floyd–Steinberg
weights (right 7/16, below-left 3/16, below 5/16, below-right 1/16), in raster order.
The diffusion is vectorised over the batch and the channels, and over the pixels of
one anti-diagonal wavefront ``x + 2y = t`` (every pixel there has all its
predecessors done), so an H×W image takes W + 2H − 2 steps instead of H·W.
Quantised levels are clamped to [0, q − 1] (the reference numba loop can overshoot by
one level at a saturated pixel).

Training control (``training_hooks``, no poisoned dataset), as BackdoorBench's
``attack/bpp.py``: in every augmented batch a fraction ``rho`` of the rows is squeezed
and relabelled with the target; a fraction ``neg_ratio`` of the rows (of the batch,
not of ``rho``) becomes negative samples that keep their label: ``x_i + (T(x_j) − x_j)``
clamped to [0, 1], the quantisation residual of another image ``x_j`` of the batch
(BackdoorBench draws ``x_j`` from the whole training set). Counts per batch are rounded
stochastically. BackdoorBench defaults: squeeze_num 8, neg_ratio 0.1; its
``default.yaml`` sets ``dithering: False``, the paper dithers, and so does this default.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import torch
from torch import Tensor, nn

from attacks._generators import BACKDOOR, CROSS, PoisonedBatch, PoisoningHooks, apply_float, partners, split_roles
from attacks.base import AttackContext, BatchPoisoningAttack
from bench.core.params import BackdoorBench, Paper, Params, Range
from bench.core.poison import Target, target_labels
from bench.core.registry import ATTACKS

_FS_WEIGHTS = ((0, 1, 7 / 16), (1, -1, 3 / 16), (1, 0, 5 / 16), (1, 1, 1 / 16))  # (dy, dx, weight)


_BB = "config/attack/bpp/default.yaml"


@dataclass(frozen=True)
class BppParams(Params):
    squeeze_num: Annotated[int, Range("[2, 255]"), BackdoorBench(_BB)] = 8
    """colour levels per channel after squeezing (the original has 256)"""
    neg_ratio: Annotated[float, Range("[0, 1)"), BackdoorBench(_BB)] = 0.1
    """fraction of each batch that becomes negative samples"""
    dithering: Annotated[bool, Paper("BppAttack dithers (BackdoorBench's yaml: False)")] = True
    """Floyd–Steinberg error diffusion"""


def squeeze(x: Tensor, levels: int) -> Tensor:
    """Float ``x`` in [0, 1] quantised to ``levels`` evenly spaced values, without dithering."""
    q = levels - 1
    return x.mul(q).round_().clamp_(0, q).div_(q)


def floyd_steinberg(x: Tensor, levels: int) -> Tensor:
    """Float ``[N, C, H, W]`` in [0, 1] quantised to ``levels`` values with Floyd–Steinberg dithering."""
    n, c, h, w = x.shape
    q = levels - 1
    work = torch.zeros(n, c, h + 1, w + 2, dtype=torch.float32, device=x.device)  # padded: row h, cols −1 and w
    work[:, :, :h, 1 : w + 1] = x.float()
    out = torch.empty(n, c, h, w, dtype=torch.float32, device=x.device)
    ys_all = torch.arange(h, device=x.device)
    for t in range(w + 2 * (h - 1)):
        xs_all = t - 2 * ys_all
        valid = (xs_all >= 0) & (xs_all < w)
        ys, xs = ys_all[valid], xs_all[valid]
        old = work[:, :, ys, xs + 1]
        new = old.mul(q).round().clamp(0, q).div(q)
        out[:, :, ys, xs] = new
        err = old - new
        for dy, dx, weight in _FS_WEIGHTS:  # distinct targets within one direction; directions one after another
            work[:, :, ys + dy, xs + 1 + dx] += weight * err
    return out


@ATTACKS.register("bpp")
class Bpp(BatchPoisoningAttack):
    Params = BppParams

    def squeeze(self, x: Tensor) -> Tensor:
        """The float trigger: ``[N, C, H, W]`` in [0, 1] → squeezed (and dithered) images."""
        if self.params.dithering:
            return floyd_steinberg(x, self.params.squeeze_num)
        return squeeze(x, self.params.squeeze_num)

    def apply(self, x: Tensor) -> Tensor:
        return apply_float(self.squeeze, x)

    def poison_batch(self, x: Tensor, y: Tensor, target: Target, rho: float, gen: torch.Generator) -> PoisonedBatch:
        """One training batch (float ``[B, C, H, W]`` in [0, 1], labels ``[B]``) with backdoor and negative rows."""
        roles = split_roles(len(x), (rho, self.params.neg_ratio), gen)
        bd = torch.nonzero(roles == BACKDOOR).flatten()
        neg = torch.nonzero(roles == CROSS).flatten()
        src = partners(neg, len(x), gen).to(x.device)
        bd, neg = bd.to(x.device), neg.to(x.device)
        x, y = x.clone(), y.clone()
        residual = self.squeeze(x[src]) - x[src]
        x[neg] = (x[neg] + residual).clamp_(0, 1)  # before the backdoor rows change: sources are clean images
        x[bd] = self.squeeze(x[bd])
        y[bd] = target_labels(y[bd], target, self.spec.num_classes)
        return PoisonedBatch(x, y, roles.to(x.device))

    def training_hooks(self, model: nn.Module, ctx: AttackContext) -> PoisoningHooks:
        return PoisoningHooks(lambda x, y: self.poison_batch(x, y, ctx.target, ctx.poison_ratio, ctx.generator))

    def cross_fraction(self, rho: float) -> float:
        return self.params.neg_ratio
