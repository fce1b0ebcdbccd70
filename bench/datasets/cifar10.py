"""CIFAR-10 (32×32 RGB, 10 classes) through torchvision's download and checksum code.

Files live under ``<root>/cifar-10-batches-py/`` (torchvision's layout), or the
archive ``cifar-10-python.tar.gz`` is placed in ``<root>`` and extracted on first use.
"""

from __future__ import annotations

import numpy as np
import torch

from bench.imageset import (
    Augmentation,
    DataOptions,
    DatasetSpec,
    DatasetUnavailableError,
    ImageSet,
    LoadedDataset,
)
from bench.registry import DATASETS

SPEC = DatasetSpec(
    name="cifar10",
    channels=3,
    size=32,
    num_classes=10,
    mean=(0.4914, 0.4822, 0.4465),
    std=(0.247, 0.243, 0.261),
    augmentation=Augmentation(crop_padding=4, flip=True),
    train_class_counts=(5000,) * 10,
)


def _to_imageset(split) -> ImageSet:
    x = torch.from_numpy(np.ascontiguousarray(split.data)).permute(0, 3, 1, 2).contiguous()
    return ImageSet(x, torch.as_tensor(split.targets, dtype=torch.int64))


@DATASETS.register("cifar10")
def load(options: DataOptions) -> LoadedDataset:
    from torchvision.datasets import CIFAR10

    root = options.root
    try:
        train = CIFAR10(str(root), train=True, download=options.download)
        test = CIFAR10(str(root), train=False, download=False)
    except Exception as error:  # torchvision raises RuntimeError, URLError or OSError
        raise DatasetUnavailableError(
            f"cifar10 is not available under {root}: {error}. "
            f"Put torchvision's extracted folder at {root / CIFAR10.base_folder}/ or the archive "
            f"{CIFAR10.filename} (from {CIFAR10.url}) in {root}/, or allow downloads."
        ) from error
    return LoadedDataset(spec=SPEC, train=_to_imageset(train), test=_to_imageset(test))
