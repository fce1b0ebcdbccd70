"""The driver of ``bench run``: plan what is left, schedule it on Ray, record every result.

Finished cells (status ``ok`` or ``diverged``) are skipped; a backdoored model with a
verified artifact is not trained again; failed cells run again. The driver is the only
writer of rows and MLflow runs.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from bench.cells import Cell, expand, group_by_attack
from bench.cluster import fit_resources, ray_session
from bench.core import AttackOutcome, DataOptions, DefenseOutcome, LoadedDataset, Status, load_dataset, verify_artifact
from bench.grid import Grid
from bench.progress import Progress, summary_table
from bench.provenance import current, utc_now
from bench.rows import mlflow_metrics, mlflow_params, result_row
from bench.store import ResultStore
from bench.tracking import CELL_TAG, GRID_HASH_TAG, NODE_TAG, Tracker, default_tracking_uri

FINISHED = (Status.OK.value, Status.DIVERGED.value)  # a cell with such a row is not run again


@dataclass(frozen=True)
class SweepOptions:
    results_dir: Path = Path("results")
    data_dir: Path | None = None  # default: the grid's data.root, $BENCH_DATA_DIR, ./data
    download: bool | None = None  # default: the grid's data.download
    address: str | None = None  # a Ray cluster to join; default: a local Ray
    mlflow_uri: str | None = None  # default: $MLFLOW_TRACKING_URI, else sqlite under results_dir
    max_concurrent: int = 0


@dataclass
class SweepSummary:
    total_cells: int
    finished_before: int
    models_trained: int = 0
    counts: dict[str, int] = field(default_factory=lambda: {status.value: 0 for status in Status})
    failed_cells: list[str] = field(default_factory=list)
    unfinished_cells: list[str] = field(default_factory=list)  # never reported: interrupted
    seconds: float = 0.0
    results_path: Path | None = None

    @property
    def exit_code(self) -> int:
        return 1 if self.failed_cells or self.unfinished_cells else 0


def data_options(grid: Grid, options: SweepOptions) -> DataOptions:
    root = options.data_dir or grid.data.root or os.environ.get("BENCH_DATA_DIR") or "data"
    download = grid.data.download if options.download is None else options.download
    return DataOptions(root=Path(root).expanduser().resolve(), download=download)


def tracking_uri(options: SweepOptions) -> str:
    return options.mlflow_uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri(options.results_dir)


def _pct(value: float) -> str:
    return "—" if not math.isfinite(value) else f"{100 * value:.1f}%"


class SweepRecorder:
    """Turns trial results into rows, MLflow runs and progress lines."""

    def __init__(self, grid: Grid, store: ResultStore, tracker: Tracker, cells: dict[str, Cell], progress: Progress) -> None:
        self.grid, self.store, self.tracker, self.cells, self.progress = grid, store, tracker, cells, progress
        self.by_key = {cell.attack_key: cell for cell in cells.values()}
        self.provenance = current()
        self.summary_rows: list[dict[str, Any]] = []
        self.models_trained = 0

    def record(self, config: dict[str, str], result: dict[str, Any]) -> None:
        """One trial's result: ``outcome`` (an ``AttackOutcome`` or ``DefenseOutcome``), or ``error`` when it failed."""
        if config["stage"] == "attack":
            self._attack(config["id"], result.get("outcome"), result.get("error", ""), result.get("node", ""))
        else:
            outcome = result.get("outcome") or DefenseOutcome.failed(result.get("error", ""))
            self._cell(config["id"], outcome, result.get("node", ""))

    def block(self, cell_ids: list[str], error: str) -> None:
        for cell_id in cell_ids:
            self._cell(cell_id, DefenseOutcome.failed(error), node="")

    def _attack(self, key: str, outcome: AttackOutcome | None, error: str, node: str) -> None:
        cell = self.by_key[key]
        status = Status.OK if outcome is not None else Status.FAILED
        self.models_trained += status is Status.OK
        m = outcome.metrics if outcome else None
        self.tracker.log_stage(
            name=f"attack {cell.dataset}/{cell.arch}/{cell.attack.label}/{cell.poison_ratio}/s{cell.seed}",
            stage="attack",
            params={**cell.attack_stage.content(), "attack_key": key},
            metrics={"acc": m.acc, "asr": m.asr, "ra": m.ra, "attack_seconds": outcome.seconds} if m else {},
            curves={"train_loss": outcome.epoch_losses if outcome else []},
            tags={"bench.attack_key": key, GRID_HASH_TAG: self.grid.hash, NODE_TAG: node},
            failed=status is not Status.OK,
        )
        detail = (
            f"acc {_pct(m.acc)} asr {_pct(m.asr)} in {outcome.seconds:.1f}s" if m else (error.splitlines() or [""])[0]
        )
        self.progress.attack(cell.tag().rsplit("/", 3)[0], status.value, detail)

    def _cell(self, cell_id: str, outcome: DefenseOutcome, node: str) -> None:
        cell = self.cells[cell_id]
        row = result_row(self.grid, cell, outcome, self.provenance, node, utc_now())
        self.store.write_row(row)
        self.summary_rows.append(row)
        self.tracker.log_stage(
            name=cell.tag(),
            stage="defense",
            params=mlflow_params(row),
            metrics=mlflow_metrics(row),
            curves={"defense_loss": outcome.epoch_losses},
            tags={CELL_TAG: cell_id, GRID_HASH_TAG: self.grid.hash, NODE_TAG: node, "bench.status": row["status"]},
            failed=row["status"] == Status.FAILED.value,
        )
        if row["status"] == Status.FAILED.value:
            detail = (row["error"].strip().splitlines() or [""])[-1][:200]
        else:
            detail = f"acc {_pct(row['acc_after'])} asr {_pct(row['asr_after'])} der {_pct(row['der'])}"
        self.progress.cell(cell.tag(), row["status"], detail)


