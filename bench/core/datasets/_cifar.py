"""CIFAR-10 and CIFAR-100 through torchvision's download and checksum code, one loader for both."""

from __future__ import annotations

import numpy as np
import torch

from bench.core.datasets._cache import Archive, extract_local_archives, unavailable
from bench.core.data import DataOptions, DatasetSpec, ImageSet, LoadedDataset


def _to_imageset(split) -> ImageSet:
    x = torch.from_numpy(np.ascontiguousarray(split.data)).permute(0, 3, 1, 2).contiguous()
    return ImageSet(x, torch.as_tensor(split.targets, dtype=torch.int64))


def load_cifar(dataset_class: type, spec: DatasetSpec, options: DataOptions) -> LoadedDataset:
    """Load ``torchvision.datasets.CIFAR10`` or ``CIFAR100`` from ``options.root``.

    The extracted folder is used as it is (every file md5-checked by torchvision); else the
    archive in the root is verified and extracted, even offline; else it is downloaded when
    allowed. Anything else raises ``DatasetUnavailableError`` saying where the files go.
    """
    root = options.root
    archive = Archive(dataset_class.filename, dataset_class.tgz_md5, dataset_class.base_folder)
    try:
        extract_local_archives(root, [archive], download=options.download)
        train = dataset_class(str(root), train=True, download=options.download)
        test = dataset_class(str(root), train=False, download=False)
    except Exception as error:  # torchvision raises RuntimeError, URLError or OSError
        raise unavailable(
            spec.name,
            root,
            error,
            extracted=f"{root / dataset_class.base_folder}/",
            archive_dir=root,
            archives=[archive],
            source=dataset_class.url,
        ) from error
    return LoadedDataset(spec=spec, train=_to_imageset(train), test=_to_imageset(test))
