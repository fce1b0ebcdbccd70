"""The compute layer: data, models, training, metrics and the per-cell pipeline (torch only).

This module is the layer's face: orchestration (grid, scheduling, storage, reports,
the CLI) imports only the names below, never a module of ``bench.core`` directly.
Modules inside the compute layer (``bench.core``, ``attacks``, ``defenses``) import
each other's modules, never this face, so importing it has no cycles.
"""

from bench.core.archs import is_heavy
from bench.core.artifacts import verify_artifact
from bench.core.counts import fraction_count
from bench.core.data import DataOptions, DatasetSpec, DatasetUnavailableError, LoadedDataset
from bench.core.datasets import dataset_spec, load_dataset
from bench.core.extra_metrics import EXTRA_METRICS
from bench.core.files import atomic_write
from bench.core.hashing import content_hash
from bench.core.params import Declared, ParamError, declared
from bench.core.pipeline import (
    AttackOutcome,
    AttackRecord,
    AttackStageSpec,
    DefenseOutcome,
    DefenseStageSpec,
    Status,
    attack_outcome_from_artifact,
    run_attack_stage,
    run_defense_stage,
)
from bench.core.poison import Target
from bench.core.registry import ARCHS, ATTACKS, DATASETS, DEFENSES, Registry, UnknownNameError, did_you_mean
from bench.core.train import TrainConfig

__all__ = [
    "ARCHS",
    "ATTACKS",
    "AttackOutcome",
    "AttackRecord",
    "AttackStageSpec",
    "DATASETS",
    "DEFENSES",
    "DataOptions",
    "DatasetSpec",
    "DatasetUnavailableError",
    "Declared",
    "DefenseOutcome",
    "DefenseStageSpec",
    "EXTRA_METRICS",
    "LoadedDataset",
    "ParamError",
    "Registry",
    "Status",
    "Target",
    "TrainConfig",
    "UnknownNameError",
    "atomic_write",
    "attack_outcome_from_artifact",
    "content_hash",
    "dataset_spec",
    "declared",
    "did_you_mean",
    "fraction_count",
    "is_heavy",
    "load_dataset",
    "run_attack_stage",
    "run_defense_stage",
    "verify_artifact",
]
