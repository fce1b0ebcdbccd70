"""TrojanNN (Liu et al., NDSS 2018): a patch trigger optimised to excite chosen internal neurons.

Trigger generation, against a clean surrogate (``attacks._surrogate``) trained in
``prepare``:

1. *Neuron selection*: the layer is the input of the surrogate's last ``nn.Linear``
   (its penultimate features); the ``neurons`` features with the largest summed
   absolute weight to the outputs, ``argsort(Σ_o |W[o, j]|)``, are the ones most tightly
   connected to the decision (BackdoorBench's ``get_most_connected_neuron_idxes``, as
   TrojanZoo).
2. *Trigger optimisation*: the trigger is a square patch mask ``M`` (``patch_size`` px at
   32×32, scaled with the side and rounded up, bottom-right corner, all channels) with
   pixel values ``t``, started uniform in [0, 1] (from the attack's generator). On a
   black canvas carrying only the patch, ``M ⊙ t``, ``steps`` signed-gradient steps
   ``t ← clip(t − step · sign ∇_t Σ_j (h_j(M ⊙ t) − target_value)², 0, 1)`` drive the
   selected features ``h_j`` towards ``target_value`` (in practice: as high as they go).

Poisoning (dirty-label) and test time stamp the patch: ``x' = (1 − M) ⊙ x + M ⊙ t``
(``t`` rounded to uint8). ``t`` is the state (``state_dict``: ``pattern`` uint8
``[C, H, W]``, zero outside the patch); until ``prepare`` or ``load_state_dict`` it is
a black patch.

BackdoorBench defaults (``config/attack/trojannn/*.yaml``): the last linear layer's
input, 2 neurons, target value 100, 1000 iterations of step 0.1.

Deviations: BackdoorBench's mask is an image file (``apple4.png``, an Apple logo) whose
own pixels start the optimisation, bounded to ±0.3 around them; there is no resource
file here, so the mask is a square (one of the paper's trigger shapes) started at
random, unbounded within [0, 1] as in the paper. BackdoorBench adds the trigger image to
the poisoned image (in uint8 arithmetic that wraps around); here the patch replaces the
pixels under the mask, as the paper stamps its trigger. The surrogate is a clean model
the attack trains itself (``surrogate_arch``, ``surrogate_epochs``), not a downloaded
checkpoint of the victim's architecture. The paper's model retraining on
reverse-engineered data is replaced, as in BackdoorBench, by ordinary data poisoning.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated

import torch
from torch import Tensor, nn

from attacks._generators import child_generator
from attacks._surrogate import check_surrogate_arch, train_surrogate
from attacks.base import Attack, AttackContext
from bench.core.data import DatasetSpec, LoadedDataset, to_uint8
from bench.core.params import BackdoorBench, BenchOwn, Params, Range
from bench.core.registry import ATTACKS


_TROJANNN = "config/attack/trojannn/preactresnet18.yaml"
_SURROGATE = "a clean model the attack trains itself (cheap); BackdoorBench loads a clean checkpoint of the victim's architecture"


@dataclass(frozen=True)
class TrojanNNParams(Params):
    smoke = {"steps": 2, "surrogate_epochs": 1}

    patch_size: Annotated[int, Range("[1, 32]"), BenchOwn("a square, not BackdoorBench's apple4.png mask (not shipped)")] = 8
    """side of the square trigger at 32×32, in pixels (about 6% of the image)"""
    neurons: Annotated[int, Range(">= 1"), BackdoorBench(f"{_TROJANNN}: num_neuron")] = 2
    """features of the selected layer that the trigger excites"""
    target_value: Annotated[float, Range("any"), BackdoorBench(f"{_TROJANNN}: neuron_target_values")] = 100.0
    """value the selected features are driven to"""
    steps: Annotated[int, Range(">= 0"), BackdoorBench(f"{_TROJANNN}: mask_update_iters")] = 1000
    """signed-gradient iterations of the trigger optimisation"""
    step: Annotated[float, Range("> 0"), BackdoorBench("attack/trojannn.py: pgd_with_mask_to_selected_neuron's alpha")] = 0.1
    """their step size, in [0, 1] pixel units"""
    surrogate_arch: Annotated[str, BenchOwn(_SURROGATE)] = "small_cnn"
    """the clean model whose neurons are excited"""
    surrogate_epochs: Annotated[int, Range(">= 0"), BenchOwn(_SURROGATE)] = 5
    """its training epochs on the clean training set"""

    def check(self) -> None:
        check_surrogate_arch(self.surrogate_arch)


def last_linear(model: nn.Module) -> nn.Linear:
    """The last ``nn.Linear`` among ``model.modules()`` (the classifier head)."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"trojannn: the surrogate {type(model).__name__} has no nn.Linear layer to select neurons in")
    return linears[-1]


