"""FIP, Fisher-information purification (Karim et al., ACM CCS 2024, arXiv 2409.00863).

Fine-tunes all parameters on the clean subset, pulling the model to a smooth minimum:

    L(θ) = CE(f_θ(x), y)
         + η_F · T(θ) / Tr(F̂)                           on every ``trace_every``-th batch
         + (w/2) · Σ_j F̂_j (θ_j − θ⁰_j)²               (clean-distribution-aware, CDA)

with T(θ) = (1/B) Σ_i ‖∇_θ log p(y_i | x_i)‖², the trace of the empirical Fisher on the
batch (per-sample gradients by torch.func, BatchNorm on running statistics), θ⁰ the
input weights and F̂ the diagonal empirical Fisher of the input model on the clean
subset, (1/N) Σ_i (∂_j log p(y_i | x_i))², computed once before training (no
augmentation, eval mode); its sum Tr(F̂) = Σ_j F̂_j is the input model's Fisher trace on
the clean subset, so η_F weighs the trace relative to where it starts. SGD at a constant
rate on augmented clean batches.

Defaults are the public code's (``FIPR:src/Remove_Backdoor_FIP.py``, ``Regularizer.py``):
2000 iterations, batch 128, SGD lr 0.005, momentum 0.95, no weight decay, trace every 5
iterations, CDA weight 5; except η_F and the clipping (see below).

Deviations from the public code:
- Its "trace" is mean over 20 Gaussian v of ⟨∇ mean log p, v⟩, whose expectation is 0,
  and it reads ``log_softmax(out)[:, target]``, a B×B matrix, instead of each sample's
  own label. Here T is the per-sample estimate of Tr(F) above.
- Its η_F (0.5) weighs that zero-mean term; a real trace is large and model-dependent
  (about 160–230 for the digits small_cnn at a clean loss of 0.05), and at η_F = 0.5 it
  dominates the loss: the network collapses to one class (10–17% accuracy) or diverges.
  Here T is divided by the input model's clean trace, so η_F is scale-free.
- Each step's gradient is clipped to the global L2 norm ``max_grad_norm`` (the public code
  does not clip). The trace's gradient is heavy-tailed: on a few batches it is large
  enough to throw the network into a region of dead units it does not leave (accuracy
  10%), on a seed-dependent fraction of runs. Clipped at 20 (η_F 0.15), none of the
  validation grid's twelve runs collapsed; clipped at 1, 5 or 10 the backdoor stays.
- Defaults η_F 0.15 and ``max_grad_norm`` 20 were set on digits (small_cnn, BadNets and
  Blended at 10% poison, batch 16, three seeds, ``grids/digits_defenses.yaml``): at 5% clean
  data mean ASR 1.1% and 6.1% at clean-accuracy drops of 3.3 and 2.4 points, no run below
  90% accuracy; η_F 0.2 collapsed one of the six runs, and a clip of 10 left ASR at 15–58%.
- Its CDA term is commented out; here it is on, with weight ``cda_weight`` (0 turns it off).
- Its F̂ is the square of the gradient of the batch-mean log-likelihood (same B×B
  indexing, train mode, so the pass also moves the BatchNorm statistics); here F̂ is the
  mean of squared per-sample gradients, in eval mode.
- Batches are drawn without replacement, one permutation per epoch (the shared training
  loop), and ``iterations`` is rounded up to whole epochs; the public code samples with
  replacement. With a clean set smaller than ``batch_size`` a batch is the whole set.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from torch import nn

from bench.core.data import ImageSet
from bench.core.params import AuthorsCode, BenchOwn, Params, Range
from bench.core.registry import DEFENSES
from bench.core.train import TrainConfig, epochs_covering, sgd, train
from bench.core.modes import eval_mode
from defenses._fisher import (
    FisherStep,
    check_finite,
    diagonal_fisher,
    module_fn,
    relative_trace_weight,
)
from defenses.base import Defense, DefenseContext, DefenseOutput


_SCRIPT = "nazmul-karim170/FIP src/Remove_Backdoor_FIP.py"
_REG = "nazmul-karim170/FIP src/Regularizer.py"


@dataclass(frozen=True)
class FIPParams(Params):
    smoke = {"iterations": 3, "batch_size": 8}

    iterations: Annotated[int, Range(">= 1"), AuthorsCode(f"{_SCRIPT}: --nb-epochs")] = 2000
    """optimiser steps, rounded up to whole epochs of the clean set"""
    batch_size: Annotated[int, Range(">= 1"), AuthorsCode(f"{_SCRIPT}: --batch-size")] = 128
    """images per step"""
    lr: Annotated[float, Range("> 0"), AuthorsCode(f"{_SCRIPT}: --lr")] = 0.005
    """learning rate, constant"""
    momentum: Annotated[float, Range("[0, 1)"), AuthorsCode(f"{_REG}: SGD momentum")] = 0.95
    """SGD momentum"""
    weight_decay: Annotated[float, Range(">= 0"), AuthorsCode(f"{_REG}: SGD without weight decay")] = 0.0
    """SGD weight decay (L2)"""
    reg_F: Annotated[float, Range(">= 0"), BenchOwn("set on digits; the public 0.5 weighs a zero-mean term")] = 0.15
    """η_F, weight of the Fisher-trace term relative to the input model's clean trace"""
    trace_every: Annotated[int, Range(">= 1"), AuthorsCode(f"{_REG}: iter_gap")] = 5
    """the trace term is added on steps 0, k, 2k, ..."""
    cda_weight: Annotated[float, Range(">= 0"), AuthorsCode(f"{_REG}: weight 5 (the term is commented out there, on here)")] = 5.0
    """w in (w/2) Σ F̂ (θ − θ⁰)²; 0 disables the term"""
    max_grad_norm: Annotated[float, Range("(0, inf]"), BenchOwn("set on digits; the public code does not clip")] = 20.0
    """a step's gradient is clipped to this global L2 norm (inf: never clip)"""

    def train_config(self, n: int) -> TrainConfig:
        """Constant-rate SGD over the fewest whole epochs of ``n`` clean images that give ``iterations`` steps."""
        return TrainConfig(
            epochs=epochs_covering(self.iterations, n, self.batch_size), batch_size=self.batch_size, lr=self.lr,
            momentum=self.momentum, weight_decay=self.weight_decay, schedule="constant",
        )


@DEFENSES.register("fip")
class FIP(Defense):
    Params = FIPParams

    def purify(self, model: nn.Module, clean: ImageSet, ctx: DefenseContext) -> DefenseOutput:
        p = self.params
        cfg = p.train_config(len(clean))
        params = {k: v for k, v in model.named_parameters() if v.requires_grad}
        fn = module_fn(model)
        anchor = {k: v.detach().clone() for k, v in params.items()}
        with eval_mode(model):
            fisher = diagonal_fisher(fn, params, clean, p.batch_size) if p.reg_F > 0 or p.cda_weight > 0 else {}
        step = FisherStep(model, fn, params, sgd(model, cfg, params.values()), relative_trace_weight(p.reg_F, fisher) if fisher else 0.0, p.trace_every, p.cda_weight, anchor, fisher, p.max_grad_norm)
        losses = train(model, clean, cfg, ctx.spec.augmentation, ctx.generator, update=step)
        check_finite(params, losses)
        return DefenseOutput(model=model, epoch_losses=losses)
