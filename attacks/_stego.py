"""Steganographic trigger networks shared by SSBA and Poison Ink: hide a secret in an image, reveal it again.

- ``StegoEncoder``: a small U-Net (StegaStamp's encoder, Tancik et al. 2020) from the
  image and a secret map of the same side, concatenated along channels, to a residual:
  ``stego = clamp(x + r, 0, 1)`` with ``r = U(x, s)``, or ``r = eps · tanh(U(x, s))`` when
  bounded by ``eps``. Poison Ink's injection network is the same U-Net, its unbounded
  output read as ink-opacity logits.
  Plain 3×3 convolutions and ReLUs, no normalisation (as StegaStamp), so an image's
  residual never depends on the other images of its batch.
- ``SecretMap``: StegaStamp's secret path: bits → dense layer → a half-resolution map →
  nearest upsampling to the image side (StegaStamp: 100 bits → 3×50×50, ×8 to 400×400;
  a coarser map cannot carry the bits of a 16×16 image).
- ``BitDecoder``: StegaStamp's decoder without its spatial transformer: stride-2
  convolutions, a dense layer, one logit per bit.
- ``RevealNet``: Poison Ink's extraction network (its ``HidingRes`` without a sigmoid):
  full-resolution 3×3 convolutions, image → image, linear output (a sigmoid saturates
  at white, the target of every clean image, and stops learning).
- ``train_networks``: Adam over a set of networks, batches of a training set drawn
  without replacement per epoch from an explicit generator.

Every network is built on the meta device and initialised from an explicit generator
(``attacks._generators.build``), never from the global RNG.
"""

from __future__ import annotations

import math
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attacks._generators import halvings
from bench.core.data import to_float


