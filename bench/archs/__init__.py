"""Architectures, one module each, registered under their module name in ``ARCHS``.

An architecture is a factory ``(spec: DatasetSpec) -> nn.Module`` returning a network
that takes normalised float images ``[N, C, H, W]``. ``build_model`` wraps it so the
model takes pixel values in [0, 1] and normalises on the device.
"""

from __future__ import annotations

import sys

from torch import nn

from bench._discover import import_submodules
from bench.archs.base import Normalized
from bench.imageset import DatasetSpec
from bench.registry import ARCHS

import_submodules(sys.modules[__name__])


def build_model(arch: str, spec: DatasetSpec) -> nn.Module:
    """The registered ``arch`` for ``spec``: input float ``[N, C, H, W]`` in [0, 1], output logits ``[N, K]``."""
    return Normalized(ARCHS.get(arch)(spec), spec.mean, spec.std)
