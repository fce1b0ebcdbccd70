"""Poisoning rules shared by every attack: counts, indices, target labels, test sets.

Poison ratio ``rho`` is a fraction of the whole training set. Dirty-label attacks draw
the poisoned samples uniformly from all classes (target class included, as in
BackdoorBench); clean-label attacks draw them from the target class only, and a ratio
the target class cannot supply is an error.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

import torch
from torch import Tensor

from bench.core.counts import fraction_count
from bench.core.data import ImageSet

LabelMode = Literal["all2one", "all2all"]
LABEL_MODES: tuple[str, ...] = ("all2one", "all2all")


@dataclass(frozen=True)
class Target:
    """all2one: every triggered input goes to ``label``; all2all: label ``y`` goes to ``(y + 1) % K``."""

    mode: LabelMode = "all2one"
    label: int = 0


class Trigger(Protocol):
    clean_label: bool

    def apply(self, x: Tensor) -> Tensor:
        """Stamp the test-time trigger: uint8 ``[N, C, H, W]`` → uint8 ``[N, C, H, W]``."""

    def poison_inputs(self, x: Tensor, y: Tensor) -> Tensor:
        """The poisoned training images for rows ``x`` with true labels ``y``."""


class PoisonRatioError(ValueError):
    """A poison ratio that the training set cannot realise."""


def poison_count(rho: float, n: int) -> int:
    """Number of poisoned training samples: ``rho * n`` rounded half up (``fraction_count``); ``rho`` in (0, 1]."""
    if not 0.0 < rho <= 1.0:
        raise PoisonRatioError(f"poison ratio must be in (0, 1], got {rho}")
    count = fraction_count(rho, n)
    if count < 1:
        raise PoisonRatioError(f"poison ratio {rho} poisons no sample of a training set of {n}")
    return count


def target_labels(y: Tensor, target: Target, num_classes: int) -> Tensor:
    """Backdoor labels for true labels ``y`` (int64 ``[N]``)."""
    if target.mode == "all2one":
        return torch.full_like(y, target.label)
    return (y + 1) % num_classes


def draw_poison_index(y: Tensor, rho: float, target: Target, clean_label: bool, gen: torch.Generator) -> Tensor:
    """Sorted int64 indices of the training samples to poison.

    Dirty-label: ``poison_count(rho, N)`` samples drawn from all of ``y``.
    Clean-label: the same count, drawn from samples whose label is the target (all2one only).
    """
    count = poison_count(rho, len(y))
    if clean_label:
        if target.mode != "all2one":
            raise PoisonRatioError("clean-label poisoning needs an all2one target")
        pool = torch.nonzero(y.cpu() == target.label).flatten()
        if count > len(pool):
            raise PoisonRatioError(
                f"poison ratio {rho} needs {count} samples of target class {target.label}, which has {len(pool)}"
            )
    else:
        pool = torch.arange(len(y))
    chosen = pool[torch.randperm(len(pool), generator=gen)[:count]]
    return chosen.sort().values


def poison_training_set(
    train: ImageSet, trigger: Trigger, index: Tensor, target: Target, num_classes: int
) -> ImageSet:
    """A copy of ``train`` with the trigger stamped on rows ``index`` and (dirty-label) their labels changed."""
    x, y = train.x.clone(), train.y.clone()
    idx = index.to(x.device)
    x[idx] = trigger.poison_inputs(x[idx], y[idx])
    if not trigger.clean_label:
        y[idx] = target_labels(y[idx], target, num_classes)
    return ImageSet(x, y)


@dataclass(frozen=True)
class BackdoorTestSet:
    """Triggered test images ``x`` with their backdoor labels ``y_target`` and true labels ``y_true``.

    Holds only the test images whose backdoor label differs from the true label
    (for all2one: those whose true label is not the target).
    """

    x: Tensor
    y_target: Tensor
    y_true: Tensor


def backdoor_test_set(test: ImageSet, trigger: Trigger, target: Target, num_classes: int) -> BackdoorTestSet:
    y_target = target_labels(test.y, target, num_classes)
    keep = torch.nonzero(y_target != test.y).flatten()
    return BackdoorTestSet(trigger.apply(test.x[keep]), y_target[keep], test.y[keep])
