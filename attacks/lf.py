"""Low-Frequency trigger (Zeng, Park, Mao & Jia, ICCV 2021): a smooth universal adversarial perturbation.

"Rethinking the backdoor attacks' triggers: a frequency perspective" shows that most
triggers carry high-frequency artefacts that a frequency-domain detector finds, and
creates smooth triggers instead: a universal adversarial perturbation towards the
target class, found against a clean model and constrained to low frequencies by a
low-pass filter. The trigger is additive: ``x' = clip(x + v, 0, 1)``, the same ``v`` for
every image (dirty-label poisoning).

Here ``v = s · LP(w)``: ``LP`` is a Gaussian low-pass filter of standard deviation
``sigma`` pixels at 32×32 (scaled with the side), applied in the frequency domain
(transfer ``exp(−2π² σ² |f|²)``, ``f`` in cycles per pixel, circular boundary), and
``s = min(1, eps / max|LP(w)|)`` rescales it into the L∞ ball of radius ``eps`` (a
rescaling keeps it low-pass, where clipping would not). ``w`` is found in ``prepare`` by
``steps`` Adam steps (rate ``lr``) on the cross-entropy of a clean surrogate
(``attacks._surrogate``) on ``clip(x + v)`` against the backdoor labels of ``batch_size``
training images drawn at random per step (all2one: the target; all2all: ``y + 1``).
``v`` is the state (``state_dict``: ``perturbation`` float32 ``[C, H, W]``); until
``prepare`` or ``load_state_dict`` it is zero.

BackdoorBench defaults (``resource/lowFrequency/``): a targeted universal perturbation
by DeepFool steps (overshoot 0.02, at most 200 per image, 50 passes) over 100 random
training images against a clean PreAct-ResNet-18, each increment and the running ``v``
smoothed by a Gaussian of σ = 6 px (a 30-tap kernel) at 32×32, ``v`` min-max rescaled
to a range of 0.2 after every update; pre-computed per dataset and model as ``.npy``.

Deviations: the universal perturbation is found by stochastic gradient descent on the
surrogate's loss (the optimisation form of a universal perturbation) instead of
per-image DeepFool passes, with the low-pass filter built into the parametrisation
instead of applied after each update; the magnitude is an L∞ bound ``eps`` (0.1, i.e.
a peak-to-peak range of at most 0.2 as BackdoorBench's rescaling) instead of a min-max
rescaling to a range of 0.2 (which makes ``v`` non-negative). The surrogate is a clean
model the attack trains itself (``surrogate_arch``, ``surrogate_epochs``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated

import torch
import torch.nn.functional as F
from torch import Tensor

from attacks._generators import apply_float, child_generator
from attacks._surrogate import check_surrogate_arch, train_surrogate
from attacks.base import Attack, AttackContext
from bench.core.data import DatasetSpec, LoadedDataset, to_float
from bench.core.poison import target_labels
from bench.core.params import BackdoorBench, BenchOwn, Params, Range
from bench.core.registry import ATTACKS


_SGD = "stochastic gradient descent on the surrogate's loss replaces BackdoorBench's DeepFool passes"
_SURROGATE = "a clean model the attack trains itself (cheap); BackdoorBench loads a clean PreAct-ResNet-18"


@dataclass(frozen=True)
class LfParams(Params):
    smoke = {"steps": 2, "batch_size": 8, "surrogate_epochs": 1}

    eps: Annotated[float, Range("(0, 1]"), BenchOwn("0.1: the peak-to-peak 0.2 of BackdoorBench's min-max rescaling")] = 0.1
    """L∞ bound of the perturbation, in [0, 1] pixel units"""
    sigma: Annotated[float, Range("> 0"), BackdoorBench("resource/lowFrequency/: Gaussian smoothing of σ 6 px at 32×32")] = 6.0
    """standard deviation of the Gaussian low-pass filter, in pixels at 32×32"""
    steps: Annotated[int, Range(">= 1"), BenchOwn(_SGD)] = 300
    """optimisation steps of the universal perturbation"""
    batch_size: Annotated[int, Range(">= 1"), BenchOwn(_SGD)] = 128
    """training images per step"""
    lr: Annotated[float, Range("> 0"), BenchOwn(_SGD)] = 0.01
    """Adam learning rate"""
    surrogate_arch: Annotated[str, BenchOwn(_SURROGATE)] = "small_cnn"
    """the clean model the perturbation fools"""
    surrogate_epochs: Annotated[int, Range(">= 0"), BenchOwn(_SURROGATE)] = 5
    """its training epochs on the clean training set"""

    def check(self) -> None:
        check_surrogate_arch(self.surrogate_arch)


def gaussian_transfer(size: int, sigma: float, device: torch.device | None = None) -> Tensor:
    """The Gaussian low-pass filter's frequency response float32 ``[size, size // 2 + 1]`` (for ``rfft2``)."""
    fy = torch.fft.fftfreq(size, device=device)[:, None]  # cycles per pixel
    fx = torch.fft.rfftfreq(size, device=device)[None, :]
    return torch.exp(-2 * math.pi**2 * sigma**2 * (fx**2 + fy**2))


