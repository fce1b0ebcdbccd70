"""FT-SAM (Zhu et al., ICCV 2023): fine-tuning with adaptive sharpness-aware minimisation.

Each step minimises the clean loss at the worst point of a ball around the weights:
g = ∇L(θ); ε = ρ·|θ|²⊙g / ‖|θ|⊙g‖₂ (adaptive SAM, norm over all parameters);
g' = ∇L(θ + ε) with BatchNorm running statistics frozen; restore θ; SGD step with g'.
Loss: cross-entropy with label smoothing 0.1. Defaults follow BackdoorBench's CIFAR-10
config (ρ = 2, 100 epochs, batch 256, SGD lr 0.01, momentum 0.9, wd 5e-4, cosine).

Deviation from the public code: BackdoorBench steps its cosine schedule after every
batch with a period of 100 steps, so with small clean sets the learning rate restarts
every few epochs. Here the schedule decays once over the whole run, stepped per epoch,
as the paper's "cosine schedule over 100 epochs" intends.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bench.core.device import autocast
from bench.core.data import ImageSet
from bench.core.params import BackdoorBench, BenchOwn, Range
from bench.core.registry import DEFENSES
from bench.core.train import TRAINING_FIELDS, BatchLoss, TrainingHooks, sgd, train
from defenses.base import Defense, DefenseContext, DefenseOutput, FineTuneParams


_SAM = "config/defense/ft-sam/cifar10.yaml"


@dataclass(frozen=True)
class FTSAMParams(FineTuneParams):
    sources = {
        **dict.fromkeys(TRAINING_FIELDS, BackdoorBench(_SAM)),
        "schedule": BenchOwn("one decay over the run, the paper's; BackdoorBench steps CosineAnnealingLR(T_max=100) per batch"),
    }

    rho: Annotated[float, Range("> 0"), BackdoorBench(f"{_SAM}: rho_max = rho_min")] = 2.0
    """radius of the (adaptive) perturbation ball"""
    adaptive: Annotated[bool, BackdoorBench("defense/ft-sam.py: --adaptive is store_false, so on")] = True
    """ASAM scaling by |θ|; False gives plain SAM"""
    label_smoothing: Annotated[float, Range("[0, 1)"), BackdoorBench(f"{_SAM}: its smooth_crossentropy")] = 0.1
    """label-smoothing weight of the cross-entropy"""


def _set_bn_momentum(model: nn.Module, momentum: dict[nn.Module, float | None] | float) -> dict[nn.Module, float | None]:
    """Set every BatchNorm's momentum (one value, or per module); return the previous values."""
    previous = {}
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            previous[module] = module.momentum
            module.momentum = momentum[module] if isinstance(momentum, dict) else momentum
    return previous


class LabelSmoothing(TrainingHooks):
    """The loop's loss is cross-entropy with label smoothing ``smoothing``."""

    def __init__(self, smoothing: float) -> None:
        self.smoothing = smoothing

    def loss(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        with autocast(x.device):
            return F.cross_entropy(model(x), y, label_smoothing=self.smoothing)


class SAMStep:
    """One sharpness-aware update (two forward/backward passes of the loop's loss) with an SGD base optimiser."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, rho: float, adaptive: bool) -> None:
        self.model, self.optimizer, self.rho, self.adaptive = model, optimizer, rho, adaptive
        self.params = [p for p in model.parameters() if p.requires_grad]

    def _loss_and_grad(self, x: Tensor, y: Tensor, loss: BatchLoss) -> Tensor:
        self.optimizer.zero_grad(set_to_none=True)
        value = loss(x, y)
        value.backward()
        return value.detach()

    @torch.no_grad()
    def _perturbation(self) -> list[Tensor | None]:
        scaled = [(p.abs() if self.adaptive else 1.0) * p.grad for p in self.params if p.grad is not None]
        norm = torch.norm(torch.stack([s.norm(2) for s in scaled]), 2)
        scale = self.rho / (norm + 1e-12)
        return [
            None if p.grad is None else (p.pow(2) if self.adaptive else 1.0) * p.grad * scale for p in self.params
        ]

    def __call__(self, x: Tensor, y: Tensor, loss: BatchLoss) -> Tensor:
        value = self._loss_and_grad(x, y, loss)
        eps = self._perturbation()
        with torch.no_grad():
            for p, e in zip(self.params, eps):
                if e is not None:
                    p.add_(e)
        saved = _set_bn_momentum(self.model, 0.0)
        self._loss_and_grad(x, y, loss)
        _set_bn_momentum(self.model, saved)
        with torch.no_grad():
            for p, e in zip(self.params, eps):
                if e is not None:
                    p.sub_(e)
        self.optimizer.step()
        return value


@DEFENSES.register("ftsam")
class FTSAM(Defense):
    Params = FTSAMParams

    def purify(self, model: nn.Module, clean: ImageSet, ctx: DefenseContext) -> DefenseOutput:
        cfg = self.params.train_config()
        step = SAMStep(model, sgd(model, cfg), self.params.rho, self.params.adaptive)
        hooks = LabelSmoothing(self.params.label_smoothing)
        losses = train(model, clean, cfg, ctx.spec.augmentation, ctx.generator, update=step, hooks=hooks)
        return DefenseOutput(model=model, epoch_losses=losses)
