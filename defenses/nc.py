"""Neural Cleanse (Wang et al., IEEE S&P 2019): trigger reverse engineering, outlier
detection, and unlearning.

1. For every class t, reverse-engineer a mask m ``[1, H, W]`` and a pattern p ``[C, H, W]``,
   both in [0, 1] through m = tanh(a)/(2 + 1e-7) + 1/2 (likewise p; a = 1 initially),
   minimising CE(f((1 − m)⊙x + m⊙p), t) + λ·‖m‖₁ with Adam (lr ``mask_lr``, betas
   (0.5, 0.9)) for ``steps`` steps over clean batches (training augmentation). λ starts at
   ``init_cost`` and adapts after every round of ``round_steps`` steps, judged by the
   round's mean attack success: after ``patience`` rounds at or above
   ``attack_success_threshold`` it is multiplied by ``cost_multiplier``, after
   ``patience`` rounds below it divided by ``cost_multiplier``^1.5. The kept trigger is
   the smallest-norm one at the end of a successful round (the last one if no round
   succeeded). Early stop once λ has gone both up and down and the best norm has not
   improved by 1% for ``early_stop_patience`` rounds.
2. Anomaly index of class t: |‖m_t‖₁ − median| / (1.4826·MAD) over the classes; classes
   with ‖m_t‖₁ ≤ median and index > ``anomaly_threshold`` are flagged.
3. If any class is flagged, unlearn: the reversed trigger of every flagged class is
   stamped onto the same random ``unlearn_fraction`` of the clean data, which keep their
   true labels, and replace those images; the model is fine-tuned on the result with
   the FT settings (``bench.core.train.train``). Otherwise the model is returned unchanged.

Detection output: ``flagged`` (0/1), ``target`` (the flagged class of smallest norm, or
−1), ``n_flagged``, ``anomaly_index`` (of the smallest-norm class) and ``mask_l1_<k>`` per
class.

Defaults are BackdoorBench's CIFAR-10 config: init_cost 1e-3, multiplier 2, patience 5,
98% success threshold, mask lr 0.1, early stop after 25 epochs without a 1% improvement,
20% unlearning data, FT with 100 epochs, batch 256, SGD lr 0.01, cosine. Its epochs are
passes over 5% of CIFAR-10, 10 batches of 256: hence ``round_steps`` 10 and ``steps`` 800
(its 80 epochs).

Deviations from the public code (BackdoorBench defense/nc.py, itself from VinAI's port
of the authors' Keras code):

- Median and MAD are proper medians (mean of the two middle values for an even count,
  as ``np.median`` in the authors' code); BackdoorBench's ``torch.median`` takes the
  lower one. A zero MAD is floored at 1e-12 so the index stays finite.
- λ adapts per round of ``round_steps`` batches instead of per pass over the clean
  data, so patience and early stopping mean the same on any subset size (on a subset
  smaller than one batch a pass is a single step, and BackdoorBench's 25-epoch early
  stop fires after 25 steps).
- If the threshold is never reached the final trigger is kept, as in the authors'
  code; BackdoorBench keeps the one from the first epoch.
- Stamping and fine-tuning happen on uint8 tensors in memory; BackdoorBench reads the
  trigger back from PNG files resized with OpenCV.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bench.core.data import ImageSet, to_float, to_uint8
from bench.core.params import BackdoorBench, BenchOwn, Range
from bench.core.registry import DEFENSES
from bench.core.train import TRAINING_FIELDS, train
from defenses._masking import check_finite, cycle_index, float_batch
from defenses.base import Defense, DefenseContext, DefenseOutput, FineTuneParams

_EPSILON = 1e-7  # keeps tanh-space values off the [0, 1] boundary
_MAD_CONSISTENCY = 1.4826  # MAD → standard deviation for normal data
_EARLY_STOP_IMPROVEMENT = 0.99  # the best norm must fall below 99% of its earlier best


_NC = "config/defense/nc/cifar10.yaml"


@dataclass(frozen=True)
class NCParams(FineTuneParams):
    sources = {
        **dict.fromkeys(TRAINING_FIELDS, BackdoorBench(_NC)),
        "schedule": BackdoorBench(f"{_NC}: CosineAnnealingLR, T_max 100"),
    }

    smoke = {**FineTuneParams.smoke, "steps": 2}

    steps: Annotated[int, Range(">= 1"), BackdoorBench(f"{_NC}: nc_epoch 80 × 10 batches")] = 800
    """trigger-optimisation steps per class"""
    round_steps: Annotated[int, Range(">= 1"), BenchOwn("λ adapts per round of 10 steps (a BackdoorBench epoch at 5%)")] = 10
    """steps per round of λ adaptation"""
    mask_lr: Annotated[float, Range("> 0"), BackdoorBench(_NC)] = 0.1
    """Adam learning rate of mask and pattern"""
    init_cost: Annotated[float, Range(">= 0"), BackdoorBench(_NC)] = 1e-3
    """initial λ, weight of the mask's L1 norm"""
    cost_multiplier: Annotated[float, Range("> 1"), BackdoorBench(_NC)] = 2.0
    """factor by which λ goes up (down: its 1.5th power)"""
    patience: Annotated[int, Range(">= 1"), BackdoorBench(_NC)] = 5
    """rounds before λ changes"""
    attack_success_threshold: Annotated[float, Range("(0, 1]"), BackdoorBench(f"{_NC}: atk_succ_threshold 98 (%)")] = 0.98
    """attack success a round needs to count as successful"""
    early_stop_patience: Annotated[int, Range(">= 1"), BackdoorBench(f"{_NC} (in epochs there)")] = 25
    """rounds without a 1% better norm before stopping"""
    anomaly_threshold: Annotated[float, Range("> 0"), BackdoorBench("defense/nc.py: outlier_detection")] = 2.0
    """anomaly index above which a class is flagged"""
    unlearn_fraction: Annotated[float, Range("(0, 1)"), BackdoorBench(f"{_NC}: unlearning_ratio")] = 0.2
    """share of the clean data stamped for unlearning"""


