"""The per-cell pipeline: the compute layer's one entry for the orchestration layer.

``run_attack_stage`` poisons and trains one backdoored model and saves it as an
artifact; ``run_defense_stage`` loads that artifact, applies one defense with one
clean-data budget and evaluates. Both are plain function calls: no Ray, no MLflow,
no files other than the artifact.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from dataclasses import dataclass, field
from enum import Enum
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch

from bench.core.archs import build_model, build_seeded_model
from bench.core.artifacts import ArtifactError, load_artifact, save_artifact
from bench.core.data import ImageSet, LoadedDataset
from bench.core.device import default_device, describe
from bench.core.extra_metrics import EXTRA_METRICS, Probe, draw_probe
from bench.core.hashing import stable_id
from bench.core.metrics import Metrics, der, evaluate
from bench.core.params import field_values
from bench.core.poison import BackdoorTestSet, Target, backdoor_test_set, draw_poison_index, poison_training_set
from bench.core.registry import create_attack, create_defense
from bench.core.seeding import make_generator
from bench.core.subsets import class_balanced_index, clean_subset_size
from bench.core.train import TrainConfig, TrainingDiverged, train
from attacks.base import Attack, AttackContext
from defenses.base import DefenseContext


class Status(str, Enum):
    """How a stage ended: ``ok``; ``diverged`` (training blew up: a result of the method); ``failed`` (an error)."""

    OK = "ok"
    DIVERGED = "diverged"
    FAILED = "failed"


@dataclass(frozen=True)
class AttackStageSpec:
    """One backdoored model: everything that changes its weights. ``key`` is its content hash."""

    dataset: str
    arch: str
    attack: str
    attack_params: object  # the attack's validated Params
    poison_ratio: float
    target: Target
    seed: int
    train: TrainConfig

    def content(self) -> dict[str, Any]:
        """What the key hashes: every field, the parameters as plain values."""
        return {
            "dataset": self.dataset,
            "arch": self.arch,
            "attack": {"name": self.attack, "params": dataclasses.asdict(self.attack_params)},
            "poison_ratio": self.poison_ratio,
            "target": dataclasses.asdict(self.target),
            "seed": self.seed,
            "train": dataclasses.asdict(self.train),
        }

    @functools.cached_property
    def key(self) -> str:
        """16 hex digits: the artifact's folder name, and a part of every random stream's seed."""
        return stable_id(self.content())


@dataclass(frozen=True)
class DefenseStageSpec:
    """One cell: a defense with its parameters and clean-data fraction, applied to one attack artifact."""

    attack: AttackStageSpec
    defense: str
    defense_params: object  # the defense's validated Params
    clean_fraction: float
    extra_metrics: tuple[str, ...] = ()  # keys of bench.core.extra_metrics.EXTRA_METRICS

    @functools.cached_property
    def cell_id(self) -> str:
        """16 hex digits over the attack key, the defense and its parameters, the clean fraction (and extra metrics)."""
        content = {
            "attack_key": self.attack.key,
            "defense": {"name": self.defense, "params": dataclasses.asdict(self.defense_params)},
            "clean_fraction": self.clean_fraction,
        }
        if self.extra_metrics:  # a cell that measures more is another cell; without extras, ids stay as they were
            content["metrics"] = sorted(self.extra_metrics)
        return stable_id(content)


@dataclass(frozen=True)
class AttackOutcome:
    """A trained backdoored model's metrics, poisoned-sample count, wall seconds, device and per-epoch losses."""

    metrics: Metrics
    n_poison: int
    seconds: float
    device: str
    epoch_losses: list[float] = field(default_factory=list)

    @property
    def status(self) -> Status:
        """Always ok: an attack stage that fails raises instead."""
        return Status.OK


@dataclass(frozen=True)
class AttackRecord:
    """What a defense cell reports of the attack stage behind it (read from the artifact's metadata)."""

    n_poison: int
    seconds: float


