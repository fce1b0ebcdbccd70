"""No defense: the backdoored model as it is; the baseline column of every table."""

from __future__ import annotations

from torch import nn

from bench.core.data import ImageSet
from bench.core.registry import DEFENSES
from defenses.base import Defense, DefenseContext, DefenseOutput


@DEFENSES.register("none")
class NoDefense(Defense):
    data = "none"

    def purify(self, model: nn.Module, clean: ImageSet, ctx: DefenseContext) -> DefenseOutput:
        return DefenseOutput(model=model)
