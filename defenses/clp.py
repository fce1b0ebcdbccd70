"""CLP, Channel Lipschitzness-based Pruning (Zheng et al., ECCV 2022): data-free.

For every convolution whose output goes straight into a BatchNorm, the upper bound of
channel k's Lipschitz constant is the spectral norm of (γ_k/σ_k)·W_k, with W_k the
conv kernel of output channel k reshaped to ``[C_in, kh·kw]`` and σ_k = √(running_var_k + ε)
the BatchNorm's scale. Channels whose bound exceeds mean + u·std of their layer
(unbiased std, as torch's default) are pruned: the BatchNorm's γ_k and β_k are set to 0,
so the channel outputs 0 and the state_dict layout is unchanged. Default u = 3
(BackdoorBench's CIFAR-10 config).

Deviations from the public code (BackdoorBench ``defense/clp.py``, from the authors'
repository): (1) conv and BatchNorm are paired by data flow, traced in one forward pass
of a grey image, not by registration order. In pre-activation ResNets the public code
pairs each block's first BatchNorm, which normalises a residual sum, with whichever
conv was registered before it; here such BatchNorms are not pruned, because no single
kernel bounds the channel. On PreActResNet18 this leaves 9 of its 17 BatchNorms in scope
(the stem's and each block's second). On plain conv→BN→ReLU nets both rules agree. (2) σ
includes the BatchNorm's ε, as the layer computes it; the public code uses √running_var.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from bench.core.data import ImageSet
from bench.core.params import BackdoorBench, Params, Range
from bench.core.registry import DEFENSES
from defenses._layers import conv_bn_pairs, example_input
from defenses.base import Defense, DefenseContext, DefenseOutput


@dataclass(frozen=True)
class CLPParams(Params):
    u: Annotated[float, Range(">= 0"), BackdoorBench("config/defense/clp/cifar10.yaml")] = 3.0
    """threshold in standard deviations above the layer's mean bound"""


@torch.no_grad()
def channel_lipschitz(conv: nn.Conv2d, bn: _BatchNorm) -> Tensor:
    """Upper bound of each output channel's Lipschitz constant through ``conv`` then ``bn``: ``[C_out]``."""
    weight = conv.weight.detach().float()
    kernels = weight.reshape(weight.shape[0], weight.shape[1], -1)  # [C_out, C_in, kh·kw]
    scale = (bn.weight.detach().float() / torch.sqrt(bn.running_var.float() + bn.eps)).abs()
    return torch.linalg.matrix_norm(kernels * scale[:, None, None], ord=2)


@torch.no_grad()
def clp_prune(model: nn.Module, x: Tensor, u: float) -> dict[str, Tensor]:
    """Prune ``model`` in place (``x``: an example input for tracing); return the pruned channels per BatchNorm."""
    pruned = {}
    for _, conv, bn_name, bn in conv_bn_pairs(model, x):
        if bn.running_var is None or bn.weight.shape[0] != conv.weight.shape[0] or bn.weight.shape[0] < 2:
            continue
        lips = channel_lipschitz(conv, bn)
        index = torch.nonzero(lips > lips.mean() + u * lips.std()).flatten()
        bn.weight[index] = 0
        bn.bias[index] = 0
        pruned[bn_name] = index
    return pruned


@DEFENSES.register("clp")
class CLP(Defense):
    Params = CLPParams
    data = "none"

    def purify(self, model: nn.Module, clean: ImageSet, ctx: DefenseContext) -> DefenseOutput:
        clp_prune(model, example_input(model, ctx.spec.channels, ctx.spec.size), self.params.u)
        return DefenseOutput(model=model)
