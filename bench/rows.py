"""The result row: one per cell, the schema of every Parquet file under ``results/<grid>/rows/``.

Metrics are fractions in [0, 1] stored as float64; a metric a cell does not have
(a failed or diverged cell's after-metrics) is NaN, never 0. ``*_label`` columns are
the method's display name: its grid name, plus the parameters that differ from the
defaults, e.g. ``blended(alpha=0.1)``.
"""

from __future__ import annotations

import pyarrow as pa

from bench.core import EXTRA_METRICS

STATUSES = ("ok", "failed", "diverged")

AXIS_COLUMNS: tuple[tuple[str, pa.DataType], ...] = (
    ("grid", pa.string()),
    ("dataset", pa.string()),
    ("arch", pa.string()),
    ("attack", pa.string()),
    ("attack_label", pa.string()),
    ("attack_params", pa.string()),  # canonical JSON of the full parameter set
    ("poison_ratio", pa.float64()),
    ("target_mode", pa.string()),
    ("target_label", pa.int64()),
    ("defense", pa.string()),
    ("defense_label", pa.string()),
    ("defense_params", pa.string()),
    ("clean_fraction", pa.float64()),
    ("seed", pa.int64()),
)

METRIC_COLUMNS: tuple[str, ...] = (
    "acc_before",
    "asr_before",
    "ra_before",
    "acc_after",
    "asr_after",
    "ra_after",
    "der",
)

# Optional metrics (grid key ``metrics``), NaN where a grid did not ask for them.
EXTRA_METRIC_COLUMNS: tuple[str, ...] = tuple(
    f"{name}_{when}" for name in EXTRA_METRICS for when in ("before", "after")
)

SCHEMA = pa.schema(
    [
        *AXIS_COLUMNS,
        ("cell_id", pa.string()),
        ("attack_key", pa.string()),
        ("status", pa.string()),
        ("error", pa.string()),
        *[(name, pa.float64()) for name in METRIC_COLUMNS],
        *[(name, pa.float64()) for name in EXTRA_METRIC_COLUMNS],
        ("detection", pa.string()),  # JSON of a detecting defense's output; "" otherwise
        ("n_poison", pa.int64()),
        ("n_clean", pa.int64()),
        ("attack_seconds", pa.float64()),
        ("defense_seconds", pa.float64()),
        ("device", pa.string()),
        ("node", pa.string()),  # the Ray node that ran the defense stage
        ("torch_version", pa.string()),
        ("bench_version", pa.string()),
        ("git_commit", pa.string()),
        ("grid_hash", pa.string()),
        ("finished_at", pa.string()),  # ISO 8601, UTC
    ]
)

COLUMNS: tuple[str, ...] = tuple(SCHEMA.names)
