"""Blind backdoor (Bagdasaryan & Shmatikov, USENIX Security 2021): code poisoning of the loss computation.

The attacker controls only the code that computes the training loss: for every batch
``(x, y)`` it synthesises a backdoored copy ``(x*, y*)`` and replaces the loss by the
blind loss ``s_b · ℓ(x*, y*) + s_n · ℓ(x, y)`` (main task ``ℓ(x, y)``, backdoor task
``ℓ(x*, y*)``, cross-entropy). It never touches the training set (``poisons_dataset`` is
False) nor the optimiser.

Trigger (BackdoorBench's ``attack/blind.py`` pixel pattern, from backdoors101's
``PatternSynthesizer``): a 5×3 pattern stamped over the image,
``x' = (1 − m) · x + m · p``, rows ``3·H // 32`` onwards and columns ``23·W // 32`` onwards
(rows 3–7, columns 23–25 at 32×32, as BackdoorBench; rows 1–5, columns 11–13 at 16×16),
every channel alike::

    1 0 1
    . 1 .        1: white (255), 0: black (0), .: left as it is (m = 0)
    . . 0
    . 1 .
    1 0 1

The pattern keeps its size in pixels at every image side (a 5×3 pattern scaled down
to 16×16 would lose its shape); only its position scales. Sides below 5 are refused.

Scales ``(s_b, s_n)`` (``loss_balance``):

- ``"mgda"`` (the paper's default): the multiple-gradient descent solution for two tasks,
  recomputed per batch. With ``g_b, g_n`` the gradients of the two losses over the
  classifier's parameters, each divided by its normaliser (``mgda_normalize``:
  ``"loss+"`` ``min(ℓ · ‖g‖, 10)``, BackdoorBench's setting; ``"loss"`` ``min(ℓ, 10)``;
  ``"l2"`` ``‖g‖``; ``"none"`` 1), the Frank–Wolfe step for two tasks is closed-form:
  ``s_b = clip(⟨g_n − g_b, g_n⟩ / ‖g_b − g_n‖², 0, 1)``, ``s_n = 1 − s_b`` (the
  minimum-norm point of the segment between them). The public code clips to
  [0.001, 0.999] at the ends; here it is the exact minimiser.
- ``"fixed"``: ``s_b = backdoor_weight``, ``s_n = normal_weight``: BackdoorBench's
  ``default.yaml`` mode (0.9 and 1.0).

Training control (``training_hooks``): the backdoored copy of each augmented batch
has a fraction ``rho`` of its rows stamped with the pattern and relabelled (all2one:
the target; all2all: ``(y + 1) % K``), the other rows as in the batch; counts per batch
are rounded stochastically (``attacks._generators.split_roles``). The copy is what the
classifier's update computes its forward pass on (the loop's ``poison_batch`` hook); the
loop's ``loss`` hook is the blind loss (the main-task term runs the model on the clean
batch), which is the code-poisoning threat model: the attacker's code decides the loss,
the rest of the training code (the update, the optimiser) is the victim's.

Deviations from BackdoorBench (``attack/blind.py``, defaults ``weight_loss_balance_mode:
fixed``, normal 1.0, backdoor 0.9, ``mgda_normalize: loss+``):

- the poison ratio: BackdoorBench stamps every row of the copy (``poisoning_proportion``
  1.1, ignoring ``pratio``); here a fraction ``rho`` of the copy is stamped, so the rho
  axis of a grid means what it means for every other attack (backdoors101's
  ``poisoning_proportion``; ``rho = 1`` is BackdoorBench's setting).
- the start of the attack: BackdoorBench computes only the main-task loss until it has
  ``batch_history_len`` (1000) batches of history whose mean main-task loss is below
  ``backdoor_batch_loss_threshold`` (1.0). Here ``warmup_batches`` (default 0: the attack
  runs from the first batch) and ``loss_threshold`` do the same; 1000 batches is
  longer than a whole 15-epoch run on digits (23 batches an epoch).
- the default balance is MGDA (the paper's method) rather than BackdoorBench's fixed
  scales; ``loss_balance="fixed"`` gives the latter.
- all2all: BackdoorBench's training copy always carries the all2one target; here the
  copy's labels follow the target mode.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Annotated, Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attacks._generators import BACKDOOR, CLEAN, PoisonedBatch, detached, split_roles
from attacks.base import AttackContext, BatchPoisoningAttack
from bench.core.device import autocast
from bench.core.data import DatasetSpec
from bench.core.params import AuthorsCode, BackdoorBench, BenchOwn, ParamError, Params, Range
from bench.core.poison import Target, target_labels
from bench.core.registry import ATTACKS
from bench.core.train import TrainingHooks, cross_entropy

# 1: white, 0: black, -1: not stamped (backdoors101's ``mask_value``)
PATTERN = ((1, 0, 1), (-1, 1, -1), (-1, -1, 0), (-1, 1, -1), (1, 0, 1))


_BB = "config/attack/blind/default.yaml"


@dataclass(frozen=True)
class BlindParams(Params):
    loss_balance: Annotated[Literal["mgda", "fixed"], AuthorsCode("ebagdasa/backdoors101 (BackdoorBench's yaml: fixed)")] = "mgda"
    """scales of the two losses: MGDA per batch, or fixed"""
    mgda_normalize: Annotated[Literal["loss+", "loss", "l2", "none"], BackdoorBench(f"{_BB}: mgda_normalize")] = "loss+"
    """gradient normaliser before MGDA"""
    backdoor_weight: Annotated[float, Range(">= 0"), BackdoorBench(f"{_BB}: fix_scale_backdoor_weight")] = 0.9
    """s_b with loss_balance fixed"""
    normal_weight: Annotated[float, Range(">= 0"), BackdoorBench(f"{_BB}: fix_scale_normal_weight")] = 1.0
    """s_n with loss_balance fixed"""
    warmup_batches: Annotated[int, Range(">= 0"), BenchOwn("BackdoorBench's 1000 batches outlast a digits run")] = 0
    """batches of main-task history needed before the attack starts (0: from the start)"""
    loss_threshold: Annotated[float, Range("> 0"), BackdoorBench(f"{_BB}: backdoor_batch_loss_threshold")] = 1.0
    """the attack runs while the mean main-task loss over warmup_batches is below this"""

    def check(self) -> None:
        if self.backdoor_weight + self.normal_weight <= 0:
            raise ParamError("backdoor_weight", "backdoor_weight and normal_weight cannot both be 0")


def pattern_mask(size: int) -> tuple[Tensor, Tensor]:
    """The stamp for ``size``×``size`` images: mask bool ``[H, W]`` and values float ``[H, W]`` in {0, 1}."""
    rows, cols = len(PATTERN), len(PATTERN[0])
    if size < rows:
        raise ValueError(f"blind's 5×3 pattern needs images of side >= {rows}, got {size}")
    top, left = 3 * size // 32, min(23 * size // 32, size - cols)
    top = min(top, size - rows)
    grid = torch.full((size, size), -1.0)
    grid[top : top + rows, left : left + cols] = torch.tensor(PATTERN, dtype=torch.float32)
    return grid >= 0, grid.clamp(min=0)


def _flat_dot(a: list[Tensor], b: list[Tensor]) -> Tensor:
    return sum((u.float() * v.float()).sum() for u, v in zip(a, b))


def _normaliser(grads: list[Tensor], loss: Tensor, kind: str) -> Tensor:
    norm = _flat_dot(grads, grads).sqrt()
    if kind == "loss+":
        return (loss * norm).clamp(max=10.0)
    if kind == "loss":
        return loss.clamp(max=10.0)
    if kind == "l2":
        return norm
    return torch.ones_like(norm)


def mgda_scales(
    g_backdoor: list[Tensor], g_normal: list[Tensor], l_backdoor: Tensor, l_normal: Tensor, normalize: str
) -> tuple[Tensor, Tensor]:
    """``(s_b, s_n)``, detached scalars summing to 1: the minimum-norm convex combination of the normalised gradients.

    ``min_γ ‖γ v_b + (1 − γ) v_n‖²`` over γ ∈ [0, 1] is
    ``γ = clip(⟨v_n − v_b, v_n⟩ / ‖v_b − v_n‖², 0, 1)``, with ``v = g / (normaliser + 1e-5)``;
    equal gradients (any γ is optimal) give 1/2.
    """
    nb = _normaliser(g_backdoor, l_backdoor.detach().float(), normalize) + 1e-5
    nn_ = _normaliser(g_normal, l_normal.detach().float(), normalize) + 1e-5
    bb = _flat_dot(g_backdoor, g_backdoor) / (nb * nb)
    nn2 = _flat_dot(g_normal, g_normal) / (nn_ * nn_)
    bn = _flat_dot(g_backdoor, g_normal) / (nb * nn_)
    gap = bb + nn2 - 2 * bn  # ‖v_b − v_n‖²
    gamma = torch.where(gap > 0, (nn2 - bn) / gap.clamp(min=torch.finfo(gap.dtype).tiny), torch.full_like(gap, 0.5))
    gamma = gamma.clamp(0.0, 1.0).detach()
    return gamma, 1 - gamma


@ATTACKS.register("blind")
class Blind(BatchPoisoningAttack):
    Params = BlindParams

    def __init__(self, params: BlindParams, spec: DatasetSpec) -> None:
        super().__init__(params, spec)
        self.mask, self.values = pattern_mask(spec.size)  # [H, W] bool, [H, W] float in {0, 1}

    def stamp(self, x: Tensor) -> Tensor:
        """Float images ``[N, C, H, W]`` in [0, 1] with the pattern stamped."""
        return torch.where(self.mask.to(x.device), self.values.to(x.device, x.dtype), x)

    def apply(self, x: Tensor) -> Tensor:
        values = (self.values * 255).to(x.device, torch.uint8)
        return torch.where(self.mask.to(x.device), values, x)

    def poison_batch(self, x: Tensor, y: Tensor, target: Target, rho: float, gen: torch.Generator) -> PoisonedBatch:
        """The backdoored copy of a batch (float ``[B, C, H, W]`` in [0, 1]): a fraction ``rho`` stamped and relabelled."""
        roles = split_roles(len(x), (rho,), gen)
        bd = torch.nonzero(roles == BACKDOOR).flatten().to(x.device)
        x, y = x.clone(), y.clone()
        x[bd] = self.stamp(x[bd])
        y[bd] = target_labels(y[bd], target, self.spec.num_classes)
        return PoisonedBatch(x, y, roles.to(x.device))

    def training_hooks(self, model: nn.Module, ctx: AttackContext) -> "BlindHooks":
        return BlindHooks(self, model, ctx)


class BlindHooks(TrainingHooks):
    """The backdoored copy of each batch and the blind loss in place of the victim's (see the module docstring).

    ``last`` is the last batch handed to the classifier's forward pass (the backdoored copy,
    detached, with its rows' roles); ``last_scales`` the ``(s_b, s_n)`` it was trained with.
    """

    def __init__(self, attack: Blind, model: nn.Module, ctx: AttackContext) -> None:
        self.attack, self.model, self.ctx = attack, model, ctx
        p = attack.params
        self.history: deque[float] = deque(maxlen=max(1, p.warmup_batches))  # main-task losses, while warming up
        self.last: PoisonedBatch | None = None
        self.last_scales: tuple[Tensor, Tensor] | None = None
        self._pending: _BlindBatch | None = None  # the batch whose loss is the blind loss, between the two hooks

    @property
    def attacking(self) -> bool:
        """Whether the attack runs on the next batch (always, unless ``warmup_batches`` holds it back)."""
        p = self.attack.params
        if p.warmup_batches == 0:
            return True
        return len(self.history) == p.warmup_batches and sum(self.history) / p.warmup_batches < p.loss_threshold

    def scales(self, x: Tensor, y: Tensor, copy: PoisonedBatch) -> tuple[Tensor, Tensor, Tensor | None]:
        """``(s_b, s_n, main-task loss or None)``; MGDA computes the main-task loss (graph kept) on the way."""
        p = self.attack.params
        if p.loss_balance == "fixed":
            return torch.tensor(p.backdoor_weight), torch.tensor(p.normal_weight), None
        params = [q for q in self.model.parameters() if q.requires_grad]
        with autocast(x.device):
            l_backdoor = F.cross_entropy(self.model(copy.x), copy.y)
            l_normal = F.cross_entropy(self.model(x), y)
        g_backdoor = _grads(l_backdoor, params, retain=False)
        g_normal = _grads(l_normal, params, retain=True)
        s_b, s_n = mgda_scales(g_backdoor, g_normal, l_backdoor, l_normal, p.mgda_normalize)
        return s_b, s_n, l_normal

    def poison_batch(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        if not self.attacking:
            self._pending = None
            self.last = PoisonedBatch(x.detach(), y, torch.full((len(x),), CLEAN, device=x.device))
            return x, y
        copy = self.attack.poison_batch(x, y, self.ctx.target, self.ctx.poison_ratio, self.ctx.generator)
        s_b, s_n, l_normal = self.scales(x, y, copy)
        self._pending = _BlindBatch(x, y, s_b.to(x.device), s_n.to(x.device), l_normal)
        self.last, self.last_scales = detached(copy), (s_b, s_n)
        return copy.x, copy.y

    def loss(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        """The blind loss ``s_b · ℓ(x*, y*) + s_n · ℓ(x, y)`` on the copy ``(x*, y*)``; the main task while waiting."""
        pending = self._pending
        if pending is None:
            loss = cross_entropy(model, x, y)
            self.history.append(float(loss.detach()))
            return loss
        with autocast(x.device):
            logits = model(x)
            normal = F.cross_entropy(model(pending.x), pending.y) if pending.normal is None else pending.normal
            loss = pending.s_b * F.cross_entropy(logits, y) + pending.s_n * normal
        if self.attack.params.warmup_batches:
            self.history.append(float(normal.detach()))
        return loss


class _BlindBatch(NamedTuple):
    """The clean batch behind a backdoored copy, the scales and (MGDA) its main-task loss."""

    x: Tensor
    y: Tensor
    s_b: Tensor
    s_n: Tensor
    normal: Tensor | None


def _grads(loss: Tensor, params: list[Tensor], retain: bool) -> list[Tensor]:
    grads = torch.autograd.grad(loss, params, retain_graph=retain, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]
