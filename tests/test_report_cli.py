"""``bench report`` on a results file and on a grid: formats, filters, metric selection,
ranks and cost options, the grid text in the HTML page, and exit 2 with nothing written
on bad input."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from bench.cells import expand
from bench.cli import main
from bench.grid import load_grid
from bench.store import ResultStore
from tests.test_cli import _fake_rows
from tests.test_grid import VALID
from tests.test_report import results


@pytest.fixture
def parquet(tmp_path):
    path = tmp_path / "runs" / "results.parquet"
    path.parent.mkdir()
    results().to_parquet(path)
    return path


def test_results_file_with_filters_metrics_rank_and_cost(parquet, tmp_path):
    out = tmp_path / "out"
    outcome = CliRunner().invoke(main, [
        "report", str(parquet), "--format", "json", "--out", str(out), "--rho", "0.1", "--fraction", "0.05",
        "--metrics", "der, acc", "--rank-by", "acc", "--cost", "--no-plots",
    ])
    assert outcome.exit_code == 0, outcome.output
    assert outcome.output.splitlines() == [str(out / "leaderboard.json")]
    document = json.loads((out / "leaderboard.json").read_text())
    assert [m["name"] for m in document["metrics"]] == ["der", "acc"] and document["rank_by"] == "acc_after"
    (table,) = document["tables"]
    assert (table["poison_ratio"], table["clean_fraction"]) == (0.1, 0.05)
    assert {e["metric"] for e in table["entries"]} == {"der", "acc_after"}
    assert table["average_rank"] == {"ft": 1.0, "ftsam(rho=2.0)": 2.0}  # C-Acc on badnets: 93.0 vs 92.0
    assert table["cost_seconds"]["ft"]["mean"] == pytest.approx(11.5)


def test_results_file_default_out_is_next_to_it(parquet):
    outcome = CliRunner().invoke(main, ["report", str(parquet), "--format", "latex", "--no-plots"])
    assert outcome.exit_code == 0, outcome.output
    report = parquet.parent / "report"
    assert sorted(p.name for p in report.iterdir()) == ["leaderboard.tex", "leaderboard_standalone.tex"]


def test_grid_source_puts_the_grid_file_in_the_html_page(tmp_path):
    path = tmp_path / "grid.yaml"
    path.write_text(VALID)
    grid = load_grid(path)
    store = ResultStore(tmp_path / "results" / grid.name)
    for row in _fake_rows(grid, ["ok", "ok", "ok", "failed"]):
        store.write_row(row)
    out = tmp_path / "out"
    outcome = CliRunner().invoke(main, ["report", str(path), "--results-dir", str(tmp_path / "results"),
                                        "--format", "html", "--out", str(out), "--no-plots"])
    assert outcome.exit_code == 0, outcome.output
    page = (out / "index.html").read_text()
    assert '<pre id="grid-file">name: tiny\n' in page and "attacks: [badnets, {name: blended, alpha: 0.1}]" in page
    assert grid.hash in page and 'class="failed"' in page


@pytest.mark.parametrize(
    "args, message",
    [
        (["--format", "docx"], "--format 'docx' is not one of csv, html, json, latex, markdown"),
        (["--metrics", "acc,bogus"], "unknown metric 'bogus'; allowed: acc, asr, ra, der"),
        (["--rank-by", "auc"], "unknown metric 'auc'"),
        (["--rho", "0.5"], "no rows with poison_ratio 0.5; present: 0.01, 0.1"),
        (["--dataset", "mnist"], "no rows with dataset mnist; present: cifar10"),
    ],
)
def test_bad_input_exits_2_and_writes_nothing(parquet, tmp_path, args, message):
    out = tmp_path / "out"
    outcome = CliRunner().invoke(main, ["report", str(parquet), "--out", str(out), "--no-plots", *args])
    assert outcome.exit_code == 2, outcome.output
    assert outcome.output.startswith("error: ") and message in outcome.output
    assert not out.exists()


def test_missing_results_file_exits_2(tmp_path):
    outcome = CliRunner().invoke(main, ["report", str(tmp_path / "nope.parquet")])
    assert outcome.exit_code == 2 and "nope.parquet: no such results file" in outcome.output


def test_results_folder_source_compacts_its_rows_and_reports_them(tmp_path):
    grid = load_grid(_grid_file(tmp_path))
    folder = tmp_path / "results" / grid.name
    store = ResultStore(folder)
    for row in _fake_rows(grid, ["ok", "ok", "ok", "failed"]):
        store.write_row(row)
    outcome = CliRunner().invoke(main, ["report", str(folder), "--format", "csv", "--no-plots"])
    assert outcome.exit_code == 0, outcome.output
    assert (folder / "results.parquet").is_file()
    assert sorted(p.name for p in (folder / "report").iterdir()) == ["leaderboard.csv"]
    assert len(store.load()) == 4


def test_results_folder_source_keeps_the_order_bench_run_compacted(tmp_path):
    path = tmp_path / "grid.yaml"
    path.write_text(VALID.replace("defenses: [none, {name: ft, epochs: 1}]", "defenses: [none, nad, ft, anp, fp]"))
    grid = load_grid(path)
    folder = tmp_path / "results" / grid.name
    store = ResultStore(folder)
    for row in _fake_rows(grid, ["ok"] * 10):
        store.write_row(row)
    grid_order = [cell.cell_id for cell in expand(grid)]
    assert store.load()["cell_id"].tolist() != grid_order  # row files alone come in cell-id order
    store.compact(grid_order)  # as `bench run` leaves it
    args = ["--format", "csv", "--no-plots"]
    from_grid = CliRunner().invoke(main, ["report", str(path), "--results-dir", str(tmp_path / "results"), *args,
                                          "--out", str(tmp_path / "a")])
    from_folder = CliRunner().invoke(main, ["report", str(folder), *args, "--out", str(tmp_path / "b")])
    assert from_grid.exit_code == from_folder.exit_code == 0, from_folder.output
    assert (tmp_path / "a" / "leaderboard.csv").read_text() == (tmp_path / "b" / "leaderboard.csv").read_text()
    assert store.compacted_order() == grid_order


def test_grid_source_leaves_out_rows_of_cells_no_longer_in_the_grid(tmp_path):
    grid = load_grid(_grid_file(tmp_path))
    store = ResultStore(tmp_path / "results" / grid.name)
    rows = _fake_rows(grid, ["ok"] * 4)
    for row in rows:
        store.write_row(row)
    args = ["report", str(tmp_path / "grid.yaml"), "--results-dir", str(tmp_path / "results"), "--format", "csv", "--no-plots"]
    before = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "a")])
    store.write_row({**rows[0], "cell_id": "0000000000000000", "acc_after": 0.0, "asr_after": 1.0})  # e.g. old parameters
    after = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "b")])
    assert before.exit_code == after.exit_code == 0, after.output
    assert "1 stored rows are of cells no longer in" in after.output
    assert (tmp_path / "a" / "leaderboard.csv").read_text() == (tmp_path / "b" / "leaderboard.csv").read_text()


def test_empty_results_folder_exits_2_naming_it(tmp_path):
    outcome = CliRunner().invoke(main, ["report", str(tmp_path)])
    assert outcome.exit_code == 2 and f"{tmp_path}: no result rows" in outcome.output
    assert not (tmp_path / "report").exists()


def _grid_file(tmp_path):
    path = tmp_path / "grid.yaml"
    path.write_text(VALID)
    return path
