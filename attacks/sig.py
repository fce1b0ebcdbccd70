"""SIG (Barni, Kallas & Tondi, ICIP 2019): a horizontal sinusoidal signal, clean-label.

The trigger adds ``v(i, j) = delta · sin(2π · j · f / W)`` to every pixel ``(i, j)`` of
every channel (``j`` the column, ``W`` the image width): vertical stripes, ``f`` periods
across the image; the result is rounded and clamped to [0, 255]. Clean-label: the
poisoned training samples are drawn from the target class and keep their labels
(``clean_label``), so only all2one applies.

BackdoorBench defaults (``config/attack/sig/default.yaml``,
``utils/bd_img_transform/sig.py``): delta 40, f 6, the same signal at training and test
time, clean-label, pratio 0.1 of the whole training set drawn from the target class.
Deviation: rounded to nearest; BackdoorBench truncates (``np.uint8`` of the clipped
float). The paper lets the test-time amplitude differ from the poisoning one;
BackdoorBench, and this attack, use one ``delta`` for both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated

import torch
from torch import Tensor

from attacks.base import CleanLabelAttack
from bench.core.data import DatasetSpec
from bench.core.params import BackdoorBench, Params, Range
from bench.core.registry import ATTACKS


_SIG = "config/attack/sig/default.yaml"


@dataclass(frozen=True)
class SigParams(Params):
    delta: Annotated[float, Range("(0, 255]"), BackdoorBench(f"{_SIG}: sig_delta")] = 40.0
    """amplitude of the signal, in 0–255 units"""
    f: Annotated[float, Range("> 0"), BackdoorBench(f"{_SIG}: sig_f")] = 6.0
    """periods across the image width"""


def sinusoid(width: int, delta: float, f: float) -> Tensor:
    """The signal of one row, float64 ``[width]``: ``delta · sin(2π j f / width)`` for ``j = 0 … width − 1``."""
    j = torch.arange(width, dtype=torch.float64)
    return delta * torch.sin(2 * math.pi * j * f / width)


@ATTACKS.register("sig")
class Sig(CleanLabelAttack):
    Params = SigParams

    def __init__(self, params: SigParams, spec: DatasetSpec) -> None:
        super().__init__(params, spec)
        self.signal = sinusoid(spec.size, params.delta, params.f).float().view(1, 1, 1, spec.size)  # [1, 1, 1, W]

    def apply(self, x: Tensor) -> Tensor:
        return (x.float() + self.signal.to(x.device)).round_().clamp_(0, 255).to(torch.uint8)
