"""The result store of one grid: one immutable Parquet file per cell, compacted on demand.

``<root>/rows/<cell_id>.parquet`` is written by one writer (the driver) to a temporary
name and renamed, so a row file is complete or absent. ``<root>/results.parquet`` is
rebuilt from the row files with the schema of ``bench.rows``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from bench.core import atomic_write
from bench.rows import COLUMNS, SCHEMA


class ResultStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self.rows_dir = self.root / "rows"
        self.artifacts_dir = self.root / "artifacts"
        self.results_path = self.root / "results.parquet"

    def artifact_dir(self, attack_key: str) -> Path:
        return self.artifacts_dir / attack_key

    def write_row(self, row: dict[str, Any]) -> Path:
        """Write one cell's row atomically, replacing an earlier row of the same cell."""
        missing = set(COLUMNS) - set(row)
        if missing:
            raise ValueError(f"row for cell {row.get('cell_id')} lacks columns {sorted(missing)}")
        table = pa.Table.from_pylist([{name: row[name] for name in COLUMNS}], schema=SCHEMA)
        return atomic_write(self.rows_dir / f"{row['cell_id']}.parquet", lambda out: pq.write_table(table, out))

    def row_files(self) -> list[Path]:
        return sorted(self.rows_dir.glob("*.parquet")) if self.rows_dir.exists() else []

    def load(self, cell_order: list[str] | None = None) -> pd.DataFrame:
        """Every row, one per cell, with the columns and types of ``bench.rows.SCHEMA``.

        Rows follow ``cell_order`` (cell ids, e.g. the grid's expansion order) where given;
        rows of cells not in it come last.
        """
        files = self.row_files()
        if not files:
            return SCHEMA.empty_table().to_pandas()
        frame = pa.concat_tables([pq.read_table(f, schema=SCHEMA) for f in files]).to_pandas()
        if cell_order:
            rank = {cell_id: i for i, cell_id in enumerate(cell_order)}
            frame = frame.sort_values("cell_id", key=lambda ids: ids.map(rank).fillna(len(rank)), kind="stable")
        return frame.reset_index(drop=True)

    def load_cells(self, cell_order: list[str]) -> pd.DataFrame:
        """The rows of exactly the cells of ``cell_order``, in that order.

        Rows of other cells (e.g. of a grid entry whose parameters have since changed) are left out.
        """
        frame = self.load(cell_order)
        return frame[frame["cell_id"].isin(cell_order)].reset_index(drop=True)

    def compacted_order(self) -> list[str]:
        """Cell ids in the row order of ``results.parquet`` (the grid's order once ``bench run`` wrote it); [] without it."""
        if not self.results_path.is_file():
            return []
        return pq.read_table(self.results_path, columns=["cell_id"]).column("cell_id").to_pylist()

    def statuses(self) -> dict[str, str]:
        """cell_id → status of every stored row."""
        frame = self.load()
        return dict(zip(frame["cell_id"], frame["status"]))

    def compact(self, cell_order: list[str] | None = None) -> Path:
        """Rebuild ``results.parquet`` from the row files (in ``cell_order``); return its path."""
        table = pa.Table.from_pandas(self.load(cell_order), schema=SCHEMA, preserve_index=False)
        return atomic_write(self.results_path, lambda out: pq.write_table(table, out))
