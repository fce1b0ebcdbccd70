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
from bench.core.registry import ARCHS
from bench.core.train import GradientStep, TrainConfig, Update, sgd, train

SURROGATE_BATCH_SIZE = 128
SURROGATE_LR = 0.05  # peak SGD rate (cosine), momentum 0.9, weight decay 5e-4


def check_surrogate(arch: str, epochs: int, adversarial_eps: float = 0.0) -> None:
    """Raise ``ValueError`` for an unknown architecture, a negative epoch count or an ``adversarial_eps`` outside [0, 1]."""
    if arch not in ARCHS.names():
        raise ValueError(f"surrogate_arch must be a registered architecture ({', '.join(ARCHS.names())}), got {arch!r}")
    if epochs < 0:
        raise ValueError(f"surrogate_epochs must be >= 0, got {epochs}")
    if not 0.0 <= adversarial_eps <= 1.0:
        raise ValueError(f"surrogate_adversarial_eps must be in [0, 1], got {adversarial_eps}")


class FastAdversarialStep:
    """An ``Update`` that trains on FGSM examples with a random start (Wong et al., 2020, "Fast is better than free").

    Per batch: ``δ ~ U(−eps, eps)`` (drawn from ``gen``), ``δ ← clip(δ + 1.25 · eps ·
    sign ∇_δ CE(f(clip(x + δ)), y), −eps, eps)``, then the inner step on ``clip(x + δ, 0, 1)``.
    """

    def __init__(self, inner: GradientStep, eps: float, gen: torch.Generator) -> None:
        self.inner, self.eps, self.gen = inner, eps, gen
        self.optimizer = inner.optimizer

    def __call__(self, x: Tensor, y: Tensor) -> Tensor:
        delta = (torch.rand(x.shape, generator=self.gen) * 2 - 1).mul_(self.eps).to(x.device).requires_grad_(True)
        loss = F.cross_entropy(self.inner.model((x + delta).clamp(0, 1)), y)
        (grad,) = torch.autograd.grad(loss, delta)
        delta = (delta.detach() + 1.25 * self.eps * grad.sign()).clamp_(-self.eps, self.eps)
        return self.inner((x + delta).clamp_(0, 1), y)


def train_surrogate(
    data: LoadedDataset, arch: str, epochs: int, gen: torch.Generator, device: torch.device, adversarial_eps: float = 0.0
) -> nn.Module:
    """A ``arch`` classifier trained ``epochs`` epochs on ``data.train`` (0: left untrained), on ``device``.

    With ``adversarial_eps`` > 0 it is trained adversarially (``FastAdversarialStep``, L∞
    radius ``adversarial_eps`` in [0, 1] pixel units), at about twice the cost.
    Draws only from ``gen`` (the global RNG is restored after the weight initialisation).
    Returns the model in eval mode with ``requires_grad`` off: float ``[N, C, H, W]`` in
    [0, 1] → logits ``[N, K]``.
    """
    seed = int(torch.randint(0, 2**62, (1,), generator=gen))
    model = build_seeded_model(arch, data.spec, seed).to(device)
    if epochs > 0:
        cfg = TrainConfig(epochs=epochs, batch_size=SURROGATE_BATCH_SIZE, lr=SURROGATE_LR)
        update: Update = GradientStep(model, sgd(model, cfg))
        if adversarial_eps > 0:
            update = FastAdversarialStep(update, adversarial_eps, gen)
        train(model, data.train.to(device), cfg, data.spec.augmentation, gen, update)
    return model.eval().requires_grad_(False)


def surrogate_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def predict_surrogate(model: nn.Module, x: Tensor, chunk: int = 512) -> Tensor:
    """Predicted labels int64 ``[N]`` (on ``x``'s device) for float images ``x`` in [0, 1]."""
    device = surrogate_device(model)
    parts = [model(x[i : i + chunk].to(device)).argmax(1).to(x.device) for i in range(0, len(x), chunk)]
    return torch.cat(parts) if parts else torch.empty(0, dtype=torch.int64, device=x.device)
