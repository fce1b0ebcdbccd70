"""NAD, Neural Attention Distillation (Li et al., ICLR 2021): distil a fine-tuned teacher's attention.

A teacher, a copy of the backdoored model, is fine-tuned on the clean data for
``teacher_epochs``. The student, the backdoored model itself, is then trained on the
same data with CE(f(x), y) + Σ_i β_i·AT(F_i^s, F_i^t), the teacher fixed in eval mode.
AT is the mean squared difference of attention maps A(F) = a / (‖a‖₂ + 10⁻⁶) with
a = Σ_c |F_c|^p over channels and the norm over the spatial positions (Zagoruyko &
Komodakis). Teacher and student both use the FT optimiser settings with a cosine decay
over their own epochs.

Layer groups (``defenses._layers.stage_ends``): the network is cut into conv-containing
blocks, maximal modules that change resolution at most once; from each of the deepest
output resolutions (larger than 1×1) the last block is taken, three in all, filled up
with the latest remaining blocks when there are fewer resolutions. β1..β3 apply in
forward order. PreActResNet18 on CIFAR: the ends of stages 2, 3 and 4 (layer2/3/4 in
BackdoorBench's model); small_cnn on digits (two conv resolutions): its 2nd, 3rd and
4th conv outputs.

Defaults follow BackdoorBench's CIFAR-10 config as it runs: teacher 10 epochs; student
10 epochs (its student loop is handed ``te_epochs``; the config's ``epochs: 100`` is unused);
batch 256, SGD lr 0.01, momentum 0.9; β = 500/1000/1000; p = 2. Weight decay 1e-4 is the
authors' (bboylyg/NAD); BackdoorBench's yaml lists it but its optimiser uses ``wd`` 5e-4.

Deviations from the public code (BackdoorBench ``defense/nad.py``):
- For PreActResNet18 it takes the features by re-running ``nn.Sequential(children[:-k])``,
  which skips the functional steps of ``forward``; its deepest "group" is then the
  output of the global average pool, a 1×1 map whose normalised attention is always 1,
  so that term is constantly 0. Here the three maps come from forward hooks at stage
  ends of the real forward pass.
- Its teacher's cosine schedule has T_max = 100 epochs over 10 epochs of training, and
  its student runs at a constant 0.01; here both decay over their own epochs.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from typing import Annotated

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bench.core.device import autocast
from bench.core.data import ImageSet
from bench.core.params import AuthorsCode, BackdoorBench, BenchOwn, Range
from bench.core.registry import DEFENSES
from bench.core.train import TrainingHooks, train
from defenses._layers import Capture, example_input, stage_ends
from defenses.base import Defense, DefenseContext, DefenseOutput, FineTuneParams


_NAD = "config/defense/nad/cifar10.yaml"


@dataclass(frozen=True)
class NADParams(FineTuneParams):
    sources = {
        **dict.fromkeys(("batch_size", "lr", "momentum"), BackdoorBench(_NAD)),
        "schedule": BenchOwn("each run decays over its epochs; BackdoorBench: teacher T_max 100, student constant"),
    }

    smoke = {**FineTuneParams.smoke, "epochs": 2}

    epochs: Annotated[int, Range(">= 1"), BackdoorBench("defense/nad.py: its student loop runs te_epochs")] = 10
    """student passes over the clean data"""
    weight_decay: Annotated[float, Range(">= 0"), AuthorsCode("bboylyg/NAD config.py (BackdoorBench runs 5e-4)")] = 1e-4
    """SGD weight decay (L2)"""
    teacher_epochs: Annotated[int, Range(">= 1"), BackdoorBench(f"{_NAD}: te_epochs")] = 10
    """teacher fine-tuning passes over the clean data"""
    beta1: Annotated[float, Range(">= 0"), BackdoorBench(_NAD)] = 500.0
    """weight of the shallowest attention group"""
    beta2: Annotated[float, Range(">= 0"), BackdoorBench(_NAD)] = 1000.0
    """weight of the middle attention group"""
    beta3: Annotated[float, Range(">= 0"), BackdoorBench(_NAD)] = 1000.0
    """weight of the deepest attention group"""
    p: Annotated[float, Range("> 0"), BackdoorBench(_NAD)] = 2.0
    """power of |F| in the attention map"""

    @property
    def betas(self) -> tuple[float, float, float]:
        return self.beta1, self.beta2, self.beta3


def attention_map(features: Tensor, p: float, eps: float = 1e-6) -> Tensor:
    """``[N, 1, H, W]``: Σ_c |F_c|^p, divided by its L2 norm over H×W (+ eps)."""
    a = features.float().abs().pow(p).sum(dim=1, keepdim=True)
    return a / (torch.linalg.vector_norm(a, dim=(2, 3), keepdim=True) + eps)


def attention_loss(student: Tensor, teacher: Tensor, p: float) -> Tensor:
    """Mean squared difference of the two attention maps."""
    return F.mse_loss(attention_map(student, p), attention_map(teacher, p))


class Distillation(TrainingHooks):
    """NAD's loss for the student: CE plus β-weighted attention losses against the teacher.

    ``student_maps`` and ``teacher_maps`` are filled by forward hooks (``Capture``) on the layers in ``layers``.
    """

    def __init__(
        self,
        teacher: nn.Module,
        layers: list[str],
        betas: tuple[float, ...],
        p: float,
        student_maps: dict[str, Tensor],
        teacher_maps: dict[str, Tensor],
    ) -> None:
        self.teacher, self.layers, self.betas, self.p = teacher, layers, betas, p
        self.student_maps, self.teacher_maps = student_maps, teacher_maps

    def loss(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        with torch.no_grad(), autocast(x.device):
            self.teacher(x)
        with autocast(x.device):
            ce = F.cross_entropy(model(x), y)
        at = sum(
            beta * attention_loss(self.student_maps[name], self.teacher_maps[name].detach(), self.p)
            for name, beta in zip(self.layers, self.betas)
        )
        return ce.float() + at


@DEFENSES.register("nad")
class NAD(Defense):
    Params = NADParams

    def purify(self, model: nn.Module, clean: ImageSet, ctx: DefenseContext) -> DefenseOutput:
        p = self.params
        teacher_cfg = replace(p.train_config(), epochs=p.teacher_epochs)
        teacher = copy.deepcopy(model)
        train(teacher, clean, teacher_cfg, ctx.spec.augmentation, ctx.generator)
        teacher.eval()

        layers = stage_ends(model, example_input(model, ctx.spec.channels, ctx.spec.size), count=3)
        betas = p.betas[len(p.betas) - len(layers) :]  # the deepest weights when a net has fewer blocks
        cfg = p.train_config()
        with Capture(model, layers) as student_maps, Capture(teacher, layers) as teacher_maps:
            hooks = Distillation(teacher, layers, betas, p.p, student_maps, teacher_maps)
            losses = train(model, clean, cfg, ctx.spec.augmentation, ctx.generator, hooks=hooks)
        return DefenseOutput(model=model, epoch_losses=losses)
