"""Fixtures of the defense tests, imported by name into each module that uses them (pytest finds them there)."""

from __future__ import annotations

import pytest
import torch

from bench.core.archs import build_seeded_model
from bench.core.data import Augmentation


@pytest.fixture
def spec(make_spec):
    """3×8×8 images, 10 classes, with the crop and flip of a real dataset."""
    return make_spec(channels=3, size=8, num_classes=10, augmentation=Augmentation(crop_padding=1, flip=True))


@pytest.fixture
def model(spec):
    """A small_cnn (weights from seed 0) whose BatchNorm statistics are not at their defaults, as after training."""
    net = build_seeded_model("small_cnn", spec, 0)
    with torch.no_grad():
        net.train()
        net(torch.rand(16, 3, 8, 8, generator=torch.Generator().manual_seed(0)))
    return net


@pytest.fixture
def clean(make_imageset):
    """20 random clean images of the 10 classes."""
    return make_imageset(n=20, channels=3, size=8, num_classes=10, seed=1)
