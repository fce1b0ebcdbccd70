"""Datasets, one module each, registered under their module name in ``DATASETS``."""

from __future__ import annotations

import sys

from bench._discover import import_submodules
from bench.imageset import DataOptions, LoadedDataset
from bench.registry import DATASETS

import_submodules(sys.modules[__name__])


def load_dataset(name: str, options: DataOptions) -> LoadedDataset:
    """Load the registered dataset ``name`` (train and test sets on the CPU)."""
    return DATASETS.get(name)(options)
