"""Datasets, one module each, registered under their module name in ``DATASETS``.

Each module defines ``SPEC`` (a ``DatasetSpec``) and registers its loader
``(DataOptions) -> LoadedDataset``.
"""

from __future__ import annotations

import importlib
import sys

from bench.core._discover import import_submodules
from bench.core.data import DataOptions, DatasetSpec, LoadedDataset
from bench.core.registry import DATASETS

import_submodules(sys.modules[__name__])


def load_dataset(name: str, options: DataOptions) -> LoadedDataset:
    """Load the registered dataset ``name`` (train and test sets on the CPU)."""
    return DATASETS.get(name)(options)


def dataset_spec(name: str) -> DatasetSpec:
    """The spec of a registered dataset, without loading it: its module's ``SPEC``."""
    return importlib.import_module(DATASETS.get(name).__module__).SPEC
