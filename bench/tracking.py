"""MLflow tracking from the driver: one parent run per ``bench run``, one child run per stage.

The driver is the only writer. The default store is a sqlite database under the
results folder, created (migrated) here before any trial starts.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

STAGE_TAG = "bench.stage"  # "attack" or "defense"
CELL_TAG = "bench.cell_id"
GRID_HASH_TAG = "bench.grid_hash"
NODE_TAG = "bench.node"  # the Ray node that ran the stage


def default_tracking_uri(results_root: Path) -> str:
    return f"sqlite:///{(Path(results_root).resolve() / 'mlflow.db').as_posix()}"


class Tracker:
    """Logs a sweep to MLflow under experiment ``experiment`` (the grid's name)."""

    def __init__(self, uri: str, experiment: str, artifact_root: Path) -> None:
        from mlflow.tracking import MlflowClient

        logging.getLogger("mlflow").setLevel(logging.WARNING)  # no migration chatter on the console

        self.uri = uri
        self.client = MlflowClient(tracking_uri=uri)
        found = self.client.get_experiment_by_name(experiment)
        if found is None:
            location = None if uri.startswith("http") else (Path(artifact_root).resolve() / experiment).as_uri()
            self.experiment_id = self.client.create_experiment(experiment, artifact_location=location)
        else:
            self.experiment_id = found.experiment_id
        self.parent_id: str | None = None

    def start(self, run_name: str, params: dict[str, Any], tags: dict[str, str]) -> str:
        run = self.client.create_run(self.experiment_id, run_name=run_name, tags=tags)
        self.parent_id = run.info.run_id
        self._log(self.parent_id, params=params)
        return self.parent_id

    def log_artifact(self, path: Path, folder: str | None = None) -> None:
        if self.parent_id is not None:
            self.client.log_artifact(self.parent_id, str(path), artifact_path=folder)

    def log_stage(
        self,
        name: str,
        stage: str,
        params: dict[str, Any],
        metrics: dict[str, float],
        curves: dict[str, list[float]],
        tags: dict[str, str],
        failed: bool,
    ) -> str:
        """One child run: params, final metrics (non-finite ones skipped), per-epoch curves."""
        run_tags = {STAGE_TAG: stage, **tags}
        if self.parent_id is not None:
            run_tags["mlflow.parentRunId"] = self.parent_id
        run = self.client.create_run(self.experiment_id, run_name=name, tags=run_tags)
        self._log(run.info.run_id, params=params, metrics=metrics, curves=curves)
        self.client.set_terminated(run.info.run_id, status="FAILED" if failed else "FINISHED")
        return run.info.run_id

    def finish(self, status: str) -> None:
        """End the parent run: ``FINISHED``, ``FAILED`` or ``KILLED``."""
        if self.parent_id is not None:
            self.client.set_terminated(self.parent_id, status=status)

    def _log(
        self,
        run_id: str,
        params: dict[str, Any] | None = None,
        metrics: dict[str, float] | None = None,
        curves: dict[str, list[float]] | None = None,
    ) -> None:
        from mlflow.entities import Metric, Param

        now = int(time.time() * 1000)
        param_list = [Param(k, str(v)[:6000]) for k, v in (params or {}).items()]
        metric_list = [
            Metric(k, float(v), now, 0) for k, v in (metrics or {}).items() if v is not None and math.isfinite(v)
        ]
        for key, values in (curves or {}).items():
            metric_list += [Metric(key, float(v), now, step) for step, v in enumerate(values) if math.isfinite(v)]
        for start in range(0, max(len(param_list), len(metric_list), 1), 100):
            self.client.log_batch(
                run_id, metrics=metric_list[start : start + 100], params=param_list[start : start + 100]
            )
