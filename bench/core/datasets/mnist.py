"""MNIST (28×28 grayscale, 10 classes) through torchvision's download and checksum code.

Files live under ``<root>/MNIST/raw/`` (torchvision's layout): the four IDX files
``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte`` and
``t10k-labels-idx1-ubyte``, or their ``.gz`` archives, which are checked against their md5
and decompressed on first use, even with downloads off. The IDX files themselves carry no
checksum (torchvision checks only the archives). 60,000 training and 10,000 test images.

Images stay 28×28, as BackdoorBench codes mnist (``get_input_shape``: 28×28×1): padding to 32
would change where a corner trigger sits relative to the digit and every count of patch pixels.
"""

from __future__ import annotations

import os

from bench.core.datasets._cache import Archive, extract_local_archives, unavailable
from bench.core.data import Augmentation, DataOptions, DatasetSpec, ImageSet, LoadedDataset
from bench.core.registry import DATASETS

SPEC = DatasetSpec(
    name="mnist",
    channels=1,
    size=28,
    num_classes=10,
    # BackdoorBench normalises mnist with mean 0.5, std 0.5 (dataset_and_transform_generate.py,
    # get_dataset_normalization); the reference table leaves it blank. (The commonly published
    # MNIST statistics are mean 0.1307, std 0.3081; we follow BackdoorBench.)
    mean=(0.5,),
    std=(0.5,),
    augmentation=Augmentation(crop_padding=4, flip=False),  # BackdoorBench: RandomCrop(28, padding=4), no flip
    # the official training set's digits 0–9 (sum 60,000)
    train_class_counts=(5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949),
)


def _to_imageset(split) -> ImageSet:
    return ImageSet(split.data.unsqueeze(1).contiguous(), split.targets.to("cpu").long())


@DATASETS.register("mnist")
def load(options: DataOptions) -> LoadedDataset:
    from torchvision.datasets import MNIST

    root = options.root
    raw = root / "MNIST" / "raw"  # MNIST.raw_folder for this root
    archives = [Archive(name, md5, os.path.splitext(name)[0]) for name, md5 in MNIST.resources]
    try:
        extract_local_archives(raw, archives, download=options.download)
        train = _to_imageset(MNIST(str(root), train=True, download=options.download))
        test = _to_imageset(MNIST(str(root), train=False, download=False))
    except Exception as error:  # torchvision raises RuntimeError, URLError, OSError or ValueError
        raise unavailable(
            "mnist",
            root,
            error,
            extracted=f"{raw}/ (the four IDX files)",
            archive_dir=raw,
            archives=archives,
            source=" or ".join(MNIST.mirrors),
        ) from error
    return LoadedDataset(spec=SPEC, train=train, test=test)
