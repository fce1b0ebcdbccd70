"""Helpers shared by the pruning, masking and distillation defenses.

Layer lookup (BatchNorms, the final linear layer, conv → BN pairs, stage-end blocks),
activation capture through forward hooks, and weight masks kept through training. Nothing here knows a
particular architecture: layers are found by module type or by tracing one forward pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from bench.core.modes import eval_mode
from bench.core.train import TrainingHooks

# ---------------------------------------------------------------- lookup by type


def batchnorms(model: nn.Module) -> list[tuple[str, _BatchNorm]]:
    """Every BatchNorm with a learnable scale γ, as ``(name, module)`` in registration order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, _BatchNorm) and m.weight is not None]


def last_linear(model: nn.Module) -> tuple[str, nn.Linear]:
    """The last ``nn.Linear`` in registration order: the classifier head of both built-in archs."""
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"{type(model).__name__} has no nn.Linear layer")
    return linears[-1]


# ---------------------------------------------------------------- activation capture


class Capture:
    """Context manager: keeps the latest output (or input) of named modules of ``model``.

    ``with Capture(model, ["net.3"]) as seen: model(x)`` leaves ``seen["net.3"]`` holding
    that module's output of the last forward pass (with its autograd graph).
    """

    def __init__(self, model: nn.Module, names: list[str], what: Literal["output", "input"] = "output") -> None:
        self.model, self.names, self.what = model, list(names), what
        self.values: dict[str, Tensor] = {}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def __enter__(self) -> dict[str, Tensor]:
        for name in self.names:
            module = self.model.get_submodule(name)
            self._handles.append(module.register_forward_hook(self._hook(name)))
        return self.values

    def _hook(self, name: str):
        def store(module: nn.Module, args: tuple, output: Tensor) -> None:
            self.values[name] = output if self.what == "output" else args[0]

        return store

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


@dataclass
class Call:
    """One module call seen by ``trace``: first tensor argument and output (``None`` when not a tensor)."""

    name: str
    module: nn.Module
    input: Tensor | None
    output: Tensor | None


@torch.no_grad()
def trace(model: nn.Module, x: Tensor) -> list[Call]:
    """Every module call of one forward pass of ``model`` on ``x``, in completion order.

    Runs in eval mode (BatchNorm statistics untouched) and restores each module's mode.
    """
    calls: list[Call] = []
    handles = []
    for name, module in model.named_modules():

        def record(m: nn.Module, args: tuple, output: object, name: str = name) -> None:
            first = args[0] if args and isinstance(args[0], Tensor) else None
            calls.append(Call(name, m, first, output if isinstance(output, Tensor) else None))

        handles.append(module.register_forward_hook(record))
    try:
        with eval_mode(model):
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    return calls


def example_input(model: nn.Module, channels: int, size: int) -> Tensor:
    """Two grey images ``[2, channels, size, size]`` on the model's device, for ``trace``."""
    device = next(model.parameters()).device
    return torch.full((2, channels, size, size), 0.5, device=device)


# ---------------------------------------------------------------- structure found by tracing


def conv_bn_pairs(model: nn.Module, x: Tensor) -> list[tuple[str, nn.Conv2d, str, _BatchNorm]]:
    """``(conv name, conv, bn name, bn)`` for every BatchNorm whose input is exactly a Conv2d's output.

    Found by data flow in one traced forward pass, not by registration order: a
    BatchNorm that normalises a sum (a residual join) is not paired with any conv.
    """
    calls = trace(model, x)
    conv_outputs = {id(c.output): c for c in calls if isinstance(c.module, nn.Conv2d) and c.output is not None}
    pairs, seen = [], set()
    for call in calls:
        if not isinstance(call.module, _BatchNorm) or call.module.weight is None or call.input is None:
            continue
        conv = conv_outputs.get(id(call.input))
        if conv is not None and conv.output is call.input and call.name not in seen:
            seen.add(call.name)
            pairs.append((conv.name, conv.module, call.name, call.module))
    return pairs


def _spatial(t: Tensor | None) -> tuple[int, int] | None:
    return tuple(t.shape[-2:]) if t is not None and t.dim() == 4 else None


def conv_blocks(model: nn.Module, x: Tensor) -> list[tuple[str, tuple[int, int]]]:
    """The network cut into conv-containing blocks: ``(name, output H×W)`` in forward order.

    A block is a maximal module that contains a Conv2d, outputs a 4-D map, and whose
    calls (its own and its descendants') see at most two spatial sizes, i.e. it changes
    resolution at most once. For PreActResNet18 these are the stem conv and the eight
    residual blocks; for small_cnn, its four convs.
    """
    calls = trace(model, x)
    sizes: dict[str, set[tuple[int, int]]] = {}
    out_size: dict[str, tuple[int, int] | None] = {}
    order: dict[str, int] = {}
    for index, call in enumerate(calls):
        out_size[call.name] = _spatial(call.output)
        order[call.name] = index
        seen = {s for s in (_spatial(call.input), _spatial(call.output)) if s is not None}
        prefix = call.name.split(".") if call.name else []
        for depth in range(len(prefix) + 1):  # the module and every ancestor
            sizes.setdefault(".".join(prefix[:depth]), set()).update(seen)

    blocks: list[str] = []

    def visit(name: str, module: nn.Module) -> None:
        if name not in order or not any(isinstance(m, nn.Conv2d) for m in module.modules()):
            return
        if out_size[name] is not None and len(sizes[name]) <= 2:
            blocks.append(name)
            return
        for child, sub in module.named_children():
            visit(f"{name}.{child}" if name else child, sub)

    visit("", model)
    blocks.sort(key=order.__getitem__)
    return [(name, out_size[name]) for name in blocks]


def stage_ends(model: nn.Module, x: Tensor, count: int = 3) -> list[str]:
    """Names of ``count`` blocks at the ends of the network's deepest resolution stages.

    Among ``conv_blocks`` with an output larger than 1×1, take the last block of each
    output resolution, deepest resolutions first; when the network has fewer than
    ``count`` resolutions, add the latest remaining blocks. Returned in forward order.
    PreActResNet18 on 32×32: the ends of stages 2, 3 and 4 (BackdoorBench's layer2/3/4).
    small_cnn on 16×16 (two conv resolutions): its 2nd, 3rd and 4th conv.
    """
    blocks = [(name, size) for name, size in conv_blocks(model, x) if size[0] * size[1] > 1]
    last_of_size: dict[tuple[int, int], str] = {}
    for name, size in blocks:
        last_of_size[size] = name
    position = {name: i for i, (name, _) in enumerate(blocks)}
    chosen = sorted(last_of_size.values(), key=position.__getitem__)[-count:]
    for name, _ in reversed(blocks):
        if len(chosen) >= count:
            break
        if name not in chosen:
            chosen.append(name)
    return sorted(chosen, key=position.__getitem__)


# ---------------------------------------------------------------- masks kept through training


class KeepMasked(TrainingHooks):
    """Training hooks that re-apply fixed 0/1 masks to parameters after every step.

    Pruned weights stay exactly zero while the rest fine-tunes; the model's layout is unchanged.
    """

    def __init__(self, masks: dict[nn.Parameter, Tensor]) -> None:
        self.masks = masks

    def after_step(self, step: int) -> None:
        apply_masks(self.masks)


@torch.no_grad()
def apply_masks(masks: dict[nn.Parameter, Tensor]) -> None:
    """Multiply each parameter in place by its mask."""
    for param, mask in masks.items():
        param.mul_(mask)
