"""Input-aware dynamic backdoor (Nguyen & Tran, NeurIPS 2020): a trigger generated per image.

Two encoder-decoders (``attacks._generators.EncoderDecoder``, BackdoorBench's
``InputAwareGenerator`` sized for the dataset): a pattern generator ``g`` and a mask
generator ``m`` (one output channel, sharpened by ``t(v) = tanh(20 v − 10) / 2 + 0.5``).
The trigger is ``x · (1 − t(m(x))) + g(x) · t(m(x))``, both networks in eval mode, so it
is deterministic; their weights and BatchNorm statistics are the state (``state_dict``).

``prepare``: the mask generator is trained alone on the clean training set for
``mask_epochs`` epochs (BackdoorBench's ``clean_train_epochs`` 25; Adam ``lr_mask``,
betas (0.5, 0.9), learning rate ×0.1 after 40% and 80% of the epochs (epochs 10 and 20 of 25),
batches of 128, the dataset's augmentation), minimising ``lambda_norm · mean(relu(t(m(x)) − mask_density))`` plus
``lambda_div`` times the diversity loss ``‖x1 − x2‖ / ‖t(m(x1)) − t(m(x2))‖`` between two
shuffles of the data; then it is frozen.

Training control (``training_hooks``, no poisoned dataset): in every augmented batch a
fraction ``rho`` of the rows gets its own trigger and the backdoor label; a fraction
``cross_ratio · rho`` gets the trigger generated from another image of the batch and keeps
its label (cross-trigger mode, which forces the trigger to match its image). The pattern
generator (train mode, Adam ``lr_generator``, betas (0.5, 0.9)) is stepped after the
classifier, on the classifier's loss of the same batch (back-propagated through the
triggered images) plus ``lambda_div`` times the diversity loss between the patterns of
each backdoor row and of another row. The classifier's update must back-propagate into
its input, as ``GradientStep`` does. Defaults are BackdoorBench's ``inputaware/default.yaml``
(lambda_div 1, lambda_norm 100, mask_density 0.032, lr_G = lr_M = 0.01, 25 mask epochs);
its cross count equals the backdoor count (cross_ratio 1; the original repository uses
p_cross = p_attack = 0.1, the same thing at rho 0.1). Its generator schedule (×0.1 at epoch
200) never triggers within 100 epochs and is left out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import torch
from torch import Tensor, nn

from attacks._generators import (
    BACKDOOR,
    CROSS,
    EncoderDecoder,
    PoisonedBatch,
    apply_float,
    build,
    child_generator,
    detached,
    diversity_loss,
    load_networks_state,
    networks_state,
    partners,
    split_roles,
)
from attacks.base import AttackContext, BatchPoisoningAttack
from bench.core.augment import augment
from bench.core.data import DatasetSpec, LoadedDataset, to_float
from bench.core.modes import eval_mode
from bench.core.params import BackdoorBench, Params, Range
from bench.core.poison import target_labels
from bench.core.registry import ATTACKS
from bench.core.seeding import make_generator
from bench.core.train import TrainingHooks

MASK_BATCH = 128  # batch size of the mask generator's pre-training (BackdoorBench's batch size)
MASK_MILESTONES = (0.4, 0.8)  # fractions of mask_epochs after which the mask learning rate drops ×0.1
# (BackdoorBench's schedulerM_milestones: epochs 10 and 20 of clean_train_epochs 25)


_BB = "config/attack/inputaware/default.yaml"


@dataclass(frozen=True)
class InputAwareParams(Params):
    smoke = {"mask_epochs": 1}

    cross_ratio: Annotated[float, Range(">= 0"), BackdoorBench("attack/inputaware.py: num_cross = num_bd")] = 1.0
    """cross-trigger rows per backdoor row"""
    lambda_div: Annotated[float, Range(">= 0"), BackdoorBench(_BB)] = 1.0
    """weight of the diversity loss"""
    lambda_norm: Annotated[float, Range(">= 0"), BackdoorBench(_BB)] = 100.0
    """weight of the mask-size loss (pre-training)"""
    mask_density: Annotated[float, Range("(0, 1]"), BackdoorBench(_BB)] = 0.032
    """mask mean above which the size loss applies"""
    mask_epochs: Annotated[int, Range(">= 0"), BackdoorBench(f"{_BB}: clean_train_epochs")] = 25
    """pre-training epochs of the mask generator, on clean data"""
    lr_generator: Annotated[float, Range("> 0"), BackdoorBench(f"{_BB}: lr_G")] = 0.01
    """Adam learning rate of the pattern generator"""
    lr_mask: Annotated[float, Range("> 0"), BackdoorBench(f"{_BB}: lr_M")] = 0.01
    """Adam learning rate of the mask generator"""


def sharpen(m: Tensor) -> Tensor:
    """The mask threshold ``tanh(20 m − 10) / (2 + 1e-7) + 0.5``: near 0 or 1 away from m = 0.5."""
    return torch.tanh(m * 20 - 10) / (2 + 1e-7) + 0.5


def stamp(x: Tensor, pattern: Tensor, mask: Tensor) -> Tensor:
    """``x + (pattern − x) · mask`` = ``x · (1 − mask) + pattern · mask``."""
    return x + (pattern - x) * mask


@ATTACKS.register("inputaware")
class InputAware(BatchPoisoningAttack):
    Params = InputAwareParams
    monotone = False  # the mask replaces pixels by a generated pattern: a black image may come out brighter

    def __init__(self, params: InputAwareParams, spec: DatasetSpec) -> None:
        super().__init__(params, spec)
        self._pattern_factory = EncoderDecoder.for_dataset(spec.channels, spec.size, spec.channels)
        self._mask_factory = EncoderDecoder.for_dataset(spec.channels, spec.size, 1)
        # untrained, deterministic generators until ``prepare`` (or ``load_state_dict``)
        gen = make_generator("inputaware-init")
        self.pattern = build(self._pattern_factory, gen).eval()
        self.mask = build(self._mask_factory, gen).eval()

    # ---------------------------------------------------------------- the trigger

    def trigger(self, x: Tensor) -> Tensor:
        """The float trigger with the generators as they are (eval mode for the test trigger)."""
        return stamp(x, self.pattern(x), sharpen(self.mask(x)))

    def apply(self, x: Tensor) -> Tensor:
        with eval_mode(self.pattern, self.mask):
            return apply_float(self.trigger, x, next(self.pattern.parameters()).device)

    # ---------------------------------------------------------------- preparation: the mask

    def prepare(self, data: LoadedDataset, ctx: AttackContext) -> None:
        """Fresh generators from ``ctx.generator`` on ``ctx.device``; pre-train and freeze the mask generator."""
        self.pattern = build(self._pattern_factory, child_generator(ctx.generator)).to(ctx.device)
        self.mask = build(self._mask_factory, child_generator(ctx.generator)).to(ctx.device)
        self._train_mask(data.train.x, data.spec, ctx)
        self.mask.eval().requires_grad_(False)

    def _train_mask(self, images: Tensor, spec: DatasetSpec, ctx: AttackContext) -> list[float]:
        p = self.params
        optimizer = torch.optim.Adam(self.mask.parameters(), lr=p.lr_mask, betas=(0.5, 0.9))
        milestones = [round(f * p.mask_epochs) for f in MASK_MILESTONES]
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones, 0.1)
        self.mask.train()
        n, losses = len(images), []
        for _ in range(p.mask_epochs):
            first = torch.randperm(n, generator=ctx.generator)
            second = torch.randperm(n, generator=ctx.generator)
            for start in range(0, n, MASK_BATCH):
                batch = lambda order: to_float(images[order[start : start + MASK_BATCH]].to(ctx.device))  # noqa: E731
                x1 = augment(batch(first), spec.augmentation, ctx.generator)
                x2 = augment(batch(second), spec.augmentation, ctx.generator)
                m1, m2 = sharpen(self.mask(x1)), sharpen(self.mask(x2))
                loss_norm = torch.relu(m1 - p.mask_density).mean()
                loss = p.lambda_norm * loss_norm + p.lambda_div * diversity_loss(x1, x2, m1, m2)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                losses.append(float(loss.detach()))
            scheduler.step()
        return losses

    # ---------------------------------------------------------------- training control

    def training_hooks(self, model: nn.Module, ctx: AttackContext) -> "InputAwareHooks":
        return InputAwareHooks(self, ctx)

    def cross_fraction(self, rho: float) -> float:
        return self.params.cross_ratio * rho

    # ---------------------------------------------------------------- state

    def state_dict(self) -> dict[str, Tensor]:
        return networks_state({"pattern": self.pattern, "mask": self.mask})

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        load_networks_state("inputaware", {"pattern": self.pattern, "mask": self.mask}, state)


class InputAwareHooks(TrainingHooks):
    """Batches with backdoor and cross-trigger rows for the classifier's update, then one pattern-generator step.

    ``last`` is the last batch handed to the classifier (detached), with its rows' roles.
    """

    def __init__(self, attack: InputAware, ctx: AttackContext) -> None:
        self.attack, self.ctx = attack, ctx
        self.generator_optimizer = torch.optim.Adam(attack.pattern.parameters(), lr=attack.params.lr_generator, betas=(0.5, 0.9))
        self.last: PoisonedBatch | None = None

    def poisoned(self, x: Tensor, y: Tensor) -> tuple[PoisonedBatch, Tensor | None]:
        """The classifier's batch (its triggered rows carry gradients to the pattern generator) and the diversity loss."""
        a, gen, b = self.attack, self.ctx.generator, len(x)
        roles = split_roles(b, (self.ctx.poison_ratio, a.params.cross_ratio * self.ctx.poison_ratio), gen)
        bd = torch.nonzero(roles == BACKDOOR).flatten()
        cross = torch.nonzero(roles == CROSS).flatten()
        cross_src, bd_partner = partners(cross, b, gen), partners(bd, b, gen)
        bd, cross, cross_src, bd_partner = (t.to(x.device) for t in (bd, cross, cross_src, bd_partner))
        y = y.clone()
        y[bd] = target_labels(y[bd], self.ctx.target, a.spec.num_classes)
        if len(bd) + len(cross) == 0:
            return PoisonedBatch(x.clone(), y, roles.to(x.device)), None
        a.pattern.train()
        sources = torch.cat([bd, cross_src, bd_partner])
        patterns = a.pattern(x[sources])  # one forward, one set of BatchNorm batch statistics
        with torch.no_grad():
            masks = sharpen(a.mask(x[sources]))
        nb, nc = len(bd), len(cross)
        out = x.detach().clone()
        out[bd] = stamp(x[bd], patterns[:nb], masks[:nb])
        out[cross] = stamp(x[cross], patterns[nb : nb + nc], masks[nb : nb + nc])
        div = None
        if nb:
            div = diversity_loss(x[bd], x[bd_partner], patterns[:nb], patterns[nb + nc :])
        return PoisonedBatch(out, y, roles.to(x.device)), div

    def poison_batch(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        self.generator_optimizer.zero_grad(set_to_none=True)
        batch, div = self.poisoned(x, y)
        self.last = detached(batch)
        if div is not None and self.attack.params.lambda_div > 0:
            (self.attack.params.lambda_div * div).backward(retain_graph=True)  # pattern generator only
        return batch.x, batch.y  # the classifier's backward reaches the pattern generator through batch.x

    def after_step(self, step: int) -> None:
        if any(p.grad is not None for p in self.attack.pattern.parameters()):
            self.generator_optimizer.step()
