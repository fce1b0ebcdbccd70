"""The per-cell pipeline as plain function calls on digits: attack stage, then defense stages."""

from __future__ import annotations

import dataclasses

import math
from dataclasses import replace

import pytest
import torch

import bench.core.pipeline
from bench.core.artifacts import ArtifactError, load_artifact, verify_artifact
from bench.core.datasets import load_dataset
from bench.core.data import DataOptions
from bench.core.metrics import Metrics
from bench.core.pipeline import (
    AttackStageSpec,
    DefenseStageSpec,
    attack_outcome_from_artifact,
    run_attack_stage,
    run_defense_stage,
)
from bench.core.poison import Target, poison_count
from bench.core.registry import ATTACKS, DEFENSES
from bench.core.subsets import clean_subset_size
from bench.core.train import TrainConfig, TrainingDiverged
from defenses.base import Defense, FineTuneParams

DIGITS_TRAIN = 1438
RHO = 0.1
CLEAN_FRACTION = 0.05


def attack_spec(**changes) -> AttackStageSpec:
    spec = AttackStageSpec(
        dataset="digits",
        arch="small_cnn",
        attack="badnets",
        attack_params=ATTACKS.get("badnets").Params(),
        poison_ratio=RHO,
        target=Target("all2one", 0),
        seed=0,
        train=TrainConfig(epochs=2, batch_size=64, lr=0.05),
    )
    return replace(spec, **changes)


def defense_spec(attack: AttackStageSpec, name: str, params: object) -> DefenseStageSpec:
    return DefenseStageSpec(attack=attack, defense=name, defense_params=params, clean_fraction=CLEAN_FRACTION)


@pytest.fixture(scope="module")
def attacked(tmp_path_factory):
    """One attack stage, shared by the tests below; records the global RNG state around it."""
    root = tmp_path_factory.mktemp("pipeline")
    data = load_dataset("digits", DataOptions(root=root / "data", download=False))
    spec = attack_spec()
    cpu_rng = torch.get_rng_state()
    accelerator_seeds: list[tuple[str, int]] = []
    with pytest.MonkeyPatch.context() as patch:  # torch.manual_seed seeds these too, with no device present
        for name in ("manual_seed", "manual_seed_all"):
            patch.setattr(torch.cuda, name, lambda seed, name=name: accelerator_seeds.append((name, seed)))
        outcome = run_attack_stage(spec, data, root / "artifacts" / spec.key)
    return dict(
        spec=spec, data=data, dir=root / "artifacts" / spec.key, outcome=outcome,
        cpu_rng_before=cpu_rng, cpu_rng_after=torch.get_rng_state(), accelerator_seeds=accelerator_seeds,
    )


def in_unit_interval(metrics: Metrics) -> bool:
    return all(0.0 <= v <= 1.0 and math.isfinite(v) for v in (metrics.acc, metrics.asr, metrics.ra))


def test_attack_stage_writes_a_verified_artifact(attacked):
    assert verify_artifact(attacked["dir"])
    artifact = load_artifact(attacked["dir"])
    index = artifact.poison_index
    assert len(index) == poison_count(RHO, DIGITS_TRAIN) == 144
    assert (index[1:] > index[:-1]).all() and int(index.max()) < DIGITS_TRAIN
    assert artifact.meta["attack_key"] == attacked["spec"].key


def test_attack_outcome_is_sane(attacked):
    outcome = attacked["outcome"]
    assert outcome.n_poison == poison_count(RHO, DIGITS_TRAIN)
    assert in_unit_interval(outcome.metrics)
    assert outcome.metrics.acc > 0.5, "two epochs on digits learn the task (chance is 0.1; about 0.88 seen)"
    assert outcome.metrics.asr + outcome.metrics.ra <= 1.0 + 1e-9  # one prediction per image
    assert len(outcome.epoch_losses) == 2 and all(math.isfinite(v) for v in outcome.epoch_losses)
    assert outcome.epoch_losses[1] < outcome.epoch_losses[0]
    assert outcome.seconds > 0


def test_attack_outcome_can_be_read_back_from_the_artifact(attacked):
    assert attack_outcome_from_artifact(attacked["dir"]) == attacked["outcome"]


def test_attack_stage_does_not_touch_the_global_cpu_generator(attacked):
    assert torch.equal(attacked["cpu_rng_before"], attacked["cpu_rng_after"])