def low_pass(v: Tensor, sigma: float) -> Tensor:
    """``v`` float ``[..., H, H]`` filtered by a Gaussian of ``sigma`` pixels (circular boundary)."""
    size = v.shape[-1]
    return torch.fft.irfft2(torch.fft.rfft2(v) * gaussian_transfer(size, sigma, v.device), s=(size, size))


def into_ball(v: Tensor, eps: float) -> Tensor:
    """``v`` scaled down (never up) so that ``max|v| ≤ eps``."""
    return v * (eps / v.abs().max().clamp_min(eps))


@ATTACKS.register("lf")
class LowFrequency(Attack):
    Params = LfParams

    def __init__(self, params: LfParams, spec: DatasetSpec) -> None:
        super().__init__(params, spec)
        self.sigma = params.sigma * spec.size / 32  # in pixels at this side
        self.perturbation = torch.zeros(spec.channels, spec.size, spec.size)  # v, float32 [C, H, W]

    def add(self, x: Tensor) -> Tensor:
        """``clip(x + v, 0, 1)`` for float ``x`` in [0, 1]."""
        return (x + self.perturbation.to(x.device)).clamp(0, 1)

    def apply(self, x: Tensor) -> Tensor:
        return apply_float(self.add, x)

    def prepare(self, data: LoadedDataset, ctx: AttackContext) -> None:
        """Train the surrogate and find the universal low-frequency perturbation (from children of ``ctx.generator``)."""
        p = self.params
        surrogate = train_surrogate(data, p.surrogate_arch, p.surrogate_epochs, child_generator(ctx.generator), ctx.device)
        gen = child_generator(ctx.generator)
        w = torch.zeros(1, self.spec.channels, self.spec.size, self.spec.size, device=ctx.device, requires_grad=True)
        optimizer = torch.optim.Adam([w], lr=p.lr)
        n = len(data.train)
        for _ in range(p.steps):
            idx = torch.randperm(n, generator=gen)[: p.batch_size]
            x = to_float(data.train.x[idx.to(data.train.x.device)].to(ctx.device))
            y = target_labels(data.train.y[idx.to(data.train.y.device)].to(ctx.device), ctx.target, self.spec.num_classes)
            v = into_ball(low_pass(w, self.sigma), p.eps)
            loss = F.cross_entropy(surrogate((x + v).clamp(0, 1)), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            self.perturbation = into_ball(low_pass(w, self.sigma), p.eps)[0].float().cpu()

    def state_dict(self) -> dict[str, Tensor]:
        return {"perturbation": self.perturbation.clone()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        if set(state) != {"perturbation"}:
            raise ValueError(f"lf: expected the state key 'perturbation', got {sorted(state)}")
        v = state["perturbation"]
        if v.shape != self.perturbation.shape or not v.is_floating_point():
            raise ValueError(f"lf: perturbation must be float {tuple(self.perturbation.shape)}, got {v.dtype} {tuple(v.shape)}")
        self.perturbation = v.float().clone().cpu()