def load_datasets(names: set[str], options: DataOptions) -> tuple[dict[str, LoadedDataset], dict[str, Exception]]:
    """Load each dataset once, in the driver; a failure is kept, not raised, so other datasets still run."""
    loaded, failed = {}, {}
    for name in sorted(names):
        try:
            loaded[name] = load_dataset(name, options)
        except Exception as error:  # DatasetUnavailableError, or a broken file: the cells say why
            failed[name] = error
    return loaded, failed


def _schedule(
    grid: Grid,
    options: SweepOptions,
    store: ResultStore,
    groups: dict[str, list[Cell]],
    to_train: list[str],
    datasets: dict[str, LoadedDataset],
    recorder: SweepRecorder,
    console: Console,
    run_name: str,
) -> None:
    """Run the attack trials ``to_train`` and every cell of ``groups`` as one Tune run."""
    from bench.schedule import ResultForwarder, StageOrder, TrialContext, TuneSettings, run_tune

    with ray_session(options.address):
        resources = fit_resources(grid.resources.cpu, grid.resources.gpu)
        for notice in resources.notices:
            console.print(f"[yellow]notice:[/yellow] {notice}")
        cells = [cell for group in groups.values() for cell in group]
        context = TrialContext(
            attacks={key: groups[key][0].attack_stage for key in to_train},
            cells={cell.cell_id: cell.defense_stage for cell in cells},
            artifacts_dir=str(store.artifacts_dir),
            datasets=datasets,
            threads=max(1, int(resources.cpu)),
        )
        slots = min(resources.slots, options.max_concurrent or resources.slots)
        cells_by_key = {key: [c.cell_id for c in group] for key, group in groups.items()}
        order = StageOrder(to_train, cells_by_key, recorder.block, max_attacks_in_flight=slots)
        settings = TuneSettings(
            storage=store.root / "tune",
            run_name=run_name.replace(" ", "_").replace(":", "-"),
            cpu=resources.cpu,
            gpu=resources.gpu,
            max_concurrent=options.max_concurrent,
        )
        run_tune(order, context, ResultForwarder(recorder.record), len(to_train) + len(cells), settings)


def _log_report(tracker: Tracker, store: ResultStore, cell_order: list[str], grid_text: str) -> None:
    """Attach the leaderboard (one self-contained HTML page) and plots of every result so far to the parent MLflow run."""
    from bench.report import write_report

    frame = store.load_cells(cell_order)
    if not frame["status"].eq(Status.OK.value).any():
        return
    with tempfile.TemporaryDirectory() as folder:
        for path in write_report(frame, Path(folder), "html", grid_text=grid_text):
            tracker.log_artifact(path, "report")


