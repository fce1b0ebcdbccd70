"""CIFAR-10 (32×32 RGB, 10 classes) through torchvision's download and checksum code.

Files live under ``<root>/cifar-10-batches-py/`` (torchvision's layout), or the
archive ``cifar-10-python.tar.gz`` is placed in ``<root>`` and is verified and extracted
on first use, even with downloads off.
"""

from __future__ import annotations

from bench.core.datasets._cifar import load_cifar
from bench.core.data import Augmentation, DataOptions, DatasetSpec, LoadedDataset
from bench.core.registry import DATASETS

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


@DATASETS.register("cifar10")
def load(options: DataOptions) -> LoadedDataset:
    from torchvision.datasets import CIFAR10

    return load_cifar(CIFAR10, SPEC, options)
