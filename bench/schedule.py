"""Ray Tune scheduling of a sweep: attack-stage and defense-stage trials in one Tune run.

``StageOrder`` is a Tune ``Searcher`` that hands out an attack trial per backdoored
model to train, and a defense trial per cell as soon as the cell's attack artifact
exists: no barrier between the stages. ``run_trial`` is the trainable; it calls the
compute layer and reports one result. The driver's ``tune.Callback`` records it.
"""

from __future__ import annotations

import os
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ray import tune
from ray.tune.search import Searcher

from bench.core import (
    AttackOutcome,
    AttackStageSpec,
    DefenseOutcome,
    DefenseStageSpec,
    LoadedDataset,
    Status,
    run_attack_stage,
    run_defense_stage,
)

ATTACK, DEFENSE = "attack", "defense"


class StageOrder(Searcher):
    """Suggests ``{"stage": "attack", "id": key}`` for each model to train and
    ``{"stage": "defense", "id": cell_id}`` for each cell whose artifact is ready.

    Ready cells go first; a new attack trial is suggested only while fewer than
    ``max_attacks_in_flight`` are queued or running, so cells of finished models never
    wait behind the whole list of models still to train. When an attack trial fails,
    its cells are never suggested; ``on_blocked(cell_ids, error)`` gets them instead.
    """

    def __init__(
        self,
        to_train: list[str],
        cells_by_key: dict[str, list[str]],
        on_blocked: Callable[[list[str], str], None],
        max_attacks_in_flight: int,
    ) -> None:
        super().__init__()
        self._attacks = list(to_train)
        self._waiting = {key: list(ids) for key, ids in cells_by_key.items() if key in set(to_train)}
        self._ready = [cid for key, ids in cells_by_key.items() if key not in set(to_train) for cid in ids]
        self._running_attacks: dict[str, str] = {}  # trial id → attack key
        self._on_blocked = on_blocked
        self._max_in_flight = max(1, max_attacks_in_flight)

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles its searcher for its own restore, which bench does not use (it
        # resumes from its row store); the driver-side hook stays out of the pickle.
        return {**self.__dict__, "_on_blocked": None}

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec: Any) -> bool:
        return True

    def suggest(self, trial_id: str) -> dict[str, str] | str | None:
        if self._ready:
            return {"stage": DEFENSE, "id": self._ready.pop(0)}
        if self._attacks and len(self._running_attacks) < self._max_in_flight:
            key = self._attacks.pop(0)
            self._running_attacks[trial_id] = key
            return {"stage": ATTACK, "id": key}
        return None if self._waiting or self._attacks else Searcher.FINISHED

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        key = self._running_attacks.pop(trial_id, None)
        if key is None:
            return
        cells = self._waiting.pop(key, [])
        if not error and result is not None and result.get("status") == Status.OK.value:
            self._ready.extend(cells)
        else:
            reason = (result or {}).get("error") or "the attack trial crashed"
            self._on_blocked(cells, f"attack stage {key} failed: {reason}")


@dataclass(frozen=True)
class TrialContext:
    """What every trial needs, shipped once through Ray's object store, datasets included."""

    attacks: dict[str, AttackStageSpec]
    cells: dict[str, DefenseStageSpec]
    artifacts_dir: str
    datasets: dict[str, LoadedDataset]
    threads: int


def _run_stage(config: dict[str, str], context: TrialContext) -> AttackOutcome | DefenseOutcome:
    if config["stage"] == ATTACK:
        spec = context.attacks[config["id"]]
        return run_attack_stage(spec, context.datasets[spec.dataset], Path(context.artifacts_dir) / spec.key)
    cell = context.cells[config["id"]]
    return run_defense_stage(cell, context.datasets[cell.attack.dataset], Path(context.artifacts_dir) / cell.attack.key)


def run_trial(config: dict[str, str], context: TrialContext) -> None:
    """The Tune trainable: run one stage, report one result.

    The result holds ``status`` (ok, diverged or failed), the stage's typed ``outcome``
    (absent when it failed; ``error`` then says why) and the Ray ``node`` that ran it.
    """
    import torch

    torch.set_num_threads(context.threads)
    try:
        outcome = _run_stage(config, context)
        result = {"status": outcome.status.value, "outcome": outcome}
    except Exception as error:  # recorded as a failed cell; the sweep goes on
        result = {"status": Status.FAILED.value, "error": f"{type(error).__name__}: {error}\n{traceback.format_exc(limit=8)}"}
    import ray

    tune.report({**result, "node": ray.get_runtime_context().get_node_id()})


class ResultForwarder(tune.Callback):
    """Driver-side: hands each trial's result, or its crash, to ``record``."""

    def __init__(self, record: Callable[[dict[str, str], dict[str, Any]], None]) -> None:
        self._record = record
        self._seen: set[str] = set()

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_record": None}  # driver-only hook; see StageOrder.__getstate__

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        self._seen.add(trial.trial_id)
        self._record(trial.config, result)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if trial.trial_id in self._seen:
            return
        error = "the trial process crashed"
        if trial.error_file and os.path.exists(trial.error_file):
            error = Path(trial.error_file).read_text()[-4000:]
        self._record(trial.config, {"status": Status.FAILED.value, "error": error})


@dataclass(frozen=True)
class TuneSettings:
    storage: Path
    run_name: str
    cpu: float
    gpu: float
    max_concurrent: int = 0  # 0: as many as resources allow


def run_tune(
    order: StageOrder,
    context: TrialContext,
    forwarder: ResultForwarder,
    total_trials: int,
    settings: TuneSettings,
) -> None:
    """Run all trials to completion; results reach the driver through ``forwarder``."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # no Tune banner: bench prints its own progress
    trainable = tune.with_resources(
        tune.with_parameters(run_trial, context=context), {"cpu": settings.cpu, "gpu": settings.gpu}
    )
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=order,
            num_samples=total_trials,
            max_concurrent_trials=settings.max_concurrent or None,
            reuse_actors=settings.gpu == 0,
        ),
        run_config=tune.RunConfig(
            name=settings.run_name,
            storage_path=str(settings.storage.resolve()),
            callbacks=[forwarder],
            verbose=0,
            failure_config=tune.FailureConfig(max_failures=0),
        ),
    )
    tuner.fit()
