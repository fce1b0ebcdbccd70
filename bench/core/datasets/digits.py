"""scikit-learn's bundled 8×8 handwritten digits, upscaled to 16×16: the embedded default.

1,797 real grayscale images, no download. Upscaling by 2 (bilinear) keeps the shape of
the standard triggers at a size the CPU trains in seconds. The train/test split is
fixed (stratified, 80/20, drawn once with a fixed seed), identical on every machine.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from bench.core.data import Augmentation, DataOptions, DatasetSpec, ImageSet, LoadedDataset
from bench.core.registry import DATASETS

SIZE = 16
TEST_FRACTION = 0.2
_SPLIT_SEED = 20240501  # defines the split; part of the dataset, not of any run

SPEC = DatasetSpec(
    name="digits",
    channels=1,
    size=SIZE,
    num_classes=10,
    mean=(0.3,),
    std=(0.4,),
    augmentation=Augmentation(crop_padding=2, flip=False),
    train_class_counts=(142, 146, 142, 146, 145, 146, 145, 143, 139, 144),  # of the fixed split; tested
)


def _split(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Stratified fixed split: per class, the first 20% of a fixed permutation go to test."""
    rng = np.random.default_rng(_SPLIT_SEED)
    train, test = [], []
    for cls in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == cls))
        n_test = int(round(len(members) * TEST_FRACTION))
        test.extend(members[:n_test])
        train.extend(members[n_test:])
    return np.sort(np.array(train)), np.sort(np.array(test))


@DATASETS.register("digits")
def load(options: DataOptions) -> LoadedDataset:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.from_numpy(bunch.images.astype(np.float32) / 16.0).unsqueeze(1)  # [N,1,8,8] in [0,1]
    images = F.interpolate(images, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
    x = (images.clamp(0, 1) * 255).round().to(torch.uint8)
    y = torch.from_numpy(bunch.target.astype(np.int64))
    train_idx, test_idx = _split(bunch.target)
    return LoadedDataset(
        spec=SPEC,
        train=ImageSet(x[train_idx], y[train_idx]),
        test=ImageSet(x[test_idx], y[test_idx]),
    )
