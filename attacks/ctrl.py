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
- Rounded to nearest; BackdoorBench truncates with ``.to(torch.uint8)`` before its clamp,
  which also wraps values outside [0, 255] around.
- The inverse colour transform is the exact inverse of the forward matrix (Kornia's
  ``yuv_to_rgb`` uses rounded coefficients).
- CTRL targets self-supervised learning; BackdoorBench and this benchmark train a
  supervised classifier on the poisoned set. There the trigger, seen only on target-class
  images, is learned as a roughly fixed boost of the target logit: it reaches a high ASR
  only when the whole target class is poisoned (docs/attacks.md).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from attacks._frequency import add_pattern, check_spectral_params, diagonal_positions, frequency_pattern
from attacks.base import Attack
from bench.imageset import DatasetSpec
from bench.registry import ATTACKS


@dataclass(frozen=True)
class CtrlParams:
    magnitude: float = 100.0  # added to each chosen DCT coefficient, in 0–255 units
    positions: tuple[int, ...] = (15, 31)  # diagonal coefficients (p, p) of a 32-wide window, each in [0, 31]
    channels: tuple[int, ...] = (1, 2)  # YUV channels perturbed (0 Y, 1 U, 2 V); ignored for grayscale

    def __post_init__(self) -> None:
        object.__setattr__(self, "positions", tuple(self.positions))
        object.__setattr__(self, "channels", tuple(self.channels))
        check_spectral_params(self.magnitude, self.positions, self.channels)


@ATTACKS.register("ctrl")
class Ctrl(Attack):
    Params = CtrlParams
    clean_label = True
    label_modes = ("all2one",)

    def __init__(self, params: CtrlParams, spec: DatasetSpec) -> None:
        super().__init__(params, spec)
        self.window = spec.size  # one DCT window over the whole image, as BackdoorBench
        channels = params.channels if spec.channels == 3 else (0,)
        positions = diagonal_positions(params.positions, self.window)
        pattern = frequency_pattern(spec.channels, spec.size, "yuv", channels, positions, params.magnitude, self.window)
        self.pattern = pattern.float()  # [1, C, H, W], 0–255 units

    def apply(self, x: Tensor) -> Tensor:
        return add_pattern(x, self.pattern)
