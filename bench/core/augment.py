"""Batch-wise augmentation on the device: random crop after zero padding, horizontal flip."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from bench.core.data import Augmentation


def augment(x: Tensor, aug: Augmentation, gen: torch.Generator) -> Tensor:
    """Augment float images ``x`` ``[B, C, H, W]``; per-sample offsets and flips drawn from ``gen`` (CPU)."""
    b, _, h, w = x.shape
    if aug.crop_padding > 0:
        p = aug.crop_padding
        padded = F.pad(x, (p, p, p, p))
        dy = torch.randint(0, 2 * p + 1, (b,), generator=gen).to(x.device)
        dx = torch.randint(0, 2 * p + 1, (b,), generator=gen).to(x.device)
        rows = (dy[:, None] + torch.arange(h, device=x.device))[:, :, None]  # [B, H, 1]
        cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, :]  # [B, 1, W]
        batch = torch.arange(b, device=x.device)[:, None, None]
        x = padded[batch, :, rows, cols].permute(0, 3, 1, 2)  # [B, H, W, C] → [B, C, H, W]
    if aug.flip:
        flip = (torch.rand(b, generator=gen) < 0.5).to(x.device)[:, None, None, None]
        x = torch.where(flip, x.flip(3), x)
    return x
