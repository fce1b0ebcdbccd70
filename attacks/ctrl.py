"""CTRL (Li et al., ICCV 2023, "An Embarrassingly Simple Backdoor Attack on Self-supervised Learning").

The trigger lives in the frequency domain: RGB (0–255) → YUV, a 2-D orthonormal DCT of
the whole image (one window the size of the image), ``magnitude`` added to the
coefficients ``(p, p)`` for each ``p`` of ``positions`` in the chroma channels
``channels`` (1 = U, 2 = V), inverse DCT, YUV → RGB, rounded and clamped to uint8. Every
step is linear, so the trigger is ``clamp(round(x + P))`` with a fixed pattern ``P``
(``attacks._frequency``; its tests check ``P`` against the literal pipeline).

Clean-label, as BackdoorBench's ``attack/ctrl.py`` (``clean_label=True`` when it draws
the poison index) and the paper (a self-supervised learner sees no labels; the poisoned
samples are drawn from the target class): the poisoned samples keep their labels, so
only all2one applies.

BackdoorBench defaults (``config/attack/ctrl/default.yaml``, ``utils/bd_img_transform/ctrl.py``):
pratio 0.05 (here the grid's rho decides), YUV on, trigger channels [1, 2], positions
[15, 31] → (15, 15) and (31, 31), window = the image side, magnitude 100 (hard-coded;
the official repository's README uses 100 on CIFAR-10 too).

Deviations:

- Positions are given for a 32-wide window and scaled to the image side
  (``round((p + 1) · side / 32) − 1``: (7, 7) and (15, 15) at 16×16, (31, 31) and
  (63, 63) at 64×64), so "mid" and "highest" frequency keep their meaning; BackdoorBench
  keeps 15 and 31 at every side.
- Grayscale (1 channel): there is no chroma, so the coefficients are added to the single
  (luma) channel and ``channels`` is ignored.
- ``arithmetic="exact"`` (the default): the inverse colour transform is the exact inverse
  of the forward matrix, and the result is rounded to nearest and clamped to [0, 255].
  BackdoorBench's code does neither: Kornia's ``yuv_to_rgb`` uses rounded coefficients
  (its round trip shifts a pixel by up to 0.35 of a level), and ``.to(torch.uint8)``
  truncates toward zero and wraps values outside [0, 255] around (−3 → 253, 256.7 → 0)
  before the clamp, which then has nothing to clamp. ``arithmetic="backdoorbench"``
  reproduces both, to compare with its numbers: every pixel the trigger pushes past
  black or white flips to the other extreme.
- CTRL targets self-supervised learning; BackdoorBench and this benchmark train a
  supervised classifier on the poisoned set. There the trigger, seen only on target-class
  images, is learned as a roughly fixed boost of the target logit: it reaches a high ASR
  only when the whole target class is poisoned (docs/attacks.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

import torch
from torch import Tensor

from attacks._frequency import (
    add_pattern,
    check_spectral_params,
    color_transform,
    diagonal_positions,
    frequency_pattern,
    mix_channels,
    spectral_pattern,
)
from attacks.base import CleanLabelAttack
from bench.core.data import DatasetSpec
from bench.core.params import BackdoorBench, BenchOwn, Params, Range
from bench.core.registry import ATTACKS


Arithmetic = Literal["exact", "backdoorbench"]

# Kornia's yuv_to_rgb (what BackdoorBench inverts with): rows R, G, B; columns Y, U, V
KORNIA_YUV_TO_RGB = ((1.0, 0.0, 1.14), (1.0, -0.396, -0.581), (1.0, 2.029, 0.0))


def truncate_to_uint8(x: Tensor) -> Tensor:
    """float ``x`` (0–255 units) → uint8 as ``.to(torch.uint8)`` on CPU: toward zero, then modulo 256 (−3.5 → 253)."""
    return torch.trunc(x).to(torch.int64).remainder_(256).to(torch.uint8)


def backdoorbench_trigger(
    spec: DatasetSpec, channels: tuple[int, ...], positions: tuple[tuple[int, int], ...], magnitude: float
) -> tuple[Tensor, Tensor | None]:
    """BackdoorBench's trigger as ``truncate_to_uint8(round_trip · x + pattern)``, both float64.

    ``pattern`` ``[1, C, H, W]`` is the spectral bump through Kornia's inverse; ``round_trip``
    ``[3, 3]`` is Kornia's YUV → RGB after the exact RGB → YUV (None for grayscale: no colour step).
    """
    pattern = spectral_pattern(spec.channels, spec.size, channels, positions, magnitude, spec.size)
    if spec.channels != 3:
        return pattern, None
    inverse = torch.tensor(KORNIA_YUV_TO_RGB, dtype=torch.float64)
    return mix_channels(pattern, inverse), inverse @ color_transform("yuv")[0]


_CTRL = "config/attack/ctrl/default.yaml"


@dataclass(frozen=True)
class CtrlParams(Params):
    magnitude: Annotated[float, Range("> 0"), BackdoorBench("utils/bd_img_transform/ctrl.py (hard-coded)")] = 100.0
    """added to each chosen DCT coefficient, in 0–255 units"""
    positions: Annotated[tuple[int, ...], BackdoorBench(f"{_CTRL}: pos_list")] = (15, 31)
    """diagonal coefficients (p, p) of a 32-wide window, each in [0, 31]"""
    channels: Annotated[tuple[int, ...], BackdoorBench(f"{_CTRL}: trigger_channels")] = (1, 2)
    """YUV channels perturbed (0 Y, 1 U, 2 V); ignored for grayscale"""
    arithmetic: Annotated[Arithmetic, BenchOwn('exact inverse, rounded and clamped; "backdoorbench" is its own')] = "exact"
    """"exact" or "backdoorbench" (its rounded inverse, truncation and wrap-around)"""

    def __post_init__(self) -> None:
        object.__setattr__(self, "positions", tuple(self.positions))
        object.__setattr__(self, "channels", tuple(self.channels))
        super().__post_init__()

    def check(self) -> None:
        check_spectral_params(self.positions, self.channels)


@ATTACKS.register("ctrl")
class Ctrl(CleanLabelAttack):
    Params = CtrlParams

    def __init__(self, params: CtrlParams, spec: DatasetSpec) -> None:
        super().__init__(params, spec)
        self.window = spec.size  # one DCT window over the whole image, as BackdoorBench
        channels = params.channels if spec.channels == 3 else (0,)
        positions = diagonal_positions(params.positions, self.window)
        self.round_trip: Tensor | None = None  # "backdoorbench" only: Kornia's RGB → YUV → RGB, float64 [3, 3]
        if params.arithmetic == "exact":
            pattern = frequency_pattern(spec.channels, spec.size, "yuv", channels, positions, params.magnitude, self.window)
            self.pattern = pattern.float()  # [1, C, H, W], 0–255 units
        else:
            self.pattern, self.round_trip = backdoorbench_trigger(spec, channels, positions, params.magnitude)

    def apply(self, x: Tensor) -> Tensor:
        if self.params.arithmetic == "exact":
            return add_pattern(x, self.pattern)
        y = x.double() if self.round_trip is None else mix_channels(x.double(), self.round_trip)
        return truncate_to_uint8(y + self.pattern.to(x.device))
