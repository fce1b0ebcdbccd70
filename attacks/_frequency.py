"""Colour spaces and block DCT for the frequency-domain triggers (CTRL, FTrojan).

Images here are float tensors ``[N, C, H, W]`` in 0–255 units (the units in which both
papers state their magnitudes). Every transform is linear (plus a constant offset for
YCbCr) and exactly invertible up to float rounding:

- **Colour spaces** (3 channels): ``"yuv"`` is analog BT.601 YUV as Kornia's
  ``rgb_to_yuv`` (what CTRL's code uses); ``"ycbcr"`` is full-range BT.601 YCbCr with
  chroma offset 128 (ITU-T T.871, JPEG; OpenCV's ``COLOR_RGB2YCrCb`` up to the order of
  the chroma channels, what FTrojan's code uses). The inverse is the exact matrix
  inverse (Kornia's ``yuv_to_rgb`` rounds its coefficients, so its round trip is off by
  up to ~0.1 of a level).
- **Block DCT**: the orthonormal 2-D DCT-II (``norm="ortho"``, as ``cv2.dct`` and the
  reference ``dct_2d``) of every non-overlapping ``window × window`` block, all blocks
  of all images and channels in one ``einsum``.

Because everything is linear, "convert, DCT, add ``magnitude`` at fixed coefficients,
inverse DCT, convert back" adds the same image-independent pattern to every image:
``frequency_pattern`` computes it once, and ``add_in_frequency`` runs the literal
pipeline (tests check the two agree).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

from bench.core.params import ParamError

ColorSpace = Literal["yuv", "ycbcr"]

# rows: output channel; columns: R, G, B
_MATRICES: dict[str, tuple[tuple[float, ...], ...]] = {
    "yuv": ((0.299, 0.587, 0.114), (-0.147, -0.289, 0.436), (0.615, -0.515, -0.100)),
    "ycbcr": ((0.299, 0.587, 0.114), (-0.168736, -0.331264, 0.5), (0.5, -0.418688, -0.081312)),
}
_OFFSETS: dict[str, tuple[float, ...]] = {"yuv": (0.0, 0.0, 0.0), "ycbcr": (0.0, 128.0, 128.0)}
REFERENCE_WINDOW = 32  # positions are given for a 32×32 window (the papers' CIFAR-10 setting)


def color_transform(space: ColorSpace) -> tuple[Tensor, Tensor]:
    """``(M, offset)`` float64 ``[3, 3]`` and ``[3]``: ``space = M · rgb + offset`` per pixel."""
    if space not in _MATRICES:
        raise ValueError(f"unknown colour space {space!r}; known: {sorted(_MATRICES)}")
    return torch.tensor(_MATRICES[space], dtype=torch.float64), torch.tensor(_OFFSETS[space], dtype=torch.float64)


def mix_channels(x: Tensor, matrix: Tensor) -> Tensor:
    """``matrix`` (``[3, 3]``, rows: output channel) applied to every pixel of float ``[N, 3, H, W]``."""
    return torch.einsum("ij,njhw->nihw", matrix.to(x.device, x.dtype), x)


def rgb_to(x: Tensor, space: ColorSpace) -> Tensor:
    """RGB float ``[N, 3, H, W]`` (0–255) → ``space``."""
    matrix, offset = color_transform(space)
    return mix_channels(x, matrix) + offset.to(x.device, x.dtype).view(1, 3, 1, 1)


def rgb_from(x: Tensor, space: ColorSpace) -> Tensor:
    """``space`` float ``[N, 3, H, W]`` → RGB (0–255, not clamped): the exact inverse of ``rgb_to``."""
    matrix, offset = color_transform(space)
    return mix_channels(x - offset.to(x.device, x.dtype).view(1, 3, 1, 1), torch.linalg.inv(matrix))


def dct_matrix(n: int, dtype: torch.dtype = torch.float64) -> Tensor:
    """Orthonormal DCT-II matrix ``D`` ``[n, n]``: ``D[k, i] = a_k cos(π (2i + 1) k / 2n)``; its inverse is ``Dᵀ``."""
    i = torch.arange(n, dtype=torch.float64)
    k = i.view(-1, 1)
    scale = torch.full((n, 1), math.sqrt(2.0 / n), dtype=torch.float64)
    scale[0] = math.sqrt(1.0 / n)
    return (scale * torch.cos(math.pi * (2 * i + 1) * k / (2 * n))).to(dtype)


def _blocks(x: Tensor, window: int) -> Tensor:
    """``[..., H, W]`` → ``[..., H/w, w, W/w, w]``."""
    h, w = x.shape[-2:]
    if h % window or w % window:
        raise ValueError(f"a {h}×{w} image does not split into {window}×{window} blocks")
    return x.reshape(*x.shape[:-2], h // window, window, w // window, window)


def block_dct(x: Tensor, window: int) -> Tensor:
    """Orthonormal 2-D DCT-II of each ``window × window`` block of float ``[..., H, W]``; same shape."""
    d = dct_matrix(window, x.dtype).to(x.device)
    return torch.einsum("ki,...aibj,lj->...akbl", d, _blocks(x, window), d).reshape(x.shape)


def block_idct(x: Tensor, window: int) -> Tensor:
    """Inverse of ``block_dct``."""
    d = dct_matrix(window, x.dtype).to(x.device)
    return torch.einsum("ki,...akbl,lj->...aibj", d, _blocks(x, window), d).reshape(x.shape)


def block_window(size: int, most: int) -> int:
    """The largest divisor of ``size`` that is at most ``most``: the DCT block side for a ``size``-pixel image."""
    return max(d for d in range(1, min(size, most) + 1) if size % d == 0)


def scale_position(position: int, window: int) -> int:
    """A coefficient index given for a 32-wide window, moved to a ``window``-wide one (the same relative frequency).

    ``round((p + 1) · window / 32) − 1`` clamped to ``[0, window − 1]``: 31 (the highest) stays the highest, 15 the middle.
    """
    return min(window - 1, max(0, round((position + 1) * window / REFERENCE_WINDOW) - 1))


def coefficient_mask(size: int, window: int, positions: tuple[tuple[int, int], ...]) -> Tensor:
    """bool ``[size, size]``: the coefficients at ``positions`` (within a block) of every block."""
    mask = torch.zeros(size // window, window, size // window, window, dtype=torch.bool)
    for row, col in positions:
        mask[:, row, :, col] = True
    return mask.reshape(size, size)


def spectral_bump(
    channels: int, size: int, window: int, perturbed: tuple[int, ...], positions: tuple[tuple[int, int], ...], magnitude: float
) -> Tensor:
    """Block-DCT coefficients float64 ``[channels, size, size]``.

    ``magnitude`` at ``positions`` of every block of the ``perturbed`` channels, 0 elsewhere.
    """
    bump = torch.zeros(channels, size, size, dtype=torch.float64)
    mask = coefficient_mask(size, window, positions)
    for c in perturbed:
        bump[c][mask] = magnitude
    return bump


def spectral_pattern(
    channels: int, size: int, perturbed: tuple[int, ...], positions: tuple[tuple[int, int], ...], magnitude: float, window: int
) -> Tensor:
    """The trigger in the colour space, before the inverse colour transform: float64 ``[1, channels, size, size]``."""
    return block_idct(spectral_bump(channels, size, window, perturbed, positions, magnitude), window)[None]


def frequency_pattern(
    channels: int,
    size: int,
    space: ColorSpace,
    perturbed: tuple[int, ...],
    positions: tuple[tuple[int, int], ...],
    magnitude: float,
    window: int,
) -> Tensor:
    """The additive image-domain pattern float64 ``[1, channels, size, size]`` (0–255 units) of the trigger.

    For 3 channels the bump lives in ``space`` (channels ``perturbed`` of it) and is mapped
    back by the inverse colour matrix (the offset cancels); for 1 channel it is added to
    the single channel (``perturbed`` must be ``(0,)``).
    """
    delta = spectral_pattern(channels, size, perturbed, positions, magnitude, window)
    if channels == 3:
        matrix, _ = color_transform(space)
        delta = mix_channels(delta, torch.linalg.inv(matrix))
    return delta


def add_in_frequency(
    x: Tensor,
    space: ColorSpace,
    perturbed: tuple[int, ...],
    positions: tuple[tuple[int, int], ...],
    magnitude: float,
    window: int,
) -> Tensor:
    """The literal pipeline on float ``[N, C, H, W]`` (0–255): to ``space`` (3 channels), block DCT, add, inverse, back.

    Not clamped or rounded. 1-channel images skip the colour conversion.
    """
    colour = x.shape[1] == 3
    y = rgb_to(x, space) if colour else x
    coefficients = block_dct(y, window)
    bump = spectral_bump(x.shape[1], x.shape[-1], window, perturbed, positions, magnitude)
    y = block_idct(coefficients + bump.to(x.device, x.dtype), window)
    return rgb_from(y, space) if colour else y


def diagonal_positions(positions: tuple[int, ...], window: int) -> tuple[tuple[int, int], ...]:
    """Coefficients ``(p, p)`` for each ``p`` of ``positions`` (given for a 32-wide window), scaled to ``window``."""
    return tuple((scale_position(p, window),) * 2 for p in positions)


def check_spectral_params(positions: tuple[int, ...], channels: tuple[int, ...]) -> None:
    """Rules on ``positions`` and ``channels`` shared by the frequency attacks' parameters (``ParamError`` naming the field)."""
    if not positions or len(set(positions)) != len(positions):
        raise ParamError("positions", f"positions must be distinct and not empty, got {positions}")
    if any(not 0 <= p < REFERENCE_WINDOW for p in positions):
        raise ParamError("positions", f"positions are coefficient indices of a 32-wide window, each in [0, 31], got {positions}")
    if not channels or len(set(channels)) != len(channels) or any(c not in (0, 1, 2) for c in channels):
        raise ParamError("channels", f"channels must be distinct indices in {{0, 1, 2}} (0 is luma), not empty, got {channels}")


def add_pattern(x: Tensor, pattern: Tensor) -> Tensor:
    """uint8 ``x`` ``[N, C, H, W]`` plus a float pattern ``[1, C, H, W]`` (0–255 units), rounded and clamped to uint8."""
    return (x.float() + pattern.to(x.device, torch.float32)).round_().clamp_(0, 255).to(torch.uint8)
