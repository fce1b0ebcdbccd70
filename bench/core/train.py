"""The shared training loop: in-memory tensors, device-side augmentation, declared hooks, one update rule.

Every stage that trains (the attack stage, the fine-tuning defenses) goes through
``train``. Per batch, in this order:

1. the learning rate is set to ``lr(step)`` (``step`` counts batches from 0 over the run);
2. the batch is drawn (a permutation per epoch) and augmented (the dataset's crop and flip);
3. ``hooks.poison_batch(x, y)``: the batch an attack poisons (default: unchanged);
4. ``hooks.post_trigger(x)``: a transform of the poisoned batch (default: none);
5. ``update(x, y, loss)``: one optimiser-level step (plain SGD, SAM's two passes, ...) on
   ``loss(x, y) = hooks.loss(model, x, y)`` (default: cross-entropy);
6. ``hooks.after_step(step)``.

``hooks.on_epoch(epoch)`` runs before each epoch's first batch. What differs between
stages is the ``TrainingHooks`` (what a batch and its loss are) and the ``Update``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Callable, Literal, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bench.core.augment import augment
from bench.core.data import Augmentation, ImageSet, to_float
from bench.core.device import autocast
from bench.core.learning_rate import LRSchedule, constant, cosine_per_epoch, per_epoch
from bench.core.params import BackdoorBench, BenchOwn, Params, Range

BatchLoss = Callable[[Tensor, Tensor], Tensor]  # (x float [B, C, H, W] in [0, 1], y int64 [B]) → scalar loss


_PROTOTYPE = "config/attack/prototype/cifar10.yaml"


@dataclass(frozen=True)
class TrainConfig(Params):
    """Optimisation settings: SGD with momentum and weight decay. ``lr`` is the peak rate;
    ``schedule`` decays it once per epoch (cosine, to 0 over ``epochs``) or keeps it."""

    smoke = {"epochs": 2, "batch_size": 8}

    epochs: Annotated[int, Range(">= 1"), BackdoorBench(_PROTOTYPE)] = 100
    """passes over the training set"""
    batch_size: Annotated[int, Range(">= 1"), BackdoorBench(_PROTOTYPE)] = 128
    """images per step"""
    lr: Annotated[float, Range("> 0"), BackdoorBench(_PROTOTYPE)] = 0.01
    """peak learning rate"""
    momentum: Annotated[float, Range(">= 0"), BackdoorBench(_PROTOTYPE)] = 0.9
    """SGD momentum"""
    weight_decay: Annotated[float, Range(">= 0"), BackdoorBench(_PROTOTYPE)] = 5e-4
    """SGD weight decay (L2)"""
    schedule: Annotated[Literal["cosine", "constant"], BenchOwn("decays over the run; BackdoorBench's T_max: 100")] = "cosine"
    """learning-rate schedule, stepped once per epoch"""

    def lr_schedule(self, steps_per_epoch: int) -> LRSchedule:
        """``lr`` for every step (``constant``), or a cosine decay over ``epochs``, stepped once per epoch."""
        if self.schedule == "cosine":
            return per_epoch(cosine_per_epoch(self.lr, self.epochs), steps_per_epoch)
        return constant(self.lr)


TRAINING_FIELDS: tuple[str, ...] = ("epochs", "batch_size", "lr", "momentum", "weight_decay", "schedule")


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""

    def __init__(self, epoch: int, losses: list[float]) -> None:
        super().__init__(f"loss is not finite at epoch {epoch}")
        self.epoch, self.losses = epoch, losses


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Batches per epoch of ``train`` on ``n`` samples (the last batch may be short; at least 1)."""
    return max(1, math.ceil(n / batch_size))


def epochs_covering(steps: int, n: int, batch_size: int) -> int:
    """The fewest whole epochs over ``n`` samples that give at least ``steps`` batches."""
    if n < 1:
        raise ValueError("training needs at least one sample, got an empty set")
    return math.ceil(steps / steps_per_epoch(n, batch_size))


