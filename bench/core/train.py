"""The shared training loop: in-memory tensors, device-side augmentation, one update rule.

Every stage that trains (the attack stage, fine-tuning defenses) goes through
``train``; what differs between them is the ``Update`` (plain SGD step, SAM's two
passes, ...) and the loss.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Literal, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bench.core.augment import augment
from bench.core.device import autocast
from bench.core.data import Augmentation, ImageSet

LossFn = Callable[[Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings. ``lr`` is the peak rate; ``schedule`` decays it once per epoch."""

    epochs: int = 100
    batch_size: int = 128
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: Literal["cosine", "constant"] = "cosine"

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"epochs and batch_size must be >= 1, got {self.epochs}, {self.batch_size}")
        if self.lr <= 0 or self.momentum < 0 or self.weight_decay < 0:
            raise ValueError("lr must be > 0; momentum and weight_decay >= 0")


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""

    def __init__(self, epoch: int, losses: list[float]) -> None:
        super().__init__(f"loss is not finite at epoch {epoch}")
        self.epoch, self.losses = epoch, losses


class Update(Protocol):
    """One optimisation step on a batch; returns the batch loss (a detached scalar)."""

    optimizer: torch.optim.Optimizer

    def __call__(self, x: Tensor, y: Tensor) -> Tensor: ...


def sgd(model: nn.Module, cfg: TrainConfig, params=None) -> torch.optim.SGD:
    return torch.optim.SGD(
        model.parameters() if params is None else params,
        lr=cfg.lr,
        momentum=cfg.momentum,
        weight_decay=cfg.weight_decay,
    )


class GradientStep:
    """Forward, loss, backward, optimiser step."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, loss_fn: LossFn = F.cross_entropy) -> None:
        self.model, self.optimizer, self.loss_fn = model, optimizer, loss_fn

    def __call__(self, x: Tensor, y: Tensor) -> Tensor:
        with autocast(x.device):
            loss = self.loss_fn(self.model(x), y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.detach()


def _scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig) -> torch.optim.lr_scheduler.LRScheduler:
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)


def train(
    model: nn.Module,
    data: ImageSet,
    cfg: TrainConfig,
    aug: Augmentation,
    gen: torch.Generator,
    update: Update | None = None,
) -> list[float]:
    """Train ``model`` in place on ``data`` (both on one device); return the mean loss of each epoch.

    Batches are drawn without replacement from a permutation per epoch; the learning
    rate follows ``cfg.schedule`` over ``cfg.epochs`` epochs, stepped once per epoch.
    Raises ``TrainingDiverged`` when a batch loss is not finite.
    """
    update = update or GradientStep(model, sgd(model, cfg))
    scheduler = _scheduler(update.optimizer, cfg)
    model.train()
    losses: list[float] = []
    device = data.x.device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        # Dropout and stochastic depth draw from the global generators: seed them from ``gen``
        # inside this scope only, so training is reproducible and nothing global changes.
        seed = int(torch.randint(0, 2**62, (1,), generator=gen))
        torch.default_generator.manual_seed(seed)
        if device.type == "cuda":
            torch.cuda.default_generators[device.index or 0].manual_seed(seed)
        _epochs(model, data, cfg, aug, gen, update, scheduler, losses)
    return losses


def _epochs(
    model: nn.Module,
    data: ImageSet,
    cfg: TrainConfig,
    aug: Augmentation,
    gen: torch.Generator,
    update: Update,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    losses: list[float],
) -> None:
    """The epochs of ``train``; appends each epoch's mean loss to ``losses``."""
    n = len(data)
    for epoch in range(cfg.epochs):
        order = torch.randperm(n, generator=gen).to(data.x.device)
        total = torch.zeros((), device=data.x.device)
        for start in range(0, n, cfg.batch_size):
            idx = order[start : start + cfg.batch_size]
            x = augment(data.x[idx].float().div_(255), aug, gen)
            total += update(x, data.y[idx]) * len(idx)
        epoch_loss = total.item() / n
        losses.append(epoch_loss)
        if not math.isfinite(epoch_loss):
            raise TrainingDiverged(epoch, losses)
        scheduler.step()