def test_attack_stage_seeds_no_accelerator_generator(attacked):
    assert attacked["accelerator_seeds"] == []


def test_none_defense_keeps_the_metrics(attacked):
    spec = defense_spec(attacked["spec"], "none", DEFENSES.get("none").Params())
    outcome = run_defense_stage(spec, attacked["data"], attacked["dir"])
    assert outcome.status == "ok" and outcome.error == ""
    assert outcome.before == attacked["outcome"].metrics
    assert outcome.after == outcome.before
    assert outcome.der == pytest.approx(0.5)
    assert outcome.n_clean == 0, "a data-free defense gets no clean data"


def test_fine_tuning_defense_stage(attacked):
    spec = defense_spec(attacked["spec"], "ft", FineTuneParams(epochs=1, batch_size=32))
    outcome = run_defense_stage(spec, attacked["data"], attacked["dir"])
    assert outcome.status == "ok"
    assert outcome.n_clean == clean_subset_size(CLEAN_FRACTION, DIGITS_TRAIN) == 72
    assert in_unit_interval(outcome.after)
    assert 0.0 <= outcome.der <= 1.0
    assert len(outcome.epoch_losses) == 1
    assert verify_artifact(attacked["dir"]), "the defense stage leaves the artifact intact"


class _Diverges(Defense):
    def purify(self, model, clean, ctx):
        raise TrainingDiverged(3, [2.3, 1.9, 1.7, math.nan])


def test_diverging_defense_is_reported_not_raised(attacked, monkeypatch):
    monkeypatch.setattr(bench.core.pipeline, "create_defense", lambda name, **params: _Diverges(_Diverges.Params()))
    spec = defense_spec(attacked["spec"], "ft", _Diverges.Params())
    outcome = run_defense_stage(spec, attacked["data"], attacked["dir"])
    assert outcome.status == "diverged"
    assert outcome.after is None and outcome.der is None
    assert "not finite" in outcome.error and "3" in outcome.error
    assert outcome.epoch_losses[:3] == [2.3, 1.9, 1.7] and math.isnan(outcome.epoch_losses[3])
    assert outcome.before == attacked["outcome"].metrics


def test_defense_stage_without_an_artifact_raises(attacked, tmp_path):
    spec = defense_spec(attacked["spec"], "none", DEFENSES.get("none").Params())
    with pytest.raises(ArtifactError):
        run_defense_stage(spec, attacked["data"], tmp_path / "missing")


def test_attack_stage_is_reproducible(attacked, tmp_path):
    """The same spec gives the same poison index and, on the CPU, the same weights (CUDA kernels may not be bitwise)."""
    again = tmp_path / "again"
    outcome = run_attack_stage(attacked["spec"], attacked["data"], again)
    first, second = load_artifact(attacked["dir"]), load_artifact(again)
    assert torch.equal(first.poison_index, second.poison_index)
    if outcome.device == "cpu":
        assert all(torch.equal(first.state_dict[k], second.state_dict[k]) for k in first.state_dict)
        assert outcome.metrics == attacked["outcome"].metrics


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.gpu
def test_attack_stage_does_not_touch_the_global_cuda_generator(tmp_path):
    torch.cuda.init()
    before = torch.cuda.get_rng_state_all()
    spec = attack_spec(train=TrainConfig(epochs=1, batch_size=256, lr=0.05))
    run_attack_stage(spec, load_dataset("digits", DataOptions(root=tmp_path, download=False)), tmp_path / "artifact")
    after = torch.cuda.get_rng_state_all()
    assert all(torch.equal(a, b) for a, b in zip(before, after))


def test_extra_metrics_before_and_after(attacked):
    base = defense_spec(attacked["spec"], "none", DEFENSES.get("none").Params())
    spec = dataclasses.replace(base, extra_metrics=("mia", "sharpness"))
    outcome = run_defense_stage(spec, attacked["data"], attacked["dir"])
    assert set(outcome.extra_before) == set(outcome.extra_after) == {"mia", "sharpness"}
    assert outcome.extra_after == outcome.extra_before  # no defense: the same model, the same probe
    assert 0.0 <= outcome.extra_before["mia"] <= 1.0 and outcome.extra_before["sharpness"] > 0
