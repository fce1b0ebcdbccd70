"""Learning-rate schedules as functions of the optimiser step.

The shared training loop sets the learning rate before every batch to ``schedule(step)``
(step counted from 0 over the whole run). A schedule that changes once per epoch is one
case: ``per_epoch`` holds each epoch's value for all of its steps.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

LRSchedule = Callable[[int], float]  # optimiser step (from 0) → learning rate


def constant(lr: float) -> LRSchedule:
    """``lr`` at every step."""
    return lambda step: lr


def per_epoch(values: Sequence[float], steps_per_epoch: int) -> LRSchedule:
    """``values[e]`` for every step of epoch ``e`` (``steps_per_epoch`` ≥ 1 steps each); the last value after them."""
    values = tuple(values)
    return lambda step: values[min(step // steps_per_epoch, len(values) - 1)]


def cosine_per_epoch(lr: float, epochs: int) -> list[float]:
    """The learning rate of each of ``epochs`` epochs of a cosine decay from ``lr`` towards 0 over ``epochs``.

    Epoch ``e`` runs at ``lr · (1 + cos(π e / T)) / 2`` (``T = epochs``), computed by the
    recurrence of ``torch.optim.lr_scheduler.CosineAnnealingLR`` stepped once per epoch
    (each value is the previous one times ``(1 + cos(π e / T)) / (1 + cos(π (e − 1) / T))``),
    not by the closed form: the two differ in the last bits, and runs made with the
    torch scheduler keep their numbers.
    """
    values = [lr]
    for epoch in range(1, epochs):
        ratio = (1 + math.cos(math.pi * epoch / epochs)) / (1 + math.cos(math.pi * (epoch - 1) / epochs))
        values.append(ratio * values[-1])
    return values


def cosine_per_step(lr: float, lr_min: float, total: int) -> LRSchedule:
    """Cosine decay from ``lr`` at step 0 to ``lr_min`` at step ``total − 1`` (``lr`` throughout when ``total`` ≤ 1)."""
    if total <= 1:
        return constant(lr)
    return lambda step: lr_min + (lr - lr_min) * (1 + math.cos(math.pi * step / (total - 1))) / 2
