"""Shared tiny fixtures: dataset specs and image sets small enough for CPU unit tests."""

from __future__ import annotations

from typing import Callable

import pytest
import torch

from bench.core.data import Augmentation, DatasetSpec, ImageSet

pytest_plugins = ("tests.defense_fixtures",)  # spec, model and clean of the defense tests


def _spec(channels: int = 3, size: int = 8, num_classes: int = 10, augmentation: Augmentation = Augmentation()) -> DatasetSpec:
    return DatasetSpec(
        name=f"tiny{channels}x{size}",
        channels=channels,
        size=size,
        num_classes=num_classes,
        mean=(0.5,) * channels,
        std=(0.25,) * channels,
        augmentation=augmentation,
    )


def _imageset(n: int = 8, channels: int = 3, size: int = 8, num_classes: int = 10, seed: int = 0) -> ImageSet:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, channels, size, size), generator=gen, dtype=torch.uint8)
    y = torch.arange(n, dtype=torch.int64) % num_classes  # every class present when n >= num_classes
    return ImageSet(x, y[torch.randperm(n, generator=gen)])


@pytest.fixture
def make_spec() -> Callable[..., DatasetSpec]:
    """``make_spec(channels=3, size=8, num_classes=10, augmentation=Augmentation())``."""
    return _spec


@pytest.fixture
def make_imageset() -> Callable[..., ImageSet]:
    """``make_imageset(n=8, channels=3, size=8, num_classes=10, seed=0)``: random uint8 images, labels cycling over the classes."""
    return _imageset


@pytest.fixture
def tiny_spec() -> DatasetSpec:
    """3×8×8 images, 10 classes: the shape of the design's tiny tensors."""
    return _spec()


@pytest.fixture
def tiny_images() -> torch.Tensor:
    """uint8 ``[8, 3, 8, 8]`` with values in [0, 254], so a pixel set to 255 is always a change."""
    gen = torch.Generator().manual_seed(1234)
    return torch.randint(0, 255, (8, 3, 8, 8), generator=gen, dtype=torch.uint8)


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module of tiny-tensor tests (faster, and immune to a busy shared CPU); restored after.

    Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``gpu`` skip themselves where no CUDA device is visible."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
