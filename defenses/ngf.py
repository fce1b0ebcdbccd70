"""NGF, natural-gradient fine-tuning of one layer (Karim et al., arXiv 2306.17441).

Only the parameters of one layer θ_L (a parameter-name prefix) change, by a damped
diagonal natural-gradient step on the clean loss plus the clean-distribution-aware term:

    g   = ∇_{θ_L} [ CE(f_θ(x), y) + (η_c/2) Σ_j F̂_j (θ_j − θ⁰_j)² ]
        = ∇_{θ_L} CE + η_c · F̂_L ⊙ (θ_L − θ⁰_L)
    F_L ← β·F_L + (1 − β)·(1/B) Σ_i (∇_{θ_L} log p(y_i | x_i))²     (F_L starts at F̂_L)
    θ_L ← θ_L − lr · g / (F_L + λ)

F̂ is the diagonal empirical Fisher of the input model on the whole clean subset (no
augmentation) and θ⁰ the input weights; the sum over j is over the layer's parameters
(the others do not move, so their terms are constant). Per-sample gradients come from
torch.func (vmap ∘ grad), and the batch gradient of CE is their mean. The whole network
runs in eval mode: BatchNorm statistics stay fixed, so nothing outside the layer
changes. Batches are augmented clean images.

No code or full text of the method is public; everything beyond "natural gradient on
one layer, plus a Fisher-based clean-distribution regulariser" is this module's choice:
diagonal (not K-FAC) empirical Fisher, running average with β = ``fisher_decay`` 0.95,
Tikhonov damping λ = ``damping``, no momentum, constant rate, the final linear layer by
default (``layer=None``: the model's last ``nn.Linear``), and the defaults below, which
were set on the digits benchmark (``benchmarks/defense_check.py``), not taken from the paper.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import torch
from torch import Tensor, nn

from bench.core.data import ImageSet
from bench.core.params import BenchOwn, ParamError, Params, Range
from bench.core.registry import DEFENSES
from bench.core.train import BatchLoss, TrainConfig, epochs_covering, train
from bench.core.modes import eval_mode
from defenses._fisher import (
    ParamDict,
    ParamFn,
    cda_penalty,
    check_finite,
    diagonal_fisher,
    module_fn,
    per_sample_grads_and_log_likelihood,
)
from defenses.base import Defense, DefenseContext, DefenseOutput


_DIGITS = "no authoritative public code; set on digits (benchmarks/defense_check.py)"


@dataclass(frozen=True)
class NGFParams(Params):
    smoke = {"iterations": 3, "batch_size": 8}

    layer: Annotated[str | None, BenchOwn("no authoritative public code; the final linear layer, this module's choice")] = None
    """parameter-name prefix of the tuned layer, e.g. "net.16"; None: the model's last nn.Linear"""
    iterations: Annotated[int, Range(">= 1"), BenchOwn(_DIGITS)] = 500
    """optimiser steps, rounded up to whole epochs of the clean set"""
    batch_size: Annotated[int, Range(">= 1"), BenchOwn(_DIGITS)] = 128
    """images per step"""
    lr: Annotated[float, Range("> 0"), BenchOwn(_DIGITS)] = 0.01
    """learning rate, constant"""
    damping: Annotated[float, Range("> 0"), BenchOwn(_DIGITS)] = 1e-3
    """λ added to the diagonal Fisher"""
    fisher_decay: Annotated[float, Range("[0, 1)"), BenchOwn(_DIGITS)] = 0.95
    """β of the running average of F_L"""
    cda_weight: Annotated[float, Range(">= 0"), BenchOwn(_DIGITS)] = 1.0
    """η_c, weight of the clean-distribution-aware term; 0 disables it"""

    def check(self) -> None:
        if self.layer is not None and not self.layer:
            raise ParamError("layer", "layer must be a non-empty parameter-name prefix or None")


def layer_names(model: nn.Module) -> list[str]:
    """Names of the modules that own parameters directly: the layers NGF can tune."""
    return [name for name, module in model.named_modules() if any(True for _ in module.parameters(recurse=False))]


