"""The result row: one per cell, the schema of every Parquet file under ``results/<grid>/rows/``.

``result_row(grid, cell, outcome, provenance)`` is the one place a row is built, from the
cell, the defense stage's typed outcome (a failed cell's too) and the provenance of the
run; ``mlflow_params`` and ``mlflow_metrics`` read the same row, by the columns' roles.

Metrics are fractions in [0, 1] stored as float64. A value a cell does not have (a
failed or diverged cell's after-metrics, a failed cell's counts) is null: NaN in the
float columns, null in the integer ones, never 0 or -1. ``*_label`` columns are the
method's display name: its grid name, plus the parameters that differ from the
defaults, e.g. ``blended(alpha=0.1)``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import pyarrow as pa

from bench.core import EXTRA_METRICS, DefenseOutcome, Status

if TYPE_CHECKING:
    from bench.cells import Cell
    from bench.grid import Grid
    from bench.provenance import Provenance

Role = Literal["axis", "id", "outcome", "metric", "count", "seconds", "context"]
_MLFLOW_METRIC_ROLES = frozenset({"metric", "seconds"})


@dataclass(frozen=True)
class Column:
    """A result-row column: its name, Arrow type, role, and whether MLflow logs it as a run parameter."""

    name: str
    type: pa.DataType
    role: Role
    mlflow_param: bool = False


AXIS_COLUMNS: tuple[Column, ...] = (
    Column("grid", pa.string(), "axis"),
    Column("dataset", pa.string(), "axis", mlflow_param=True),
    Column("arch", pa.string(), "axis", mlflow_param=True),
    Column("attack", pa.string(), "axis", mlflow_param=True),
    Column("attack_label", pa.string(), "axis"),
    Column("attack_params", pa.string(), "axis", mlflow_param=True),  # canonical JSON of the full parameter set
    Column("poison_ratio", pa.float64(), "axis", mlflow_param=True),
    Column("target_mode", pa.string(), "axis", mlflow_param=True),
    Column("target_label", pa.int64(), "axis", mlflow_param=True),
    Column("defense", pa.string(), "axis", mlflow_param=True),
    Column("defense_label", pa.string(), "axis"),
    Column("defense_params", pa.string(), "axis", mlflow_param=True),
    Column("clean_fraction", pa.float64(), "axis", mlflow_param=True),
    Column("seed", pa.int64(), "axis", mlflow_param=True),
)

METRIC_COLUMNS: tuple[str, ...] = ("acc_before", "asr_before", "ra_before", "acc_after", "asr_after", "ra_after", "der")

# Optional metrics (grid key ``metrics``), NaN where a grid did not ask for them.
EXTRA_METRIC_COLUMNS: tuple[str, ...] = tuple(f"{name}_{when}" for name in EXTRA_METRICS for when in ("before", "after"))

COLUMNS_SPEC: tuple[Column, ...] = (
    *AXIS_COLUMNS,
    Column("cell_id", pa.string(), "id"),
    Column("attack_key", pa.string(), "id", mlflow_param=True),
    Column("status", pa.string(), "outcome"),  # a Status value: ok, diverged, failed
    Column("error", pa.string(), "outcome"),
    *(Column(name, pa.float64(), "metric") for name in (*METRIC_COLUMNS, *EXTRA_METRIC_COLUMNS)),
    Column("detection", pa.string(), "outcome"),  # JSON of a detecting defense's output; "" otherwise
    Column("n_poison", pa.int64(), "count", mlflow_param=True),
    Column("n_clean", pa.int64(), "count", mlflow_param=True),
    Column("attack_seconds", pa.float64(), "seconds"),
    Column("defense_seconds", pa.float64(), "seconds"),
    Column("device", pa.string(), "context", mlflow_param=True),
    Column("node", pa.string(), "context"),  # the Ray node that ran the defense stage
    Column("torch_version", pa.string(), "context"),
    Column("bench_version", pa.string(), "context"),
    Column("git_commit", pa.string(), "context"),
    Column("grid_hash", pa.string(), "context"),
    Column("finished_at", pa.string(), "context"),  # ISO 8601, UTC
)

SCHEMA = pa.schema([(column.name, column.type) for column in COLUMNS_SPEC])
COLUMNS: tuple[str, ...] = tuple(SCHEMA.names)

NAN = math.nan


def canonical_params(params: dict[str, Any]) -> str:
    """A method's parameters as the ``*_params`` columns store them: JSON with sorted keys."""
    return json.dumps(params, sort_keys=True)


def result_row(
    grid: Grid, cell: Cell, outcome: DefenseOutcome, provenance: Provenance, node: str, finished_at: str
) -> dict[str, Any]:
    """The row of ``cell`` with ``outcome``, a value for every column of ``SCHEMA``."""
    before, after, attack = outcome.before, outcome.after, outcome.attack
    metrics = {
        "acc_before": before.acc if before else NAN,
        "asr_before": before.asr if before else NAN,
        "ra_before": before.ra if before else NAN,
        "acc_after": after.acc if after else NAN,
        "asr_after": after.asr if after else NAN,
        "ra_after": after.ra if after else NAN,
        "der": NAN if outcome.der is None else outcome.der,
    }
    extras = {name: NAN for name in EXTRA_METRIC_COLUMNS}
    extras.update({f"{name}_before": float(v) for name, v in outcome.extra_before.items()})
    extras.update({f"{name}_after": float(v) for name, v in outcome.extra_after.items()})
    return {
        "grid": grid.name,
        "dataset": cell.dataset,
        "arch": cell.arch,
        "attack": cell.attack.name,
        "attack_label": cell.attack.label,
        "attack_params": canonical_params(cell.attack.params_dict),
        "poison_ratio": cell.poison_ratio,
        "target_mode": cell.target.mode,
        "target_label": cell.target.label,
        "defense": cell.defense.name,
        "defense_label": cell.defense.label,
        "defense_params": canonical_params(cell.defense.params_dict),
        "clean_fraction": cell.clean_fraction,
        "seed": cell.seed,
        "cell_id": cell.cell_id,
        "attack_key": cell.attack_key,
        "status": Status(outcome.status).value,
        "error": outcome.error,
        **{name: float(value) for name, value in metrics.items()},
        **extras,
        "detection": json.dumps(outcome.detection, sort_keys=True) if outcome.detection else "",
        "n_poison": attack.n_poison if attack else None,
        "n_clean": outcome.n_clean,
        "attack_seconds": float(attack.seconds) if attack else NAN,
        "defense_seconds": NAN if outcome.seconds is None else float(outcome.seconds),
        "device": outcome.device,
        "node": node,
        "torch_version": provenance.torch_version,
        "bench_version": provenance.bench_version,
        "git_commit": provenance.git_commit,
        "grid_hash": grid.hash,
        "finished_at": finished_at,
    }


def mlflow_params(row: dict[str, Any]) -> dict[str, Any]:
    """The columns a cell's MLflow run logs as parameters (null counts left out)."""
    return {c.name: row[c.name] for c in COLUMNS_SPEC if c.mlflow_param and row[c.name] is not None}


def mlflow_metrics(row: dict[str, Any]) -> dict[str, float]:
    """The columns a cell's MLflow run logs as metrics: every metric and the wall seconds of both stages."""
    return {c.name: row[c.name] for c in COLUMNS_SPEC if c.role in _MLFLOW_METRIC_ROLES}
