"""The interface every attack implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor

from bench.imageset import DatasetSpec
from bench.poison import LABEL_MODES


@dataclass(frozen=True)
class NoParams:
    """For methods without parameters."""


class Attack(ABC):
    """A backdoor attack: a trigger stamped on images, poisoned into the training set.

    ``Params`` is the frozen dataclass of the attack's grid parameters, with defaults.
    ``clean_label`` attacks keep the labels of the samples they poison.
    ``label_modes`` lists the target modes the attack supports.
    """

    Params: ClassVar[type] = NoParams
    clean_label: ClassVar[bool] = False
    label_modes: ClassVar[tuple[str, ...]] = LABEL_MODES

    def __init__(self, params: object, spec: DatasetSpec) -> None:
        if not isinstance(params, self.Params):
            raise TypeError(f"{type(self).__name__} takes {self.Params.__name__}, got {type(params).__name__}")
        self.params, self.spec = params, spec

    @abstractmethod
    def apply(self, x: Tensor) -> Tensor:
        """Stamp the trigger, deterministically: uint8 ``[N, C, H, W]`` → uint8 ``[N, C, H, W]``."""
