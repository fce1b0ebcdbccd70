"""The device a stage runs on, and its mixed-precision context."""

from __future__ import annotations

import contextlib
from typing import ContextManager

import torch


def default_device() -> torch.device:
    """CUDA when a GPU is visible (Ray sets ``CUDA_VISIBLE_DEVICES`` per trial), else the CPU."""
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def autocast(device: torch.device) -> ContextManager:
    """bf16 autocast on CUDA; plain float32 elsewhere."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def describe(device: torch.device) -> str:
    """A short human name for ``device``: ``"cpu"`` or the GPU's product name."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
