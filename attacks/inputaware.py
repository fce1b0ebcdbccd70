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

Training control (``training_update``, no poisoned dataset): in every augmented batch a
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
    partners,
    split_roles,
)
from attacks.base import Attack, AttackContext
from bench.core.augment import augment
from bench.core.data import DatasetSpec, LoadedDataset
from bench.core.poison import target_labels
from bench.core.registry import ATTACKS
from bench.core.seeding import make_generator
from bench.core.train import Update

MASK_BATCH = 128  # batch size of the mask generator's pre-training (BackdoorBench's batch size)
MASK_MILESTONES = (0.4, 0.8)  # fractions of mask_epochs after which the mask learning rate drops ×0.1
# (BackdoorBench's schedulerM_milestones: epochs 10 and 20 of clean_train_epochs 25)


@dataclass(frozen=True)
class InputAwareParams:
    cross_ratio: float = 1.0  # cross-trigger rows per backdoor row
    lambda_div: float = 1.0  # weight of the diversity loss
    lambda_norm: float = 100.0  # weight of the mask-size loss (pre-training)
    mask_density: float = 0.032  # mask mean above which the size loss applies
    mask_epochs: int = 25  # pre-training epochs of the mask generator, on clean data
    lr_generator: float = 0.01  # Adam, pattern generator
    lr_mask: float = 0.01  # Adam, mask generator

    def __post_init__(self) -> None:
        for name in ("cross_ratio", "lambda_div", "lambda_norm"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 < self.mask_density <= 1.0:
            raise ValueError(f"mask_density must be in (0, 1], got {self.mask_density}")
        if self.mask_epochs < 0:
            raise ValueError(f"mask_epochs must be >= 0, got {self.mask_epochs}")
        if not (self.lr_generator > 0 and self.lr_mask > 0):
            raise ValueError("lr_generator and lr_mask must be > 0")


def sharpen(m: Tensor) -> Tensor:
    """The mask threshold ``tanh(20 m − 10) / (2 + 1e-7) + 0.5``: near 0 or 1 away from m = 0.5."""
    return torch.tanh(m * 20 - 10) / (2 + 1e-7) + 0.5


def stamp(x: Tensor, pattern: Tensor, mask: Tensor) -> Tensor:
    """``x + (pattern − x) · mask`` = ``x · (1 − mask) + pattern · mask``."""
    return x + (pattern - x) * mask


@ATTACKS.register("inputaware")
class InputAware(Attack):
    Params = InputAwareParams
    poisons_dataset = False

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
        modes = self.pattern.training, self.mask.training
        self.pattern.eval()
        self.mask.eval()
        try:
            return apply_float(self.trigger, x, next(self.pattern.parameters()).device)
        finally:
            self.pattern.train(modes[0])
            self.mask.train(modes[1])

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
                x1 = augment(images[first[start : start + MASK_BATCH]].to(ctx.device).float().div_(255), spec.augmentation, ctx.generator)
                x2 = augment(images[second[start : start + MASK_BATCH]].to(ctx.device).float().div_(255), spec.augmentation, ctx.generator)
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

    def training_update(self, update: Update, model: nn.Module, ctx: AttackContext) -> Update:
        return InputAwareUpdate(self, update, ctx)

    # ---------------------------------------------------------------- state

    def state_dict(self) -> dict[str, Tensor]:
        state = {f"pattern.{k}": v.detach().clone() for k, v in self.pattern.state_dict().items()}
        state.update({f"mask.{k}": v.detach().clone() for k, v in self.mask.state_dict().items()})
        return state

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        unknown = sorted(k for k in state if not k.startswith(("pattern.", "mask.")))
        if unknown:
            raise ValueError(f"inputaware: unexpected state keys {unknown}")
        self.pattern.load_state_dict({k[len("pattern.") :]: v for k, v in state.items() if k.startswith("pattern.")})
        self.mask.load_state_dict({k[len("mask.") :]: v for k, v in state.items() if k.startswith("mask.")})
        self.pattern.eval()
        self.mask.eval().requires_grad_(False)


class InputAwareUpdate:
    """The classifier's update on batches with backdoor and cross-trigger rows, then one pattern-generator step.

    ``last`` is the last batch handed to the classifier (detached), with its rows' roles.
    """

    def __init__(self, attack: InputAware, inner: Update, ctx: AttackContext) -> None:
        self.attack, self.inner, self.ctx = attack, inner, ctx
        self.optimizer = inner.optimizer
        self.generator_optimizer = torch.optim.Adam(attack.pattern.parameters(), lr=attack.params.lr_generator, betas=(0.5, 0.9))
        self.last: PoisonedBatch | None = None

    def poison_batch(self, x: Tensor, y: Tensor) -> tuple[PoisonedBatch, Tensor | None]:
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

    def __call__(self, x: Tensor, y: Tensor) -> Tensor:
        self.generator_optimizer.zero_grad(set_to_none=True)
        batch, div = self.poison_batch(x, y)
        self.last = detached(batch)
        if div is not None and self.attack.params.lambda_div > 0:
            (self.attack.params.lambda_div * div).backward(retain_graph=True)  # pattern generator only
        loss = self.inner(batch.x, batch.y)  # the classifier's step; its backward reaches the pattern generator
        if any(p.grad is not None for p in self.attack.pattern.parameters()):
            self.generator_optimizer.step()
        return loss
