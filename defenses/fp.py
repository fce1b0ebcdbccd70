"""Fine-Pruning (Liu et al., RAID 2018): prune the channels clean data leaves dormant, then fine-tune.

The channels are the input features of the network's last ``nn.Linear`` (for globally
pooled CNNs such as both built-in archs: the last conv stage's channels, and their
pooled value is their mean activation). They are ranked by mean activation over the
defender's clean data (eval mode, no augmentation). The least active are pruned in
steps of ``ceil(prune_step · C)`` channels, k = step, 2·step, … < C, for as long as clean
accuracy on the defender's data stays within ``max_acc_drop`` of the unpruned model's
(absolute, in [0, 1]); the last k within the bound is kept. Pruning zeroes the
channel's column of the linear layer's weight, which removes exactly the channel's
contribution and keeps the state_dict layout; the columns stay zero while the whole
model is then fine-tuned with the FT settings (BackdoorBench CIFAR-10: 100 epochs,
batch 256, SGD lr 0.01, momentum 0.9, wd 5e-4, cosine). Defaults prune_step 0.01 and
max_acc_drop 0.1 are BackdoorBench's ``once_prune_ratio`` and ``acc_ratio``.

Deviations from the public code (BackdoorBench ``defense/fp.py``):
- It measures the accuracy bound on the clean *test* set, which a defender does not
  have; here on the defender's clean data.
- Its bound is relative and two-sided, |acc − acc₀| / acc₀ < acc_ratio; here the
  absolute drop acc₀ − acc ≤ max_acc_drop.
- At step k it prunes ``seq_sort[0:k-1]``, one channel fewer than counted, and because
  the "last good" network is the same object it keeps mutating, it returns the model
  pruned one step *past* the bound; here exactly the k least active channels, and the
  last k within the bound.
- Its mean activation is taken over augmented images.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated

import torch
from torch import Tensor, nn

from bench.core.data import ImageSet, to_float
from bench.core.metrics import accuracy, predict
from bench.core.modes import eval_mode
from bench.core.params import BackdoorBench, Range
from bench.core.registry import DEFENSES
from bench.core.train import TRAINING_FIELDS, train
from defenses._layers import Capture, KeepMasked, apply_masks, last_linear
from defenses.base import Defense, DefenseContext, DefenseOutput, FineTuneParams


_FP = "config/defense/fp/cifar10.yaml"


@dataclass(frozen=True)
class FPParams(FineTuneParams):
    sources = {
        **dict.fromkeys(TRAINING_FIELDS, BackdoorBench(_FP)),
        "schedule": BackdoorBench(f"{_FP}: CosineAnnealingLR, T_max 100"),
    }

    prune_step: Annotated[float, Range("(0, 1]"), BackdoorBench(f"{_FP}: once_prune_ratio")] = 0.01
    """fraction of the channels pruned per step"""
    max_acc_drop: Annotated[float, Range("[0, 1]"), BackdoorBench(f"{_FP}: acc_ratio (relative, on test data)")] = 0.1
    """largest allowed drop of clean accuracy (absolute, in [0, 1])"""


@torch.no_grad()
def mean_activation(model: nn.Module, clean: ImageSet, batch_size: int = 512) -> Tensor:
    """Mean over ``clean`` of each input feature of the last linear layer: ``[C]`` (eval mode)."""
    name, _ = last_linear(model)
    total, count = None, 0
    with eval_mode(model), Capture(model, [name], what="input") as seen:
        for start in range(0, len(clean), batch_size):
            model(to_float(clean.x[start : start + batch_size]))
            features = seen[name].float().flatten(0, -2)  # [B·…, C]
            batch_sum = features.sum(0)
            total = batch_sum if total is None else total + batch_sum
            count += features.shape[0]
    return total / count


def column_mask(linear: nn.Linear, channels: Tensor) -> Tensor:
    """0/1 mask of ``linear.weight`` that zeroes the given input columns."""
    mask = torch.ones_like(linear.weight)
    mask[:, channels] = 0
    return mask


@torch.no_grad()
def prune_dormant(model: nn.Module, clean: ImageSet, prune_step: float, max_acc_drop: float) -> Tensor:
    """Prune the least active channels in place within the accuracy bound; return the pruned channels (ascending activation)."""
    _, linear = last_linear(model)
    order = torch.argsort(mean_activation(model, clean), stable=True)
    n = len(order)
    step = max(1, math.ceil(round(prune_step * n, 9)))  # round: 0.1·30 is 3.0000000000000004
    original = linear.weight.detach().clone()
    labels = clean.y.to(original.device)
    base = accuracy(predict(model, clean.x), labels)
    kept = 0
    for k in range(step, n, step):
        linear.weight.copy_(original * column_mask(linear, order[:k]))
        if base - accuracy(predict(model, clean.x), labels) > max_acc_drop:
            break
        kept = k
    linear.weight.copy_(original * column_mask(linear, order[:kept]))
    return order[:kept]


@DEFENSES.register("fp")
class FinePruning(Defense):
    Params = FPParams

    def purify(self, model: nn.Module, clean: ImageSet, ctx: DefenseContext) -> DefenseOutput:
        pruned = prune_dormant(model, clean, self.params.prune_step, self.params.max_acc_drop)
        _, linear = last_linear(model)
        masks = {linear.weight: column_mask(linear, pruned)}
        cfg = self.params.train_config()
        losses = train(model, clean, cfg, ctx.spec.augmentation, ctx.generator, hooks=KeepMasked(masks))
        apply_masks(masks)
        return DefenseOutput(model=model, epoch_losses=losses)
