"""Optional metrics a grid can ask for (``metrics: [mia, sharpness]``), before and after the defense.

- ``mia``: advantage of a loss-threshold membership-inference attack, max over thresholds
  of TPR − FPR, members = clean training images, non-members = test images, equal
  counts. Its change from before to after the defense is the backdoor sequela.
- ``sharpness``: largest eigenvalue of the Hessian of the clean loss at the weights, by
  power iteration on one fixed batch of clean training images (BatchNorm in eval mode).

Each is a function ``(model, probe) -> float``; the probe is drawn once per cell so
that before and after are measured on the same images.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bench.core.data import ImageSet, to_float
from bench.core.modes import eval_mode


@dataclass(frozen=True)
class Probe:
    """Fixed images for the extra metrics: members, non-members (equal counts) and a Hessian batch."""

    members: ImageSet
    non_members: ImageSet
    hessian_batch: ImageSet


def draw_probe(clean_train: ImageSet, test: ImageSet, gen: torch.Generator, size: int = 500, batch: int = 128) -> Probe:
    """``size`` members and as many non-members (fewer if a set is smaller), and a Hessian batch of ``batch``."""
    n = min(size, len(clean_train), len(test))
    members = clean_train.subset(torch.randperm(len(clean_train), generator=gen)[:n].to(clean_train.y.device))
    non_members = test.subset(torch.randperm(len(test), generator=gen)[:n].to(test.y.device))
    hessian = clean_train.subset(torch.randperm(len(clean_train), generator=gen)[:batch].to(clean_train.y.device))
    return Probe(members, non_members, hessian)


@torch.no_grad()
def per_sample_loss(model: nn.Module, data: ImageSet, batch_size: int = 512) -> Tensor:
    """Cross-entropy of each image, float32 ``[N]``, in eval mode."""
    device = next(model.parameters()).device
    with eval_mode(model):
        losses = [
            F.cross_entropy(model(to_float(x.to(device))), y.to(device), reduction="none")
            for x, y in ((data.x[i : i + batch_size], data.y[i : i + batch_size]) for i in range(0, len(data), batch_size))
        ]
    return torch.cat(losses).float().cpu()


def threshold_advantage(member_loss: Tensor, non_member_loss: Tensor) -> float:
    """max over τ of P(member loss ≤ τ) − P(non-member loss ≤ τ), in [0, 1]."""
    losses = torch.cat([member_loss, non_member_loss])
    is_member = torch.cat([torch.ones_like(member_loss), torch.zeros_like(non_member_loss)])
    order = torch.argsort(losses, stable=True)
    sorted_losses, sorted_members = losses[order], is_member[order]
    tpr = torch.cumsum(sorted_members, 0) / len(member_loss)
    fpr = torch.cumsum(1 - sorted_members, 0) / len(non_member_loss)
    last_of_tie = torch.cat([sorted_losses[1:] != sorted_losses[:-1], torch.tensor([True])])  # thresholds between values
    return max(0.0, float((tpr - fpr)[last_of_tie].max()))


def mia_advantage(model: nn.Module, probe: Probe) -> float:
    return threshold_advantage(per_sample_loss(model, probe.members), per_sample_loss(model, probe.non_members))


def top_hessian_eigenvalue(model: nn.Module, probe: Probe, iterations: int = 20, gen_seed: int = 0) -> float:
    """Largest-magnitude eigenvalue of ∇²L on ``probe.hessian_batch`` by power iteration (eval mode)."""
    with eval_mode(model):
        return _power_iteration(model, probe, iterations, gen_seed)


def _power_iteration(model: nn.Module, probe: Probe, iterations: int, gen_seed: int) -> float:
    device = next(model.parameters()).device
    params = [p for p in model.parameters() if p.requires_grad]
    x = to_float(probe.hessian_batch.x.to(device))
    loss = F.cross_entropy(model(x), probe.hessian_batch.y.to(device))
    grads = torch.autograd.grad(loss, params, create_graph=True)
    gen = torch.Generator().manual_seed(gen_seed)
    vector = [torch.randn(p.shape, generator=gen).to(device) for p in params]
    eigenvalue = 0.0
    for _ in range(iterations):
        norm = torch.sqrt(sum((v * v).sum() for v in vector))
        vector = [v / norm for v in vector]
        hvp = torch.autograd.grad(grads, params, grad_outputs=vector, retain_graph=True)
        eigenvalue = float(sum((h * v).sum() for h, v in zip(hvp, vector)))
        vector = [h.detach() for h in hvp]
    return eigenvalue


EXTRA_METRICS: dict[str, Callable[[nn.Module, Probe], float]] = {
    "mia": mia_advantage,
    "sharpness": top_hessian_eigenvalue,
}
