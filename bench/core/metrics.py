"""Clean accuracy, attack success rate, robust accuracy and DER; all fractions in [0, 1]."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from bench.core.device import autocast
from bench.core.modes import eval_mode
from bench.core.data import ImageSet, to_float
from bench.core.poison import BackdoorTestSet


@dataclass(frozen=True)
class Metrics:
    """``acc``: clean test accuracy; ``asr``: triggered non-target images classified as the
    backdoor label; ``ra``: the same images classified as their true label."""

    acc: float
    asr: float
    ra: float


def accuracy(pred: Tensor, labels: Tensor) -> float:
    """Fraction of ``pred == labels``; 0.0 for empty input."""
    if labels.numel() == 0:
        return 0.0
    return (pred == labels).float().mean().item()


def der(before: Metrics, after: Metrics) -> float:
    """Defense effectiveness rate: [max(0, ΔASR) − max(0, ΔACC) + 1] / 2 with Δ = before − after."""
    return (max(0.0, before.asr - after.asr) - max(0.0, before.acc - after.acc) + 1.0) / 2.0


@torch.no_grad()
def logits(model: nn.Module, x: Tensor, batch_size: int = 512) -> Tensor:
    """Logits ``[N, K]`` of ``model`` in eval mode for uint8 images ``x`` ``[N, C, H, W]``.

    On the model's device, in autocast's precision there; the training mode is restored.
    """
    device = next(model.parameters()).device
    outputs = []
    with eval_mode(model), autocast(device):
        for start in range(0, len(x), batch_size):
            outputs.append(model(to_float(x[start : start + batch_size].to(device))))
    return torch.cat(outputs) if outputs else torch.empty(0, 0, device=device)


def predict(model: nn.Module, x: Tensor, batch_size: int = 512) -> Tensor:
    """Predicted labels int64 ``[N]`` for uint8 images ``x`` ``[N, C, H, W]`` (on the model's device)."""
    out = logits(model, x, batch_size)
    return out.argmax(1) if len(out) else torch.empty(0, dtype=torch.int64, device=out.device)


def evaluate(model: nn.Module, test: ImageSet, backdoor: BackdoorTestSet) -> Metrics:
    clean_pred = predict(model, test.x)
    bd_pred = predict(model, backdoor.x)
    return Metrics(
        acc=accuracy(clean_pred, test.y.to(clean_pred.device)),
        asr=accuracy(bd_pred, backdoor.y_target.to(bd_pred.device)),
        ra=accuracy(bd_pred, backdoor.y_true.to(bd_pred.device)),
    )