def cross_entropy(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """The plain loss: cross-entropy of ``model(x)`` against ``y``, under the device's autocast."""
    with autocast(x.device):
        return F.cross_entropy(model(x), y)


class TrainingHooks:
    """The loop's extension points. Every default leaves the loop plain: subclass and override what differs."""

    def on_epoch(self, epoch: int) -> None:
        """Before the first batch of ``epoch`` (from 0)."""

    def poison_batch(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """The batch the update trains on, from the augmented clean batch (float ``[B, C, H, W]`` in [0, 1], labels ``[B]``)."""
        return x, y

    def post_trigger(self, x: Tensor) -> Tensor:
        """A transform of the (poisoned) batch before the update, e.g. augmentation after the trigger."""
        return x

    def loss(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        """The scalar training loss of ``model`` on a batch, with its autograd graph."""
        return cross_entropy(model, x, y)

    def after_step(self, step: int) -> None:
        """After the update of batch ``step`` (from 0 over the run)."""


PLAIN = TrainingHooks()


class Update(Protocol):
    """One optimisation step on a batch; returns the batch loss (a detached scalar).

    ``loss`` is the loop's loss (``hooks.loss`` bound to the model); an update with an
    objective of its own (Fisher terms, natural gradients, ...) documents that it does
    not use it. The loop sets the learning rate of ``optimizer``'s parameter groups.
    """

    optimizer: torch.optim.Optimizer

    def __call__(self, x: Tensor, y: Tensor, loss: BatchLoss) -> Tensor: ...


def sgd(model: nn.Module, cfg: TrainConfig, params=None) -> torch.optim.SGD:
    return torch.optim.SGD(
        model.parameters() if params is None else params,
        lr=cfg.lr,
        momentum=cfg.momentum,
        weight_decay=cfg.weight_decay,
    )


class GradientStep:
    """Loss, backward, optimiser step."""

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        self.optimizer = optimizer

    def __call__(self, x: Tensor, y: Tensor, loss: BatchLoss) -> Tensor:
        value = loss(x, y)
        self.optimizer.zero_grad(set_to_none=True)
        value.backward()
        self.optimizer.step()
        return value.detach()


def train_step(model: nn.Module, x: Tensor, y: Tensor, update: Update, hooks: TrainingHooks, step: int) -> Tensor:
    """Steps 3–6 of the loop for one augmented batch (``x`` float in [0, 1], ``y`` labels); returns its loss."""

    def loss(bx: Tensor, by: Tensor) -> Tensor:
        return hooks.loss(model, bx, by)

    x, y = hooks.poison_batch(x, y)
    value = update(hooks.post_trigger(x), y, loss)
    hooks.after_step(step)
    return value


def train(
    model: nn.Module,
    data: ImageSet,
    cfg: TrainConfig,
    aug: Augmentation,
    gen: torch.Generator,
    update: Update | None = None,
    hooks: TrainingHooks = PLAIN,
    lr: LRSchedule | None = None,
) -> list[float]:
    """Train ``model`` in place on ``data`` (both on one device); return the mean loss of each epoch.

    ``cfg.epochs`` epochs of batches of ``cfg.batch_size`` drawn without replacement from a
    permutation per epoch (``gen``). The learning rate of step ``t`` is ``lr(t)``, by default
    ``cfg.lr_schedule``. The update defaults to SGD with ``cfg``'s settings. Raises
    ``TrainingDiverged`` when an epoch's loss is not finite.
    """
    update = update or GradientStep(sgd(model, cfg))
    lr = lr or cfg.lr_schedule(steps_per_epoch(len(data), cfg.batch_size))
    model.train()
    device = data.x.device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        # Dropout and stochastic depth draw from the global generators: seed them from ``gen``
        # inside this scope only, so training is reproducible and nothing global changes.
        seed = int(torch.randint(0, 2**62, (1,), generator=gen))
        torch.default_generator.manual_seed(seed)
        if device.type == "cuda":
            torch.cuda.default_generators[device.index or 0].manual_seed(seed)
        return _epochs(model, data, cfg, aug, gen, update, hooks, lr)


def _epochs(
    model: nn.Module,
    data: ImageSet,
    cfg: TrainConfig,
    aug: Augmentation,
    gen: torch.Generator,
    update: Update,
    hooks: TrainingHooks,
    lr: LRSchedule,
) -> list[float]:
    """The epochs of ``train``; returns each epoch's mean loss."""
    n, step, losses = len(data), 0, []
    for epoch in range(cfg.epochs):
        hooks.on_epoch(epoch)
        order = torch.randperm(n, generator=gen).to(data.x.device)
        total = torch.zeros((), device=data.x.device)
        for start in range(0, n, cfg.batch_size):
            for group in update.optimizer.param_groups:
                group["lr"] = lr(step)
            idx = order[start : start + cfg.batch_size]
            x = augment(to_float(data.x[idx]), aug, gen)
            total += train_step(model, x, data.y[idx], update, hooks, step) * len(idx)
            step += 1
        epoch_loss = total.item() / n
        losses.append(epoch_loss)
        if not math.isfinite(epoch_loss):
            raise TrainingDiverged(epoch, losses)
    return losses