@dataclass(frozen=True)
class Trigger:
    """A reversed trigger: ``mask`` ``[1, H, W]`` and ``pattern`` ``[C, H, W]``, both in [0, 1]."""

    mask: Tensor
    pattern: Tensor

    @property
    def l1(self) -> float:
        return self.mask.abs().sum().item()

    def apply(self, x: Tensor) -> Tensor:
        """Stamp float images ``x`` in [0, 1]: (1 − m)⊙x + m⊙p."""
        return (1 - self.mask) * x + self.mask * self.pattern

    def stamp(self, x: Tensor) -> Tensor:
        """Stamp uint8 images ``x``; uint8 out."""
        return to_uint8(self.apply(to_float(x)))


def _squash(raw: Tensor) -> Tensor:
    return torch.tanh(raw) / (2 + _EPSILON) + 0.5


class _CostSchedule:
    """BackdoorBench's (and the authors') adaptation of λ, best-trigger record and early stop."""

    def __init__(self, params: NCParams) -> None:
        self.params = params
        self.cost = params.init_cost
        self.best: Trigger | None = None
        self.best_l1 = float("inf")
        self.early_stop_best = float("inf")
        self.early_stop_counter = 0
        self.cost_set_counter = self.up_counter = self.down_counter = 0
        self.went_up = self.went_down = False

    def end_round(self, success: float, l1: float, current: Trigger) -> bool:
        """Record a round's mean attack success and mask norm; return True to stop early."""
        p = self.params
        if success >= p.attack_success_threshold and l1 < self.best_l1:
            self.best, self.best_l1 = current, l1
        if self.best_l1 < float("inf"):
            if self.best_l1 >= _EARLY_STOP_IMPROVEMENT * self.early_stop_best:
                self.early_stop_counter += 1
            else:
                self.early_stop_counter = 0
        self.early_stop_best = min(self.early_stop_best, self.best_l1)
        if self.went_up and self.went_down and self.early_stop_counter >= p.early_stop_patience:
            return True
        if self.cost == 0 and success >= p.attack_success_threshold:
            self.cost_set_counter += 1
            if self.cost_set_counter >= p.patience:
                self.cost = p.init_cost
                self.up_counter = self.down_counter = 0
                self.went_up = self.went_down = False
        else:
            self.cost_set_counter = 0
        if success >= p.attack_success_threshold:
            self.up_counter, self.down_counter = self.up_counter + 1, 0
        else:
            self.up_counter, self.down_counter = 0, self.down_counter + 1
        if self.up_counter >= p.patience:
            self.up_counter, self.cost, self.went_up = 0, self.cost * p.cost_multiplier, True
        elif self.down_counter >= p.patience:
            self.down_counter, self.cost, self.went_down = 0, self.cost / p.cost_multiplier**1.5, True
        return False


