"""Fisher-information pieces shared by FIP, Fast FIP and NGF.

A model is seen as a function ``fn(params, x) -> logits`` of a dict of trainable
tensors (``ParamFn``), so the same loss terms serve the ordinary weights (FIP, NGF)
and a reparametrisation of them (Fast FIP's spectral shifts).

- ``per_sample_grads``: ∇_θ log p(y_i | x_i) for every sample i (torch.func vmap ∘ grad),
  differentiable w.r.t. θ, so a loss built from it can be back-propagated (double backward).
- ``fisher_trace``: T(θ) = (1/B) Σ_i ‖∇_θ log p(y_i | x_i)‖², an unbiased estimate of the
  trace of the empirical Fisher on the batch.
- ``diagonal_fisher``: F̂_j = (1/N) Σ_i (∂_j log p(y_i | x_i))² over a whole data set.
- ``relative_trace_weight``: the weight of T(θ) relative to the input model's trace Tr(F̂⁰).
- ``cda_penalty``: (w/2) Σ_j F̂_j (θ_j − θ⁰_j)², the clean-distribution-aware (EWC) term.

Per-sample gradients need BatchNorm in eval mode (running statistics): in train mode
the samples of a batch are coupled and a per-sample gradient is not defined, and
``vmap`` cannot update running statistics. Callers wrap them in ``bench.core.modes.eval_mode``.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, grad_and_value, vmap

from bench.core.device import autocast
from bench.core.modes import eval_mode
from bench.core.data import ImageSet, to_float
from bench.core.train import BatchLoss, TrainingDiverged

ParamDict = dict[str, Tensor]
ParamFn = Callable[[ParamDict, Tensor], Tensor]  # (params, x [B, C, H, W] in [0, 1]) -> logits [B, K]


def module_fn(model: nn.Module) -> ParamFn:
    """``model`` as a function of (some of) its parameters; the others and the buffers are the module's own."""

    def fn(params: ParamDict, x: Tensor) -> Tensor:
        return functional_call(model, params, (x,))

    return fn


def _per_sample(fn: ParamFn, with_value: bool):
    def log_likelihood(params: ParamDict, x: Tensor, y: Tensor) -> Tensor:
        return -F.cross_entropy(fn(params, x.unsqueeze(0)), y.unsqueeze(0))

    return vmap((grad_and_value if with_value else grad)(log_likelihood), in_dims=(None, 0, 0))


def per_sample_grads(fn: ParamFn, params: ParamDict, x: Tensor, y: Tensor) -> ParamDict:
    """``{name: [B, *shape]}``: the gradient of log p(y_i | x_i) w.r.t. each parameter, per sample.

    The result stays attached to ``params``' autograd graph when they require grad.
    """
    return _per_sample(fn, with_value=False)(params, x, y)


def per_sample_grads_and_log_likelihood(fn: ParamFn, params: ParamDict, x: Tensor, y: Tensor) -> tuple[ParamDict, Tensor]:
    """``per_sample_grads`` and log p(y_i | x_i) ``[B]`` from the same passes."""
    return _per_sample(fn, with_value=True)(params, x, y)


def fisher_trace(fn: ParamFn, params: ParamDict, x: Tensor, y: Tensor) -> Tensor:
    """T(θ) = (1/B) Σ_i ‖∇_θ log p(y_i | x_i)‖² (a scalar, differentiable w.r.t. ``params``)."""
    grads = per_sample_grads(fn, params, x, y)
    return sum(g.pow(2).flatten(1).sum(1) for g in grads.values()).mean()


@torch.no_grad()
def diagonal_fisher(fn: ParamFn, params: ParamDict, data: ImageSet, batch_size: int) -> ParamDict:
    """F̂ = (1/N) Σ_i (∇_θ log p(y_i | x_i))², elementwise, over every image of ``data`` (no augmentation)."""
    detached = {k: v.detach() for k, v in params.items()}
    total = {k: torch.zeros_like(v) for k, v in detached.items()}
    for start in range(0, len(data), batch_size):
        x = to_float(data.x[start : start + batch_size])
        grads = per_sample_grads(fn, detached, x, data.y[start : start + batch_size])
        for k, g in grads.items():
            total[k] += g.pow(2).sum(0)
    return {k: v / max(len(data), 1) for k, v in total.items()}


def relative_trace_weight(weight: float, fisher: ParamDict) -> float:
    """``weight / Tr(F̂⁰)``: the weight that makes ``weight · T(θ) / T(θ⁰)`` of the absolute trace term.

    ``Tr(F̂⁰) = Σ_j F̂_j`` is the input model's Fisher trace on the clean set (the sum of
    its diagonal Fisher). A model with zero clean gradients has no trace to scale by: 0.
    """
    total = float(sum(v.sum() for v in fisher.values()))
    return weight / total if total > 0 and math.isfinite(total) else 0.0


def cda_penalty(params: ParamDict, anchor: ParamDict, fisher: ParamDict, weight: float) -> Tensor:
    """(weight / 2) Σ_j F̂_j (θ_j − θ⁰_j)² over the tensors of ``params``."""
    return 0.5 * weight * sum((fisher[k] * (p - anchor[k]).pow(2)).sum() for k, p in params.items())


class FisherStep:
    """One step on CE + η_F·T(θ) (every ``trace_every``-th step, from the first) + CDA penalty.

    ``params`` are the trainable tensors (leaves the optimiser owns) and ``fn`` the model
    as a function of them. The cross-entropy forward runs in the model's current mode
    (train: BatchNorm on batch statistics, running statistics updated); the trace term
    in eval mode (see the module docstring). With ``max_grad_norm`` the gradient is
    rescaled to that global L2 norm when it is longer (``inf``: never). Returns the
    total loss of the batch. The objective is this step's own: the loop's loss is not used.
    """

    def __init__(
        self,
        model: nn.Module,
        fn: ParamFn,
        params: ParamDict,
        optimizer: torch.optim.Optimizer,
        reg_F: float,
        trace_every: int,
        cda_weight: float,
        anchor: ParamDict,
        fisher: ParamDict,
        max_grad_norm: float = math.inf,
    ) -> None:
        self.model, self.fn, self.params, self.optimizer = model, fn, params, optimizer
        self.reg_F, self.trace_every, self.cda_weight = reg_F, trace_every, cda_weight
        self.anchor, self.fisher, self.max_grad_norm = anchor, fisher, max_grad_norm
        self.steps = 0

    def loss(self, x: Tensor, y: Tensor) -> Tensor:
        with autocast(x.device):
            loss = F.cross_entropy(self.fn(self.params, x), y)
        if self.reg_F > 0 and self.steps % self.trace_every == 0:
            with eval_mode(self.model):
                loss = loss + self.reg_F * fisher_trace(self.fn, self.params, x, y)
        if self.cda_weight > 0:
            loss = loss + cda_penalty(self.params, self.anchor, self.fisher, self.cda_weight)
        return loss

    def __call__(self, x: Tensor, y: Tensor, loss: BatchLoss) -> Tensor:
        total = self.loss(x, y)
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        if math.isfinite(self.max_grad_norm):
            torch.nn.utils.clip_grad_norm_(list(self.params.values()), self.max_grad_norm)
        self.optimizer.step()
        self.steps += 1
        return total.detach()


def check_finite(tensors: ParamDict, losses: list[float]) -> None:
    """Raise ``TrainingDiverged`` when a trained tensor holds NaN or ±inf (a last step can diverge unseen)."""
    if not all(torch.isfinite(t).all() for t in tensors.values()):
        raise TrainingDiverged(max(len(losses) - 1, 0), losses)