def width_for(size: int) -> int:
    """Base width of the stego networks: half the image side, at least 8 (8 at 16×16, 16 at 32×32, 32 at 64×64)."""
    return max(8, size // 2)


def _convs(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU(), nn.Conv2d(c_out, c_out, 3, padding=1), nn.ReLU())


class StegoEncoder(nn.Module):
    """Image ``[N, C, H, W]`` in [0, 1] and secret map ``[N, S, H, W]`` → stego image in [0, 1].

    The residual is ``U(x, s)``, or ``eps · tanh(U(x, s))`` when ``eps`` is given (then ``|stego − x| <= eps``).

    A U-Net with ``levels`` stride-2 down steps (widths ``width · 2^i``) and nearest-upsampling
    up steps with skip connections; ``levels`` is how often the side halves (at most 2).
    """

    def __init__(self, channels: int, secret_channels: int, size: int, eps: float | None) -> None:
        super().__init__()
        self.eps, self.size = eps, size
        width, levels = width_for(size), halvings(size, 2)
        widths = [width * 2**i for i in range(levels + 1)]
        self.inc = _convs(channels + secret_channels, width)
        self.downs = nn.ModuleList(
            nn.Sequential(nn.Conv2d(a, b, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(b, b, 3, padding=1), nn.ReLU())
            for a, b in zip(widths[:-1], widths[1:])
        )
        self.ups = nn.ModuleList(nn.Conv2d(b, a, 3, padding=1) for a, b in zip(widths[:-1], widths[1:]))
        self.merges = nn.ModuleList(_convs(2 * a, a) for a in widths[:-1])
        self.out = nn.Conv2d(width, channels, 1)

    def residual(self, x: Tensor, secret: Tensor) -> Tensor:
        """The residual ``[N, C, H, W]``, before clamping: ``U(x, s)`` or ``eps · tanh(U(x, s))``."""
        h = self.inc(torch.cat([x - 0.5, secret], dim=1))
        skips = [h]
        for down in self.downs:
            h = down(h)
            skips.append(h)
        skips.pop()
        for up, merge in zip(reversed(self.ups), reversed(self.merges)):
            skip = skips.pop()
            h = F.relu(up(F.interpolate(h, size=skip.shape[-2:], mode="nearest")))
            h = merge(torch.cat([skip, h], dim=1))
        out = self.out(h)
        return out if self.eps is None else self.eps * torch.tanh(out)

    def forward(self, x: Tensor, secret: Tensor) -> Tensor:
        return (x + self.residual(x, secret)).clamp(0, 1)


class SecretMap(nn.Module):
    """Bits ``[N, n_bits]`` in {0, 1} → secret map ``[N, channels, size, size]``.

    A dense layer to a ``ceil(size / 2)`` square map per channel (ReLU), upsampled (nearest) to ``size``.
    """

    def __init__(self, n_bits: int, channels: int, size: int) -> None:
        super().__init__()
        self.channels, self.size, self.low = channels, size, max(1, math.ceil(size / 2))
        self.dense = nn.Linear(n_bits, channels * self.low * self.low)

    def forward(self, bits: Tensor) -> Tensor:
        low = F.relu(self.dense(bits - 0.5)).view(-1, self.channels, self.low, self.low)
        return F.interpolate(low, size=(self.size, self.size), mode="nearest")


class BitDecoder(nn.Sequential):
    """Image ``[N, C, H, W]`` → one logit per bit ``[N, n_bits]``: two stride-2 conv blocks, then dense layers."""

    def __init__(self, channels: int, size: int, n_bits: int) -> None:
        width = width_for(size)
        side = math.ceil(math.ceil(size / 2) / 2)
        super().__init__(
            nn.Conv2d(channels, width, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(2 * width, 2 * width, 3, stride=2, padding=1), nn.ReLU(),
            nn.Flatten(),
            nn.Linear(2 * width * side * side, 256), nn.ReLU(),
            nn.Linear(256, n_bits),
        )  # fmt: skip


class RevealNet(nn.Sequential):
    """Image ``[N, C, H, W]`` → revealed image ``[N, C, H, W]``: 3×3 conv-ReLU layers, a linear output layer."""

    def __init__(self, channels: int, size: int) -> None:
        width = width_for(size)
        super().__init__(
            nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(2 * width, width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(width, channels, 3, padding=1),
        )  # fmt: skip


def round_straight_through(x: Tensor) -> Tensor:
    """``x`` in [0, 1] rounded to the 8-bit grid in the forward pass, identity in the backward pass."""
    return x + (x.mul(255).round().div(255) - x).detach()


def ramp(step: int, total: int, start: float) -> float:
    """0 for the first ``start`` fraction of ``total`` steps, then rising linearly to 1 at the last step."""
    begin = start * total
    if step < begin:
        return 0.0
    return min(1.0, (step - begin + 1) / max(1.0, total - begin))


def batches(n: int, batch_size: int, epochs: int, gen: torch.Generator) -> Iterator[Tensor]:
    """Index batches (CPU int64) over ``epochs`` passes of ``n`` samples, a fresh permutation from ``gen`` per pass."""
    for _ in range(epochs):
        order = torch.randperm(n, generator=gen)
        for start in range(0, n, batch_size):
            yield order[start : start + batch_size]


def train_networks(
    modules: list[nn.Module],
    x: Tensor,
    step_loss: Callable[[Tensor, int, int], Tensor],
    epochs: int,
    batch_size: int,
    lr: float,
    gen: torch.Generator,
) -> list[float]:
    """Adam (betas 0.9, 0.999) on ``modules``' parameters; ``step_loss(batch, step, total)`` gives each batch's loss.

    ``x`` is the uint8 training set ``[N, C, H, W]`` (on the modules' device); batches
    reach ``step_loss`` as float in [0, 1]. Returns the mean loss of each epoch.
    """
    params = [p for m in modules for p in m.parameters()]
    optimizer = torch.optim.Adam(params, lr=lr)
    for m in modules:
        m.train()
    per_epoch = math.ceil(len(x) / batch_size)
    total, losses = per_epoch * epochs, []
    running = torch.zeros((), device=x.device)
    for step, idx in enumerate(batches(len(x), batch_size, epochs, gen)):
        loss = step_loss(to_float(x[idx.to(x.device)]), step, total)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        running += loss.detach()
        if (step + 1) % per_epoch == 0:
            losses.append(running.item() / per_epoch)
            running.zero_()
    for m in modules:
        m.eval().requires_grad_(False)
    return losses
