"""CIFAR-100 (32×32 RGB, 100 fine classes) through torchvision's download and checksum code.

Files live under ``<root>/cifar-100-python/`` (``train``, ``test``, ``meta``: torchvision's
layout, each checked against its md5), or the archive ``cifar-100-python.tar.gz`` is placed in
``<root>`` and is verified and extracted on first use, even with downloads off. Labels are the
fine labels (0–99); 50,000 training and 10,000 test images.
"""

from __future__ import annotations

from bench.core.datasets._cifar import load_cifar
from bench.core.data import Augmentation, DataOptions, DatasetSpec, LoadedDataset
from bench.core.registry import DATASETS

SPEC = DatasetSpec(
    name="cifar100",
    channels=3,
    size=32,
    num_classes=100,
    # BackdoorBench's values (utils/aggregate_block/dataset_and_transform_generate.py,
    # get_dataset_normalization; it cites them from a public gist); the table in
    # reference/backdoorbench.md leaves them blank. They are the standard published CIFAR-100 statistics.
    mean=(0.5071, 0.4865, 0.4409),
    std=(0.2673, 0.2564, 0.2762),
    augmentation=Augmentation(crop_padding=4, flip=False),  # BackdoorBench flips cifar10 only
    train_class_counts=(500,) * 100,
)


@DATASETS.register("cifar100")
def load(options: DataOptions) -> LoadedDataset:
    from torchvision.datasets import CIFAR100

    return load_cifar(CIFAR100, SPEC, options)