def most_connected(layer: nn.Linear, count: int) -> Tensor:
    """Indices int64 ``[count]`` of the layer's inputs with the largest ``Σ_o |W[o, j]|``, largest first."""
    if count > layer.in_features:
        raise ValueError(f"trojannn: neurons={count} but the selected layer has {layer.in_features} inputs")
    return layer.weight.detach().abs().sum(0).argsort(descending=True)[:count]


class _Features:
    """Records the input of ``layer`` at each forward pass."""

    def __init__(self, layer: nn.Module) -> None:
        self.value: Tensor | None = None
        self.handle = layer.register_forward_hook(self._keep)

    def _keep(self, module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        self.value = inputs[0]


def excite(
    model: nn.Module, mask: Tensor, init: Tensor, neurons: Tensor, target_value: float, steps: int, step: float
) -> Tensor:
    """The patch values float ``[1, C, H, W]`` in [0, 1] after ``steps`` signed steps on ``Σ_j (h_j(mask ⊙ t) − v)²``."""
    layer = last_linear(model)
    features = _Features(layer)
    try:
        t = init.clone()
        for _ in range(steps):
            t.requires_grad_(True)
            model(mask * t)
            assert features.value is not None
            cost = (features.value[:, neurons] - target_value).pow(2).sum()
            (grad,) = torch.autograd.grad(cost, t)
            with torch.no_grad():
                t = (t - step * grad.sign() * mask).clamp_(0, 1)
        return t.detach()
    finally:
        features.handle.remove()


@ATTACKS.register("trojannn")
class TrojanNN(Attack):
    Params = TrojanNNParams

    def __init__(self, params: TrojanNNParams, spec: DatasetSpec) -> None:
        super().__init__(params, spec)
        side = max(1, math.ceil(params.patch_size * spec.size / 32))
        self.mask = torch.zeros(1, 1, spec.size, spec.size)
        self.mask[..., spec.size - side :, spec.size - side :] = 1  # [1, 1, H, W] in {0, 1}
        self.pattern = torch.zeros(spec.channels, spec.size, spec.size, dtype=torch.uint8)  # black until prepared
        self.neurons: Tensor | None = None  # the selected features, after prepare

    def apply(self, x: Tensor) -> Tensor:
        mask = self.mask[0].bool().to(x.device)
        return torch.where(mask, self.pattern.to(x.device), x)

    def prepare(self, data: LoadedDataset, ctx: AttackContext) -> None:
        """Train the surrogate, select its neurons and optimise the patch (all from children of ``ctx.generator``)."""
        p = self.params
        surrogate = train_surrogate(data, p.surrogate_arch, p.surrogate_epochs, child_generator(ctx.generator), ctx.device)
        self.neurons = most_connected(last_linear(surrogate), p.neurons)
        shape = (1, self.spec.channels, self.spec.size, self.spec.size)
        init = torch.rand(shape, generator=child_generator(ctx.generator)).to(ctx.device)
        mask = self.mask.to(ctx.device)
        t = excite(surrogate, mask, init, self.neurons.to(ctx.device), p.target_value, p.steps, p.step)
        self.pattern = to_uint8(mask * t)[0].cpu()

    def state_dict(self) -> dict[str, Tensor]:
        return {"pattern": self.pattern.clone()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        if set(state) != {"pattern"}:
            raise ValueError(f"trojannn: expected the state key 'pattern', got {sorted(state)}")
        pattern = state["pattern"]
        if pattern.shape != self.pattern.shape or pattern.dtype != torch.uint8:
            raise ValueError(f"trojannn: pattern must be uint8 {tuple(self.pattern.shape)}, got {pattern.dtype} {tuple(pattern.shape)}")
        self.pattern = pattern.clone().cpu()
