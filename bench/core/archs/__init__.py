"""Architectures, one module each, registered under their module name in ``ARCHS``.

An architecture is a factory ``(spec: DatasetSpec) -> nn.Module`` returning a network
that takes normalised float images ``[N, C, H, W]``. ``build_model`` wraps it so the
model takes pixel values in [0, 1] and normalises on the device. A module may declare
``HEAVY = True``: an ImageNet-scale network, slow on a CPU (``is_heavy``).
"""

from __future__ import annotations

import importlib
import sys

import torch
from torch import nn

from bench.core._discover import import_submodules
from bench.core.archs.base import Normalized
from bench.core.data import DatasetSpec
from bench.core.registry import ARCHS

import_submodules(sys.modules[__name__])


def build_model(arch: str, spec: DatasetSpec) -> nn.Module:
    """The registered ``arch`` for ``spec``: input float ``[N, C, H, W]`` in [0, 1], output logits ``[N, K]``."""
    return Normalized(ARCHS.get(arch)(spec), spec.mean, spec.std)


def build_seeded_model(arch: str, spec: DatasetSpec, seed: int) -> nn.Module:
    """``build_model`` with weights initialised from ``seed``; the global CPU RNG is left as it was.

    Weight initialisation reads the default CPU generator, so it runs inside a forked RNG
    scope seeded with ``seed`` (``seed`` in [0, 2**63)).
    """
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        return build_model(arch, spec)


def is_heavy(arch: str) -> bool:
    """Whether the registered ``arch`` declares itself ImageNet-scale (its module's ``HEAVY``)."""
    return bool(getattr(importlib.import_module(ARCHS.get(arch).__module__), "HEAVY", False))
