"""Shared pieces of the architectures."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class Normalized(nn.Module):
    """``net((x - mean) / std)`` for ``x`` float ``[N, C, H, W]`` in [0, 1]."""

    def __init__(self, net: nn.Module, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.net((x - self.mean) / self.std)
