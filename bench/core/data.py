"""In-memory image sets, the facts a dataset declares about itself, and the uint8 ↔ float conversion."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor


def to_float(x: Tensor) -> Tensor:
    """uint8 images → a new float32 tensor in [0, 1] (``x / 255``), the domain of models and float triggers."""
    if x.dtype != torch.uint8:
        raise TypeError(f"expected uint8 images, got {x.dtype}")
    return x.float().div_(255)


def to_uint8(x: Tensor) -> Tensor:
    """Float images in [0, 1] → uint8: ``x · 255`` rounded to nearest and clamped to [0, 255] (never wraps around)."""
    return x.mul(255).round_().clamp_(0, 255).to(torch.uint8)


@dataclass(frozen=True)
class ImageSet:
    """Images ``x: uint8 [N, C, H, W]`` with labels ``y: int64 [N]``, on one device."""

    x: Tensor
    y: Tensor

    def __post_init__(self) -> None:
        if self.x.dtype != torch.uint8 or self.x.dim() != 4:
            raise ValueError(f"x must be uint8 [N,C,H,W], got {self.x.dtype} {tuple(self.x.shape)}")
        if self.y.dtype != torch.int64 or self.y.shape != self.x.shape[:1]:
            raise ValueError(f"y must be int64 [N={self.x.shape[0]}], got {self.y.dtype} {tuple(self.y.shape)}")

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def subset(self, index: Tensor) -> "ImageSet":
        return ImageSet(self.x[index], self.y[index])

    def to(self, device: torch.device | str) -> "ImageSet":
        return ImageSet(self.x.to(device), self.y.to(device))


@dataclass(frozen=True)
class Augmentation:
    """Training-time augmentation: random crop after zero padding, optional horizontal flip."""

    crop_padding: int = 0
    flip: bool = False


@dataclass(frozen=True)
class DatasetSpec:
    """Shape, classes and normalisation of a dataset. ``mean``/``std`` are per channel, in [0, 1] units.

    ``train_class_counts`` (training images per class; empty when unknown) lets a grid be
    checked before anything runs, e.g. that a clean-label poison ratio can be supplied.
    """

    name: str
    channels: int
    size: int
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augmentation: Augmentation = Augmentation()
    train_class_counts: tuple[int, ...] = ()


@dataclass(frozen=True)
class LoadedDataset:
    spec: DatasetSpec
    train: ImageSet
    test: ImageSet


@dataclass(frozen=True)
class DataOptions:
    """Where datasets live on disk, and whether a missing one may be downloaded."""

    root: Path
    download: bool = True


class DatasetUnavailableError(RuntimeError):
    """A dataset is not on disk and could not be downloaded; the message says where the files go."""