@dataclass(frozen=True)
class DefenseOutcome:
    """Everything a cell's result row needs.

    ``ok``: every metric is set. ``diverged``: ``after`` and ``der`` are ``None`` and ``error``
    says why. ``failed`` (``DefenseOutcome.failed``): only ``error`` is set.
    """

    status: Status
    before: Metrics | None = None
    after: Metrics | None = None
    der: float | None = None
    n_clean: int | None = None
    attack: AttackRecord | None = None
    seconds: float | None = None  # wall seconds of the defense stage
    device: str = ""
    error: str = ""
    epoch_losses: list[float] = field(default_factory=list)
    detection: dict[str, float] | None = None
    extra_before: dict[str, float] = field(default_factory=dict)
    extra_after: dict[str, float] = field(default_factory=dict)

    @classmethod
    def failed(cls, error: str) -> DefenseOutcome:
        return cls(Status.FAILED, error=error)


def _attack(spec: AttackStageSpec, data: LoadedDataset, state: dict[str, torch.Tensor] | None = None) -> Attack:
    attack = create_attack(spec.attack, data.spec, **field_values(spec.attack_params))
    if state is not None:
        attack.load_state_dict(state)
    return attack


def run_attack_stage(spec: AttackStageSpec, data: LoadedDataset, artifact_dir: Path) -> AttackOutcome:
    """Poison ``data``'s training set, train the backdoored model, evaluate it, save the artifact."""
    start = time.perf_counter()
    device = default_device()
    attack = _attack(spec, data)
    ctx = AttackContext(spec.target, spec.poison_ratio, make_generator(spec.seed, spec.key, "attack"), device)
    attack.prepare(data, ctx)
    if attack.poisons_dataset:
        poison_gen = make_generator(spec.seed, spec.key, "poison-index")
        index = draw_poison_index(data.train.y, spec.poison_ratio, spec.target, attack.clean_label, poison_gen)
    else:
        index = torch.empty(0, dtype=torch.int64)
    poisoned = poison_training_set(data.train, attack, index, spec.target, data.spec.num_classes).to(device)

    init_seed = make_generator(spec.seed, spec.key, "init").initial_seed()
    model = build_seeded_model(spec.arch, data.spec, init_seed).to(device)
    train_gen = make_generator(spec.seed, spec.key, "train")
    losses = train(model, poisoned, spec.train, data.spec.augmentation, train_gen, hooks=attack.training_hooks(model, ctx))
    bd_test = backdoor_test_set(data.test, attack, spec.target, data.spec.num_classes)
    metrics = evaluate(model, data.test.to(device), bd_test)
    seconds = time.perf_counter() - start
    save_artifact(
        artifact_dir,
        model.state_dict(),
        index,
        {
            "attack_key": spec.key,
            "metrics": {"acc": metrics.acc, "asr": metrics.asr, "ra": metrics.ra},
            "n_poison": int(len(index)),
            "seconds": seconds,
            "device": describe(device),
            "epoch_losses": losses,
            "bench_version": _bench_version(),
        },
        attack.state_dict(),
    )
    return AttackOutcome(metrics, int(len(index)), seconds, describe(device), losses)


def _bench_version() -> str:
    """The installed distribution's version (``bench.__version__``), or ``"unknown"`` outside an install."""
    try:
        return version("bench")
    except PackageNotFoundError:
        return "unknown"


def attack_outcome_from_artifact(artifact_dir: Path) -> AttackOutcome | None:
    """The outcome recorded in a verified artifact, or ``None`` when there is none."""
    try:
        meta = load_artifact(artifact_dir).meta
    except ArtifactError:
        return None
    return AttackOutcome(Metrics(**meta["metrics"]), meta["n_poison"], meta["seconds"], meta["device"], meta["epoch_losses"])


@dataclass(frozen=True)
class Backdoored:
    """A loaded attack artifact: its model, the triggered test set, the metrics and record of its attack stage."""

    model: torch.nn.Module
    backdoor_test: BackdoorTestSet
    before: Metrics
    poison_index: torch.Tensor
    record: AttackRecord


