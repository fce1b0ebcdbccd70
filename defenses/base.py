"""The interface every defense implements, and the fine-tuning settings several share."""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from dataclasses import dataclass, field, fields
from typing import Annotated, ClassVar, Literal

import torch
from torch import nn

from bench.core.data import DatasetSpec, ImageSet
from bench.core.params import BackdoorBench, NoParams, Range
from bench.core.train import TrainConfig

DataNeed = Literal["none", "clean"]


@dataclass(frozen=True)
class DefenseContext:
    """What a defense may use besides the model and its clean data."""

    spec: DatasetSpec
    generator: torch.Generator
    device: torch.device


@dataclass
class DefenseOutput:
    """The purified model, optional detection output, and the loss of each training epoch."""

    model: nn.Module
    detection: dict[str, float] | None = None
    epoch_losses: list[float] = field(default_factory=list)


_FT = "config/defense/ft/config.yaml"


@dataclass(frozen=True)
class FineTuneParams(TrainConfig):
    """Fine-tuning settings; defaults are BackdoorBench's for CIFAR-10 (100 epochs, batch 256, lr 0.01, cosine)."""

    smoke = {"epochs": 2, "batch_size": 8}

    epochs: Annotated[int, Range(">= 1"), BackdoorBench(_FT)] = 100
    """passes over the clean data"""
    batch_size: Annotated[int, Range(">= 1"), BackdoorBench(_FT)] = 256
    """images per step"""
    lr: Annotated[float, Range("> 0"), BackdoorBench(_FT)] = 0.01
    """peak learning rate"""
    momentum: Annotated[float, Range(">= 0"), BackdoorBench(_FT)] = 0.9
    """SGD momentum"""
    weight_decay: Annotated[float, Range(">= 0"), BackdoorBench(_FT)] = 5e-4
    """SGD weight decay (L2)"""
    schedule: Annotated[Literal["cosine", "constant"], BackdoorBench(f"{_FT}: CosineAnnealingLR, T_max 100")] = "cosine"
    """learning-rate schedule, stepped once per epoch"""

    def train_config(self) -> TrainConfig:
        """The shared loop's settings: the ``TrainConfig`` fields of these parameters."""
        return TrainConfig(**{f.name: getattr(self, f.name) for f in fields(TrainConfig)})


class Defense(ABC):
    """A backdoor defense: ``(model, clean subset, params, generator) -> purified model``.

    ``data`` declares what the defense needs: ``"clean"`` (a clean subset of the
    training set) or ``"none"`` (data-free). ``run`` never changes the model it is given.
    """

    Params: ClassVar[type] = NoParams
    data: ClassVar[DataNeed] = "clean"

    def __init__(self, params: object) -> None:
        if not isinstance(params, self.Params):
            raise TypeError(f"{type(self).__name__} takes {self.Params.__name__}, got {type(params).__name__}")
        self.params = params

    def run(self, model: nn.Module, clean: ImageSet, ctx: DefenseContext) -> DefenseOutput:
        """Purify a copy of ``model`` (on ``ctx.device``) with ``clean`` (uint8 images on the same device)."""
        return self.purify(copy.deepcopy(model), clean, ctx)

    @abstractmethod
    def purify(self, model: nn.Module, clean: ImageSet, ctx: DefenseContext) -> DefenseOutput:
        """Purify ``model`` in place (it is already a private copy) and return it."""
