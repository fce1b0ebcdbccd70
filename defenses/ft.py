"""Vanilla fine-tuning: all weights, cross-entropy, SGD with a cosine schedule on clean data."""

from __future__ import annotations

from torch import nn

from bench.core.data import ImageSet
from bench.core.registry import DEFENSES
from bench.core.train import train
from defenses.base import Defense, DefenseContext, DefenseOutput, FineTuneParams


@DEFENSES.register("ft")
class FineTune(Defense):
    Params = FineTuneParams

    def purify(self, model: nn.Module, clean: ImageSet, ctx: DefenseContext) -> DefenseOutput:
        losses = train(model, clean, self.params.train_config(), ctx.spec.augmentation, ctx.generator)
        return DefenseOutput(model=model, epoch_losses=losses)