def load_backdoored(spec: AttackStageSpec, data: LoadedDataset, artifact_dir: Path, device: torch.device) -> Backdoored:
    """The backdoored model of the artifact at ``artifact_dir`` (on ``device``) and its triggered test set."""
    artifact = load_artifact(artifact_dir)
    model = build_model(spec.arch, data.spec)
    model.load_state_dict(artifact.state_dict)
    attack = _attack(spec, data, artifact.attack_state)
    bd_test = backdoor_test_set(data.test, attack, spec.target, data.spec.num_classes)
    meta = artifact.meta
    record = AttackRecord(int(meta["n_poison"]), float(meta["seconds"]))
    return Backdoored(model.to(device), bd_test, Metrics(**meta["metrics"]), artifact.poison_index, record)


def defender_clean_set(spec: DefenseStageSpec, data: LoadedDataset, needs_clean: bool) -> ImageSet:
    """The cell's clean subset of the training set (class-balanced, drawn from the cell's seed); empty without ``needs_clean``."""
    if not needs_clean:
        return data.train.subset(torch.empty(0, dtype=torch.int64))
    gen = make_generator(spec.attack.seed, spec.attack.key, "clean-subset", spec.clean_fraction)
    count = clean_subset_size(spec.clean_fraction, len(data.train))
    return data.train.subset(class_balanced_index(data.train.y, count, gen))


def run_defense_stage(spec: DefenseStageSpec, data: LoadedDataset, artifact_dir: Path) -> DefenseOutcome:
    """Apply one defense to the attack artifact at ``artifact_dir`` and evaluate before and after on ``data``."""
    start = time.perf_counter()
    device = default_device()
    loaded = load_backdoored(spec.attack, data, artifact_dir, device)
    model, bd_test, before = loaded.model, loaded.backdoor_test, loaded.before

    defense = create_defense(spec.defense, **field_values(spec.defense_params))
    clean = defender_clean_set(spec, data, defense.data == "clean").to(device)
    probe = _probe(spec, data, loaded.poison_index) if spec.extra_metrics else None
    extra_before = _extra_metrics(spec.extra_metrics, model, probe)

    ctx = DefenseContext(spec=data.spec, generator=make_generator(spec.attack.seed, spec.cell_id, "defense"), device=device)
    common = dict(before=before, n_clean=len(clean), attack=loaded.record, device=describe(device), extra_before=extra_before)
    try:
        output = defense.run(model, clean, ctx)
    except TrainingDiverged as diverged:
        return DefenseOutcome(
            Status.DIVERGED, seconds=time.perf_counter() - start, error=str(diverged), epoch_losses=diverged.losses, **common
        )
    after = evaluate(output.model, data.test.to(device), bd_test)
    if not all(math.isfinite(v) for v in (after.acc, after.asr, after.ra)):
        raise RuntimeError(f"non-finite metrics after {spec.defense}: {after}")
    return DefenseOutcome(
        Status.OK, after=after, der=der(before, after), seconds=time.perf_counter() - start,
        epoch_losses=output.epoch_losses, detection=output.detection,
        extra_after=_extra_metrics(spec.extra_metrics, output.model, probe), **common,
    )


def _probe(spec: DefenseStageSpec, data: LoadedDataset, poison_index: torch.Tensor) -> Probe:
    """The extra metrics' fixed images; members are the training images the attack left clean."""
    unpoisoned = torch.ones(len(data.train), dtype=torch.bool)
    unpoisoned[poison_index] = False
    members = data.train.subset(torch.nonzero(unpoisoned).flatten())
    return draw_probe(members, data.test, make_generator(spec.attack.seed, spec.attack.key, "probe"))


def _extra_metrics(names: tuple[str, ...], model: torch.nn.Module, probe: Probe | None) -> dict[str, float]:
    return {name: EXTRA_METRICS[name](model, probe) for name in names}
