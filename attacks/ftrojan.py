"""FTrojan (Wang et al., ECCV 2022, "An Invisible Black-Box Backdoor Attack Through Frequency Domain").

The trigger: RGB (0–255) → YCbCr, a 2-D orthonormal DCT of every ``window × window``
block, ``magnitude`` added to the coefficients ``(p, p)`` for each ``p`` of
``positions`` (one mid, one high frequency) of every block of the chroma channels
``channels`` (1 = Cb, 2 = Cr), inverse DCT, YCbCr → RGB, rounded and clamped to uint8.
Every step is linear, so the trigger is ``clamp(round(x + P))`` with a fixed pattern
``P`` (``attacks._frequency``; its tests check ``P`` against the literal pipeline).
Dirty-label (BackdoorBench's ``attack/ftrojann.py`` is BadNets' pipeline), all2one and
all2all.

BackdoorBench defaults (``config/attack/ftrojannn/default.yaml``,
``utils/bd_img_transform/ftrojann.py``, after the official code): YUV on (OpenCV's
``COLOR_RGB2YCrCb``, i.e. full-range YCbCr), channel_list [1, 2], magnitude 30,
window_size 32, pos_list [15, 15, 31, 31] → (15, 15) and (31, 31), pratio 0.1.

Deviations:

- The window is the largest divisor of the image side not above ``window`` (32 at
  32×32 and 64×64, 16 at 16×16, 28 at 28×28), so the blocks tile the image;
  BackdoorBench's loop leaves a partial block at a side that 32 does not divide.
  Positions are given for a 32-wide window and scaled to the actual one
  (``round((p + 1) · window / 32) − 1``: (7, 7) and (15, 15) at 16), so "mid" and
  "highest" frequency keep their meaning.
- Grayscale (1 channel): there is no chroma, so the coefficients are added to the single
  (luma, Y) channel and ``channels`` is ignored.
- No intermediate uint8 casts: BackdoorBench casts the perturbed YCrCb image to uint8
  (truncating) before converting back to RGB; here the result is rounded once, at the end.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from torch import Tensor

from attacks._frequency import add_pattern, block_window, check_spectral_params, diagonal_positions, frequency_pattern
from attacks.base import Attack
from bench.core.data import DatasetSpec
from bench.core.params import BackdoorBench, Params, Range
from bench.core.registry import ATTACKS


_FTROJAN = "config/attack/ftrojannn/default.yaml"


@dataclass(frozen=True)
class FTrojanParams(Params):
    magnitude: Annotated[float, Range("> 0"), BackdoorBench(f"{_FTROJAN}: magnitude")] = 30.0
    """added to each chosen DCT coefficient of every block, in 0–255 units"""
    window: Annotated[int, Range("[2, 1024]"), BackdoorBench(f"{_FTROJAN}: window_size")] = 32
    """largest DCT block side; the block is the largest divisor of the image side up to this"""
    positions: Annotated[tuple[int, ...], BackdoorBench(f"{_FTROJAN}: pos_list [15, 15, 31, 31]")] = (15, 31)
    """diagonal coefficients (p, p) of a 32-wide window, each in [0, 31]"""
    channels: Annotated[tuple[int, ...], BackdoorBench(f"{_FTROJAN}: channel_list")] = (1, 2)
    """YCbCr channels perturbed (0 Y, 1 Cb, 2 Cr); ignored for grayscale"""

    def __post_init__(self) -> None:
        object.__setattr__(self, "positions", tuple(self.positions))
        object.__setattr__(self, "channels", tuple(self.channels))
        super().__post_init__()

    def check(self) -> None:
        check_spectral_params(self.positions, self.channels)


@ATTACKS.register("ftrojan")
class FTrojan(Attack):
    Params = FTrojanParams

    def __init__(self, params: FTrojanParams, spec: DatasetSpec) -> None:
        super().__init__(params, spec)
        self.window = block_window(spec.size, params.window)
        channels = params.channels if spec.channels == 3 else (0,)
        positions = diagonal_positions(params.positions, self.window)
        pattern = frequency_pattern(spec.channels, spec.size, "ycbcr", channels, positions, params.magnitude, self.window)
        self.pattern = pattern.float()  # [1, C, H, W], 0–255 units

    def apply(self, x: Tensor) -> Tensor:
        return add_pattern(x, self.pattern)
