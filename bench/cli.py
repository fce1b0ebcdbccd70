"""The ``bench`` command: run, plan, report, ui.

Exit codes: 0 success; 1 some cells failed; 2 invalid input (nothing was written).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import click
from rich.console import Console

from bench.grid import Grid, GridError, load_grid

EXIT_FAILED_CELLS, EXIT_BAD_INPUT = 1, 2


def _load(path: str) -> Grid:
    try:
        return load_grid(path)
    except GridError as error:
        click.echo(f"error: {error}", err=True)
        sys.exit(EXIT_BAD_INPUT)


results_option = click.option(
    "--results-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("results"),
    show_default=True,
    help="Root of the result store; a grid's results go to <results-dir>/<grid name>/.",
)


@click.group()
@click.version_option(package_name="bench")
def main() -> None:
    """Backdoor-defense benchmarks as sweeps."""


@main.command()
@click.argument("grid_file", type=click.Path(path_type=Path))
@results_option
@click.option("--address", default=None, help="Join the Ray cluster at this address (e.g. 'auto'); default: start a local Ray.")
@click.option("--mlflow-uri", default=None, help="MLflow tracking URI; default: $MLFLOW_TRACKING_URI, else sqlite under the results dir.")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None, help="Where datasets live; default: the grid's data.root, $BENCH_DATA_DIR, ./data.")
@click.option("--no-download", is_flag=True, help="Never download a missing dataset.")
@click.option("--max-concurrent", type=int, default=0, help="At most this many trials at once (0: as resources allow).")
def run(grid_file: Path, results_dir: Path, address, mlflow_uri, data_dir, no_download, max_concurrent) -> None:
    """Run every unfinished cell of GRID_FILE."""
    from bench.sweep import SweepOptions, run_sweep

    grid = _load(str(grid_file))
    options = SweepOptions(
        results_dir=results_dir.resolve(),
        data_dir=data_dir,
        download=False if no_download else None,
        address=address,
        mlflow_uri=mlflow_uri,
        max_concurrent=max_concurrent,
    )
    summary = run_sweep(grid, options, Console(soft_wrap=True, width=None if sys.stdout.isatty() else 140))
    sys.exit(summary.exit_code)


@main.command()
@click.argument("grid_file", type=click.Path(path_type=Path))
def plan(grid_file: Path) -> None:
    """Print what GRID_FILE would run: cells, backdoored models, resources per trial."""
    from bench.cells import expand, group_by_attack

    grid = _load(str(grid_file))
    cells = expand(grid)
    models = group_by_attack(cells)
    click.echo(f"grid {grid.name} ({grid.path}), hash {grid.hash}")
    click.echo(f"cells: {len(cells)}")
    click.echo(f"backdoored models to train: {len(models)}")
    click.echo(f"trials: {len(models)} attack + {len(cells)} defense")
    click.echo(f"resources per trial: cpu {grid.resources.cpu:g}, gpu {grid.resources.gpu:g}")
    axes = {
        "datasets": grid.datasets,
        "archs": grid.archs,
        "attacks": [a.label for a in grid.attacks],
        "poison ratios": grid.poison_ratios,
        "targets": [f"{t.mode}:{t.label}" for t in grid.targets],
        "defenses": [d.label for d in grid.defenses],
        "clean fractions": grid.clean_fractions,
        "seeds": grid.seeds,
    }
    for name, values in axes.items():
        click.echo(f"  {name}: {', '.join(str(v) for v in values)}")


@main.command()
@click.argument("names", nargs=-1)
@click.option("--markdown", is_flag=True, help="Markdown for every method (docs/methods.md is this output).")
def methods(names: tuple[str, ...], markdown: bool) -> None:
    """Print each method's parameters, defaults, bounds and provenance (every method, or NAMES)."""
    from bench.methods import card_markdown, card_text

    if markdown and names:
        click.echo("error: --markdown prints every method; leave out the names", err=True)
        sys.exit(EXIT_BAD_INPUT)
    try:
        click.echo(card_markdown() if markdown else card_text(names), nl=False)
    except KeyError as error:
        click.echo(f"error: {error.args[0]}", err=True)
        sys.exit(EXIT_BAD_INPUT)