def run_sweep(grid: Grid, options: SweepOptions, console: Console | None = None) -> SweepSummary:
    """Run every cell of ``grid`` not finished before; return what happened."""
    console = console or Console(soft_wrap=True)
    started = time.monotonic()
    store = ResultStore(Path(options.results_dir) / grid.name)
    all_cells = expand(grid)
    statuses = store.statuses()
    pending = {c.cell_id: c for c in all_cells if statuses.get(c.cell_id) not in FINISHED}
    summary = SweepSummary(total_cells=len(all_cells), finished_before=len(all_cells) - len(pending))
    console.print(
        f"[bold]{grid.name}[/bold]: {len(all_cells)} cells, {summary.finished_before} finished earlier, "
        f"{len(pending)} to run"
    )
    if not pending:
        console.print("Nothing to run: every cell is finished; no model is trained. `bench report` shows the results.")
        summary.results_path = store.compact([c.cell_id for c in all_cells])
        return summary

    groups = group_by_attack(list(pending.values()))
    to_train = [key for key in groups if not verify_artifact(store.artifact_dir(key))]
    console.print(f"{len(groups)} backdoored models needed: {len(to_train)} to train, {len(groups) - len(to_train)} reused")

    tracker = Tracker(tracking_uri(options), grid.name, store.root.parent / "mlartifacts")
    run_name = f"{grid.name} {utc_now()}"
    tracker.start(run_name, {"grid": grid.name, "grid_hash": grid.hash, "cells": len(all_cells), "to_run": len(pending)},
                  {GRID_HASH_TAG: grid.hash})
    tracker.log_artifact(grid.path)
    progress = Progress(len(pending), console)
    recorder = SweepRecorder(grid, store, tracker, pending, progress)

    datasets, unavailable = load_datasets({c.dataset for c in pending.values()}, data_options(grid, options))
    for name, error in unavailable.items():
        console.print(f"[red]dataset {name} is unavailable:[/red] {error}")
        blocked = [key for key, cells in groups.items() if cells[0].dataset == name]
        recorder.block([c.cell_id for key in blocked for c in groups.pop(key)], f"{type(error).__name__}: {error}")
        to_train = [key for key in to_train if key not in blocked]
    try:
        if groups:
            _schedule(grid, options, store, groups, to_train, datasets, recorder, console, run_name)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/yellow]")
    finally:
        recorded = {row["cell_id"]: row["status"] for row in recorder.summary_rows}
        unfinished = [cid for cid in pending if cid not in recorded]
        failed = any(status == Status.FAILED.value for status in recorded.values())
        tracker.finish("KILLED" if unfinished else "FAILED" if failed else "FINISHED")

    for status in recorded.values():
        summary.counts[status] = summary.counts.get(status, 0) + 1
    summary.failed_cells = [pending[cid].tag() for cid, status in recorded.items() if status == Status.FAILED.value]
    summary.unfinished_cells = [pending[cid].tag() for cid in unfinished]
    summary.models_trained = recorder.models_trained
    summary.seconds = time.monotonic() - started
    summary.results_path = store.compact([c.cell_id for c in all_cells])
    tracker.log_artifact(summary.results_path)
    _log_report(tracker, store, [c.cell_id for c in all_cells], grid.text)
    order = {cell.cell_id: i for i, cell in enumerate(all_cells)}
    console.print(summary_table(sorted(recorder.summary_rows, key=lambda r: order[r["cell_id"]])))
    console.print(
        f"{summary.counts['ok']} ok, {summary.counts['diverged']} diverged, {len(summary.failed_cells)} failed; "
        f"{summary.models_trained} models trained in {summary.seconds:.1f}s. Results: {summary.results_path}"
    )
    for tag in summary.failed_cells:
        console.print(f"[red]failed:[/red] {tag}")
    if summary.unfinished_cells:
        console.print(
            f"[yellow]{len(summary.unfinished_cells)} cells did not run[/yellow] (the sweep was interrupted); "
            "finished cells and trained models are kept: run the same command again to resume"
        )
    return summary