def layer_parameters(model: nn.Module, layer: str | None) -> dict[str, nn.Parameter]:
    """The parameters under ``layer`` (a name prefix); ``None``: those of the last ``nn.Linear``."""
    if layer is None:
        linears = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
        if not linears:
            raise ValueError(f"{type(model).__name__} has no nn.Linear; name a layer, one of: {', '.join(layer_names(model))}")
        layer = linears[-1]
    chosen = {k: v for k, v in model.named_parameters() if k == layer or k.startswith(layer + ".")}
    if not chosen:
        raise ValueError(f"layer {layer!r} matches no parameter of the model; layers: {', '.join(layer_names(model))}")
    return chosen


class NaturalGradientStep:
    """One damped diagonal natural-gradient step on the parameters ``params`` of one layer."""

    def __init__(
        self,
        model: nn.Module,
        fn: ParamFn,
        params: dict[str, nn.Parameter],
        lr: float,
        damping: float,
        fisher_decay: float,
        cda_weight: float,
        anchor: ParamDict,
        clean_fisher: ParamDict,
    ) -> None:
        self.model, self.fn, self.params = model, fn, params
        self.optimizer = torch.optim.SGD(params.values(), lr=lr, momentum=0.0)
        self.damping, self.decay, self.cda_weight = damping, fisher_decay, cda_weight
        self.anchor, self.clean_fisher = anchor, clean_fisher
        self.fisher = {k: v.clone() for k, v in clean_fisher.items()}  # running F_L

    @torch.no_grad()
    def direction(self, x: Tensor, y: Tensor) -> tuple[ParamDict, Tensor]:
        """Update the running Fisher; return the preconditioned gradient (F_L + λ)⁻¹ g and the loss."""
        detached = {k: v.detach() for k, v in self.params.items()}
        grads, log_likelihood = per_sample_grads_and_log_likelihood(self.fn, detached, x, y)
        loss = -log_likelihood.mean() + cda_penalty(detached, self.anchor, self.clean_fisher, self.cda_weight)
        direction = {}
        for k, g in grads.items():
            self.fisher[k].mul_(self.decay).add_(g.pow(2).mean(0), alpha=1 - self.decay)
            gradient = -g.mean(0) + self.cda_weight * self.clean_fisher[k] * (detached[k] - self.anchor[k])
            direction[k] = gradient / (self.fisher[k] + self.damping)
        return direction, loss

    def __call__(self, x: Tensor, y: Tensor, loss: BatchLoss) -> Tensor:
        """The natural-gradient step on its own objective (the loop's loss is not used)."""
        self.model.eval()  # the shared loop sets train mode; BatchNorm statistics stay fixed here
        direction, value = self.direction(x, y)
        for k, p in self.params.items():
            p.grad = direction[k]
        self.optimizer.step()
        return value


@DEFENSES.register("ngf")
class NGF(Defense):
    Params = NGFParams

    def purify(self, model: nn.Module, clean: ImageSet, ctx: DefenseContext) -> DefenseOutput:
        p = self.params
        params = layer_parameters(model, p.layer)
        epochs = epochs_covering(p.iterations, len(clean), p.batch_size)
        cfg = TrainConfig(epochs=epochs, batch_size=p.batch_size, lr=p.lr, momentum=0.0, weight_decay=0.0, schedule="constant")
        fn = module_fn(model)
        anchor = {k: v.detach().clone() for k, v in params.items()}
        with eval_mode(model):
            clean_fisher = diagonal_fisher(fn, params, clean, p.batch_size)
        step = NaturalGradientStep(model, fn, params, p.lr, p.damping, p.fisher_decay, p.cda_weight, anchor, clean_fisher)
        with eval_mode(model):  # the step keeps the network in eval mode; its modes are restored after
            losses = train(model, clean, cfg, ctx.spec.augmentation, ctx.generator, update=step)
        for v in params.values():
            v.grad = None
        check_finite(params, losses)
        return DefenseOutput(model=model, epoch_losses=losses)
