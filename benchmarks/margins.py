"""Where a trigger wins: ASR and the trigger's boost of the target logit, per band of the clean margin.

For a backdoored test image (true class ≠ backdoor label), the *clean margin* is the
true-class logit minus the backdoor-label logit on the clean image, and the *boost* is
how much the trigger raises the backdoor-label logit; the *drop* is how much it lowers
the true-class logit. An image flips when the trigger makes the backdoor label the top
class, roughly when boost + drop exceeds the margin. A trigger that only adds a fixed
boost wins on the low-margin images and loses on the confident ones; this is how
``benchmarks/attack_check.py --margins`` shows why a clean-label attack stops short of a
full ASR.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class MarginBand:
    """One band of backdoored test images, ordered by clean margin; means over the band."""

    margin: float  # true-class minus backdoor-label logit on the clean image
    boost: float  # rise of the backdoor-label logit under the trigger
    drop: float  # fall of the true-class logit under the trigger
    asr: float  # fraction classified as the backdoor label with the trigger, in [0, 1]
    count: int


def margin_bands(clean: Tensor, triggered: Tensor, y_true: Tensor, y_target: Tensor, bands: int = 4) -> list[MarginBand]:
    """Split images into ``bands`` equal bands by clean margin (lowest first).

    ``clean`` and ``triggered`` are float ``[N, K]`` logits of the same images without and
    with the trigger; ``y_true`` and ``y_target`` int64 ``[N]``, differing everywhere.
    """
    if not len(clean) == len(triggered) == len(y_true) == len(y_target):
        raise ValueError("clean, triggered, y_true and y_target must have the same length")
    if bands < 1:
        raise ValueError(f"bands must be >= 1, got {bands}")
    rows = torch.arange(len(clean))
    margin = clean[rows, y_true] - clean[rows, y_target]
    boost = triggered[rows, y_target] - clean[rows, y_target]
    drop = clean[rows, y_true] - triggered[rows, y_true]
    flipped = (triggered.argmax(1) == y_target).float()
    return [
        MarginBand(*(float(v[band].mean()) for v in (margin, boost, drop, flipped)), len(band))
        for band in margin.argsort().chunk(bands)
    ]
