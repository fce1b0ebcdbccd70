"""Where the reported rows came from, read off the rows themselves (columns of ``bench.rows``).

``provenance(df)`` gives a JSON-ready mapping: the distinct values of each provenance
column, the time range of ``finished_at``, and the row count by status. Columns the
frame does not have are left out, so a hand-made frame reports what it has.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

import pandas as pd

# Row column → readable name, in the order a report lists them.
PROVENANCE_COLUMNS: Mapping[str, str] = MappingProxyType(
    {
        "grid": "grid",
        "grid_hash": "grid hash",
        "bench_version": "bench version",
        "git_commit": "git commit",
        "torch_version": "torch version",
        "device": "devices",
        "node": "Ray nodes",
    }
)
TIME_COLUMN = "finished_at"


def provenance(df: pd.DataFrame) -> dict:
    """``{"rows": n, "status": {status: n}, <column>: [distinct non-empty values, sorted],
    "finished_first"/"finished_last": ISO 8601 UTC or absent}``."""
    about: dict = {"rows": int(len(df))}
    if "status" in df.columns:
        about["status"] = {str(k): int(v) for k, v in df["status"].value_counts().sort_index().items()}
    for column in PROVENANCE_COLUMNS:
        if column in df.columns:
            values = df[column].dropna().astype(str)
            about[column] = sorted(v for v in values.unique() if v)
    if TIME_COLUMN in df.columns:
        times = pd.to_datetime(df[TIME_COLUMN], utc=True, errors="coerce", format="ISO8601").dropna()
        if not times.empty:
            about["finished_first"] = times.min().isoformat()
            about["finished_last"] = times.max().isoformat()
    return about