def reverse_engineer(model: nn.Module, clean: ImageSet, target: int, params: NCParams, ctx: DefenseContext) -> Trigger:
    """The smallest trigger found that sends ``clean`` images to ``target`` (see the module doc)."""
    gen, aug = ctx.generator, ctx.spec.augmentation
    model.eval()
    device = clean.x.device
    raw_mask = torch.ones((1, *clean.x.shape[2:]), device=device, requires_grad=True)
    raw_pattern = torch.ones(clean.x.shape[1:], device=device, requires_grad=True)
    optimizer = torch.optim.Adam([raw_mask, raw_pattern], lr=params.mask_lr, betas=(0.5, 0.9))
    schedule = _CostSchedule(params)
    batches = cycle_index(len(clean), params.batch_size, gen)
    history: list[float] = []
    successes: list[float] = []
    norms: list[float] = []
    for step in range(params.steps):
        x, _ = float_batch(clean, next(batches), aug, gen)
        trigger = Trigger(_squash(raw_mask), _squash(raw_pattern))
        logits = model(trigger.apply(x))
        targets = torch.full((len(x),), target, dtype=torch.int64, device=device)
        norm = trigger.mask.abs().sum()
        loss = F.cross_entropy(logits, targets) + schedule.cost * norm
        check_finite(loss.item(), step, history)
        history.append(loss.item())
        raw_mask.grad, raw_pattern.grad = torch.autograd.grad(loss, [raw_mask, raw_pattern])
        optimizer.step()
        successes.append((logits.argmax(1) == targets).float().mean().item())
        norms.append(norm.item())
        if len(successes) == params.round_steps or step == params.steps - 1:
            current = Trigger(_squash(raw_mask).detach(), _squash(raw_pattern).detach())
            if schedule.end_round(sum(successes) / len(successes), sum(norms) / len(norms), current):
                break
            successes, norms = [], []
    return schedule.best if schedule.best is not None else current


def _median(values: Tensor) -> Tensor:
    """The median, averaging the two middle values of an even count."""
    return torch.quantile(values, 0.5)


def anomaly_indices(norms: Tensor) -> Tensor:
    """|norm − median| / (1.4826·MAD) per class, MAD = median(|norm − median|) floored at 1e-12."""
    norms = norms.double()
    median = _median(norms)
    deviation = (norms - median).abs()
    mad = (_MAD_CONSISTENCY * _median(deviation)).clamp_min(1e-12)
    return deviation / mad


def flagged_classes(norms: Tensor, threshold: float) -> list[int]:
    """Classes on the small-norm side (norm ≤ median) whose anomaly index exceeds ``threshold``, smallest norm first."""
    index = anomaly_indices(norms)
    small = norms.double() <= _median(norms.double())
    chosen = [k for k in range(len(norms)) if small[k] and index[k] > threshold]
    return sorted(chosen, key=lambda k: (norms[k].item(), k))


def unlearning_set(clean: ImageSet, triggers: list[Trigger], fraction: float, gen: torch.Generator) -> ImageSet:
    """``clean`` with a random ``fraction`` of it replaced by copies stamped with each trigger (true labels kept)."""
    n = len(clean)
    count = n - int(n * (1 - fraction))
    order = torch.randperm(n, generator=gen).to(clean.x.device)
    chosen, kept = order[:count], order[count:]
    xs = [clean.x[kept]] + [t.stamp(clean.x[chosen]) for t in triggers]
    ys = [clean.y[kept]] + [clean.y[chosen]] * len(triggers)
    return ImageSet(torch.cat(xs), torch.cat(ys))


@DEFENSES.register("nc")
class NeuralCleanse(Defense):
    Params = NCParams

    def purify(self, model: nn.Module, clean: ImageSet, ctx: DefenseContext) -> DefenseOutput:
        p = self.params
        triggers = [reverse_engineer(model, clean, k, p, ctx) for k in range(ctx.spec.num_classes)]
        norms = torch.tensor([t.l1 for t in triggers])
        index = anomaly_indices(norms)
        flagged = flagged_classes(norms, p.anomaly_threshold)
        smallest = int(torch.argmin(norms))
        detection = {
            "flagged": float(bool(flagged)),
            "target": float(flagged[0]) if flagged else -1.0,
            "n_flagged": float(len(flagged)),
            "anomaly_index": float(index[smallest]),
            **{f"mask_l1_{k}": float(v) for k, v in enumerate(norms.tolist())},
        }
        losses: list[float] = []
        if flagged:
            data = unlearning_set(clean, [triggers[k] for k in flagged], p.unlearn_fraction, ctx.generator)
            losses = train(model, data, p.train_config(), ctx.spec.augmentation, ctx.generator)
        return DefenseOutput(model=model, detection=detection, epoch_losses=losses)
