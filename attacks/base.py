"""The interface every attack implements, with its extension points.

Static attacks implement ``apply`` only. Attacks that need a learned resource (a
surrogate model, an encoder, reflection images) build it in ``prepare``; attacks that
control training (WaNet's noise mode, Input-aware, LIRA, BPP, Blind) give the shared
training loop their ``training_hooks`` (the batch they poison, the loss, what happens at
each epoch and after each step); state that the test-time trigger needs goes through
``state_dict``/``load_state_dict`` and is saved with the backdoored model.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from bench.core.data import DatasetSpec, LoadedDataset
from bench.core.params import NoParams
from bench.core.poison import LABEL_MODES, Target
from bench.core.train import PLAIN, TrainingHooks


@dataclass(frozen=True)
class AttackContext:
    """What an attack may use while it prepares and trains: the threat model and its randomness."""

    target: Target
    poison_ratio: float
    generator: torch.Generator
    device: torch.device


class Attack(ABC):
    """A backdoor attack: a trigger stamped on images, poisoned into the training set.

    ``Params`` is the frozen dataclass of the attack's grid parameters, with defaults.
    ``clean_label`` attacks keep the labels of the samples they poison.
    ``label_modes`` lists the target modes the attack supports.
    ``poisons_dataset`` is False for attacks that poison batches during training instead
    of a fixed set of training samples (their poison index is empty).
    ``monotone``: a brighter input image never gives a darker triggered pixel (so uint8
    arithmetic that wraps around would show); False for a trigger that replaces pixels
    by generated content.
    """

    Params: ClassVar[type] = NoParams
    clean_label: ClassVar[bool] = False
    label_modes: ClassVar[tuple[str, ...]] = LABEL_MODES
    poisons_dataset: ClassVar[bool] = True
    monotone: ClassVar[bool] = True

    def __init__(self, params: object, spec: DatasetSpec) -> None:
        if not isinstance(params, self.Params):
            raise TypeError(f"{type(self).__name__} takes {self.Params.__name__}, got {type(params).__name__}")
        self.params, self.spec = params, spec

    @abstractmethod
    def apply(self, x: Tensor) -> Tensor:
        """The test-time trigger, deterministic: uint8 ``[N, C, H, W]`` → uint8 ``[N, C, H, W]``."""

    def poison_inputs(self, x: Tensor, y: Tensor) -> Tensor:
        """The poisoned training images for rows ``x`` (uint8) with true labels ``y``; default ``apply(x)``."""
        return self.apply(x)

    def prepare(self, data: LoadedDataset, ctx: AttackContext) -> None:
        """Build learned resources before poisoning (default: none). Must be reproducible from ``ctx.generator``."""

    def training_hooks(self, model: nn.Module, ctx: AttackContext) -> TrainingHooks:
        """How the attack controls the training of ``model`` (default: it does not; the loop stays plain)."""
        return PLAIN

    def cross_fraction(self, rho: float) -> float:
        """Expected fraction of each training batch that the hooks turn into triggered-like rows keeping their
        labels (WaNet's noise mode, Input-aware's cross trigger, BPP's negatives); 0 for the others."""
        return 0.0

    def state_dict(self) -> dict[str, Tensor]:
        """Tensors the test-time trigger needs after training (default: none); saved with the model."""
        return {}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Restore what ``state_dict`` returned."""
        if state:
            raise ValueError(f"{type(self).__name__} keeps no state, got {sorted(state)}")


class CleanLabelAttack(Attack):
    """An attack that keeps the labels of the samples it poisons, drawn from the target class (all2one only)."""

    clean_label = True
    label_modes = ("all2one",)


class BatchPoisoningAttack(Attack):
    """An attack that poisons batches during training through its ``training_hooks`` (its poison index is empty)."""

    poisons_dataset = False
