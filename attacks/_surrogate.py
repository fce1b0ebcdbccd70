"""A clean surrogate classifier that an attack trains for itself (LC, TrojanNN, LF).

These attacks optimise their trigger or their poisons against a classifier of the
task: BackdoorBench loads a pre-trained checkpoint from ``resource/`` (LC: an
adversarially trained ResNet-18; TrojanNN: a clean model of the victim's
architecture; LF: a clean PreAct-ResNet-18). Here the attack trains its own clean
surrogate on the clean training set in ``prepare``, through the shared loop
(``bench.core.train.train``, the dataset's augmentation), reproducibly from a generator:
weights are initialised inside a forked RNG scope seeded from it (as the attack stage
builds its model), and batches and augmentation draw from it. The architecture is an
attack parameter (default ``small_cnn``, cheap on a CPU); the attack does not know the
victim's architecture, so the surrogate is a stand-in for it (a transfer setting).

The surrogate takes float images in [0, 1] (it normalises itself, as every model built
by ``bench.core.archs.build_model``) and comes back in eval mode with gradients off for its
parameters, so attacks differentiate through it with respect to their inputs only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bench.core.archs import build_seeded_model
from bench.core.data import LoadedDataset
from bench.core.params import ParamError
from bench.core.registry import ARCHS
from bench.core.train import PLAIN, TrainConfig, TrainingHooks, train

SURROGATE_BATCH_SIZE = 128
SURROGATE_LR = 0.05  # peak SGD rate (cosine), momentum 0.9, weight decay 5e-4


def check_surrogate_arch(arch: str) -> None:
    """Raise ``ParamError`` on ``surrogate_arch`` unless ``arch`` is a registered architecture."""
    if arch not in ARCHS.names():
        known = ", ".join(ARCHS.names())
        raise ParamError("surrogate_arch", f"surrogate_arch must be a registered architecture ({known}), got {arch!r}")


class FastAdversarial(TrainingHooks):
    """Training hooks that train on FGSM examples with a random start (Wong et al., 2020, "Fast is better than free").

    Per batch: ``δ ~ U(−eps, eps)`` (drawn from ``gen``), ``δ ← clip(δ + 1.25 · eps ·
    sign ∇_δ CE(f(clip(x + δ)), y), −eps, eps)``; the update trains on ``clip(x + δ, 0, 1)``.
    """

    def __init__(self, model: nn.Module, eps: float, gen: torch.Generator) -> None:
        self.model, self.eps, self.gen = model, eps, gen

    def poison_batch(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        delta = (torch.rand(x.shape, generator=self.gen) * 2 - 1).mul_(self.eps).to(x.device).requires_grad_(True)
        loss = F.cross_entropy(self.model((x + delta).clamp(0, 1)), y)
        (grad,) = torch.autograd.grad(loss, delta)
        delta = (delta.detach() + 1.25 * self.eps * grad.sign()).clamp_(-self.eps, self.eps)
        return (x + delta).clamp_(0, 1), y


def train_surrogate(
    data: LoadedDataset, arch: str, epochs: int, gen: torch.Generator, device: torch.device, adversarial_eps: float = 0.0
) -> nn.Module:
    """A ``arch`` classifier trained ``epochs`` epochs on ``data.train`` (0: left untrained), on ``device``.

    With ``adversarial_eps`` > 0 it is trained adversarially (``FastAdversarial``, L∞
    radius ``adversarial_eps`` in [0, 1] pixel units), at about twice the cost.
    Draws only from ``gen`` (the global RNG is restored after the weight initialisation).
    Returns the model in eval mode with ``requires_grad`` off: float ``[N, C, H, W]`` in
    [0, 1] → logits ``[N, K]``.
    """
    seed = int(torch.randint(0, 2**62, (1,), generator=gen))
    model = build_seeded_model(arch, data.spec, seed).to(device)
    if epochs > 0:
        cfg = TrainConfig(epochs=epochs, batch_size=SURROGATE_BATCH_SIZE, lr=SURROGATE_LR)
        hooks = FastAdversarial(model, adversarial_eps, gen) if adversarial_eps > 0 else PLAIN
        train(model, data.train.to(device), cfg, data.spec.augmentation, gen, hooks=hooks)
    return model.eval().requires_grad_(False)


def surrogate_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device
