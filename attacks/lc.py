"""Label-Consistent backdoor (Turner, Tsipras & Madry, 2019): clean-label poisons that are hard to learn.

Poisoned training images are drawn from the target class and keep their label. Each is
first perturbed adversarially so that its natural features stop pointing to its class:
untargeted L∞ PGD against a clean surrogate (``attacks._surrogate``) maximising the
cross-entropy of its true label, ``x_{k+1} = Π_{‖x' − x‖∞ ≤ eps, [0, 1]}(x_k + step ·
sign ∇ CE(f(x_k), y))`` from ``x_0 = x`` (no random start), ``steps`` iterations; the
result is rounded to uint8. Then the trigger is stamped. A model that cannot fit these
images from their content learns the trigger instead.

The trigger (test time: the trigger alone): a 3×3 ±1 checkerboard-like pattern ``m`` in
each of the four corners (the left corners' pattern mirrored in the right corners, so
the trigger survives horizontal flips), added at full scale and clipped:
``x' = clip(x + 255 · amplitude · m, 0, 255)``; with amplitude 1 the +1 pixels turn
white and the −1 pixels black. The pattern is BackdoorBench's ``all-corners`` mask
(``utils/bd_img_transform/lc.py``, from the authors' code) at 32×32; at larger sides
each of its pixels becomes a ``ceil(side / 32)``-pixel square (64×64: 2×2, what
BackdoorBench's nearest resize gives); below 32 the pattern keeps its 3×3 size
(BackdoorBench's nearest downsampling would keep only parts of it: at 16×16 a 2×2
top-left and a 1×1 bottom-right corner).

BackdoorBench defaults: ``reduced_amplitude`` 1; PGD eps 8/255, step 1.5/255, 100 steps
(``resource/label-consistent/craft_adv_dataset.py``), all2one only (clean-label).

Deviations: BackdoorBench perturbs with a pre-trained *adversarially trained* ResNet-18
(a downloaded checkpoint, as the paper, whose perturbations are then more semantic);
here the surrogate is a clean model the attack trains itself (``surrogate_arch``,
``surrogate_epochs``), since adversarial training is too costly for a cheap ``prepare``.
The PGD output is rounded to the nearest uint8 level (BackdoorBench truncates).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attacks._generators import child_generator
from attacks._surrogate import check_surrogate_arch, surrogate_device, train_surrogate
from attacks.base import AttackContext, CleanLabelAttack
from bench.core.data import DatasetSpec, LoadedDataset, to_float, to_uint8
from bench.core.params import BackdoorBench, BenchOwn, Params, Range
from bench.core.registry import ATTACKS

# the top-left corner at 32×32 (rows top to bottom); the right corners carry its mirror image, and the
# bottom corners the same patterns as the top ones (BackdoorBench's ``all-corners`` list)
LEFT_CORNER = ((1, -1, -1), (-1, 1, -1), (1, -1, 1))


_PGD = "resource/label-consistent/craft_adv_dataset.py: pgd_config"
_SURROGATE = "a clean model the attack trains itself (cheap); BackdoorBench loads an adversarially trained ResNet-18"


@dataclass(frozen=True)
class LcParams(Params):
    smoke = {"steps": 2, "surrogate_epochs": 1}

    amplitude: Annotated[float, Range("(0, 1]"), BackdoorBench("config/attack/lc/default.yaml: reduced_amplitude")] = 1.0
    """trigger strength (BackdoorBench's reduced_amplitude)"""
    eps: Annotated[float, Range("[0, 1]"), BackdoorBench(_PGD)] = 8 / 255
    """L∞ bound of the adversarial perturbation, in [0, 1] pixel units"""
    step: Annotated[float, Range("> 0"), BackdoorBench(_PGD)] = 1.5 / 255
    """PGD step size, in [0, 1] pixel units"""
    steps: Annotated[int, Range(">= 0"), BackdoorBench(_PGD)] = 100
    """PGD iterations"""
    surrogate_arch: Annotated[str, BenchOwn(_SURROGATE)] = "small_cnn"
    """the clean surrogate the perturbation is computed against"""
    surrogate_epochs: Annotated[int, Range(">= 0"), BenchOwn(_SURROGATE)] = 5
    """its training epochs on the clean training set"""
    surrogate_adversarial_eps: Annotated[float, Range("[0, 1]"), BenchOwn("adversarial training is too costly for prepare")] = 0.0
    """L∞ radius of the surrogate's adversarial training, in [0, 1] pixel units (0: a standard model)"""

    def check(self) -> None:
        check_surrogate_arch(self.surrogate_arch)


def corner_pattern(size: int) -> Tensor:
    """The trigger's sign mask float32 ``[size, size]`` in {−1, 0, +1}: a 3×3 pattern (cells of ``ceil(size / 32)`` px) per corner."""
    cell = max(1, math.ceil(size / 32))
    left = torch.tensor(LEFT_CORNER, dtype=torch.float32).repeat_interleave(cell, 0).repeat_interleave(cell, 1)
    right = left.flip(1)
    k = left.shape[0]
    mask = torch.zeros(size, size)
    mask[:k, :k] = left
    mask[size - k :, :k] = left
    mask[:k, size - k :] = right
    mask[size - k :, size - k :] = right
    return mask


def pgd_away_from_labels(model: nn.Module, x: Tensor, y: Tensor, eps: float, step: float, steps: int) -> Tensor:
    """Untargeted L∞ PGD (no random start) on float ``x`` in [0, 1]: maximise CE(model(x'), y), ``‖x' − x‖∞ ≤ eps``."""
    adv = x.clone()
    for _ in range(steps):
        adv.requires_grad_(True)
        loss = F.cross_entropy(model(adv), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, adv)
        with torch.no_grad():
            adv = adv + step * grad.sign()
            adv = torch.min(torch.max(adv, x - eps), x + eps).clamp_(0, 1)
    return adv.detach()


@ATTACKS.register("lc")
class LabelConsistent(CleanLabelAttack):
    Params = LcParams

    def __init__(self, params: LcParams, spec: DatasetSpec) -> None:
        super().__init__(params, spec)
        self.pattern = corner_pattern(spec.size)  # [H, W] in {−1, 0, +1}
        self.surrogate: nn.Module | None = None

    def apply(self, x: Tensor) -> Tensor:
        shift = 255 * self.params.amplitude * self.pattern.to(x.device)
        return (x.float() + shift).round_().clamp_(0, 255).to(torch.uint8)

    def prepare(self, data: LoadedDataset, ctx: AttackContext) -> None:
        """Train the clean surrogate (from a child of ``ctx.generator``) on ``ctx.device``."""
        p = self.params
        gen = child_generator(ctx.generator)
        self.surrogate = train_surrogate(data, p.surrogate_arch, p.surrogate_epochs, gen, ctx.device, p.surrogate_adversarial_eps)

    def perturb(self, x: Tensor, y: Tensor, chunk: int = 512) -> Tensor:
        """The adversarially perturbed images (before the trigger): uint8 ``x`` with true labels ``y`` → uint8."""
        if self.surrogate is None:
            raise RuntimeError("lc: call prepare(data, ctx) before poisoning (the perturbation needs the surrogate)")
        device = surrogate_device(self.surrogate)
        p = self.params
        parts = []
        for i in range(0, len(x), chunk):
            xf, yc = to_float(x[i : i + chunk].to(device)), y[i : i + chunk].to(device)
            parts.append(to_uint8(pgd_away_from_labels(self.surrogate, xf, yc, p.eps, p.step, p.steps)).to(x.device))
        return torch.cat(parts) if parts else x.clone()

    def poison_inputs(self, x: Tensor, y: Tensor) -> Tensor:
        return self.apply(self.perturb(x, y))