@main.command()
@click.argument("source", type=click.Path(path_type=Path))
@results_option
@click.option("--format", "fmt", default="markdown", show_default=True,
              help="Output: latex, markdown, html, csv or json (plots come with every format).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Output folder; default: <results-dir>/<grid>/report, or report/ next to a results file.")
@click.option("--dataset", "datasets", multiple=True, help="Only this dataset (repeatable).")
@click.option("--arch", "archs", multiple=True, help="Only this architecture (repeatable).")
@click.option("--rho", "rhos", type=float, multiple=True, help="Only this poison ratio (repeatable).")
@click.option("--fraction", "fractions", type=float, multiple=True, help="Only this clean-data fraction (repeatable).")
@click.option("--metrics", default="acc,asr,ra,der", show_default=True,
              help="Table columns per defense, comma-separated, in order: acc (C-Acc), asr, ra, der.")
@click.option("--rank-by", default="der", show_default=True, help="Metric of the average-rank row: acc, asr, ra or der.")
@click.option("--cost", is_flag=True, help="Add a row with each defense's mean wall time (defense stage, seconds).")
@click.option("--no-plots", is_flag=True, help="Write the tables only.")
def report(source: Path, results_dir: Path, fmt: str, out: Path | None, datasets, archs, rhos, fractions,
           metrics: str, rank_by: str, cost: bool, no_plots: bool) -> None:
    """Write the leaderboard and plots for SOURCE: a grid file, a grid's results folder or a results .parquet file."""
    import pandas as pd

    from bench.cells import expand
    from bench.report import FORMATS, ReportOptions, select_rows, write_report
    from bench.store import ResultStore

    def fail(message: str) -> None:
        click.echo(f"error: {message}", err=True)
        sys.exit(EXIT_BAD_INPUT)

    if fmt not in FORMATS:
        fail(f"--format {fmt!r} is not one of {', '.join(sorted(FORMATS))}")
    try:
        options = ReportOptions(tuple(m.strip() for m in metrics.split(",") if m.strip()), rank_by.strip(), cost)
    except ValueError as error:
        fail(f"--metrics/--rank-by: {error}")
    grid_text = None
    if source.suffix == ".parquet":
        if not source.is_file():
            fail(f"{source}: no such results file")
        frame, default_out = pd.read_parquet(source), source.parent / "report"
    elif source.is_dir():
        store = ResultStore(source)
        if not store.row_files():
            fail(f"{source}: no result rows under {store.rows_dir} (expected a grid's results folder, results/<grid name>)")
        order = store.compacted_order()  # the grid's order, as `bench run` compacted it; new rows come last
        store.compact(order)
        frame, default_out = store.load(order), source / "report"
    else:
        grid = _load(str(source))
        store = ResultStore(results_dir / grid.name)
        if not store.row_files():
            fail(f"no results for grid {grid.name} under {store.root}; run `bench run {source}` first")
        order = [cell.cell_id for cell in expand(grid)]
        store.compact(order)
        frame, default_out = store.load_cells(order), store.root / "report"
        stale = len(store.row_files()) - len(frame)
        if stale:
            click.echo(f"{stale} stored rows are of cells no longer in {source} (changed parameters?); left out")
        grid_text = source.read_text(encoding="utf-8")
    if frame.empty:
        fail(f"{source}: no result rows")
    try:
        frame = select_rows(frame, datasets=datasets, archs=archs, rhos=rhos, fractions=fractions)
        if frame.empty:
            fail("no result rows match all the filters together")
        written = write_report(frame, out or default_out, fmt, options, grid_text=grid_text, with_plots=not no_plots)
    except ValueError as error:
        fail(str(error))
    for path in written:
        click.echo(str(path))


@main.command()
@results_option
@click.option("--port", type=int, default=5000, show_default=True)
def ui(results_dir: Path, port: int) -> None:
    """Open the MLflow UI over the project's store, on 127.0.0.1."""
    from bench.tracking import default_tracking_uri

    database = results_dir.resolve() / "mlflow.db"
    if not database.exists():
        click.echo(f"error: no MLflow store at {database}; run a grid first", err=True)
        sys.exit(EXIT_BAD_INPUT)
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", default_tracking_uri(results_dir),
               "--host", "127.0.0.1", "--port", str(port)]
    click.echo(f"MLflow UI on http://127.0.0.1:{port} (Ctrl-C stops it)")
    sys.exit(subprocess.call(command, env=env))


if __name__ == "__main__":
    main()
