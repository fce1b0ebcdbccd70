"""The command line: exit codes, messages, nothing written on bad input, plan and report."""

from __future__ import annotations

import math

import pytest
from click.testing import CliRunner

from bench.cells import expand
from bench.cli import main
from bench.grid import load_grid
from bench.rows import COLUMNS
from bench.store import ResultStore
from tests.test_grid import VALID

BAD_GRIDS = {
    "unknown key": VALID + "colour: blue\n",
    "unknown method": VALID.replace("[badnets,", "[badnet,"),
    "ratio outside (0, 1]": VALID.replace("poison_ratios: [0.1]", "poison_ratios: [1.1]"),
    "empty axis": VALID.replace("seeds: [0]", "seeds: []"),
    "yaml syntax": VALID.replace("seeds: [0]", "seeds: [0"),
}


@pytest.mark.parametrize("case", sorted(BAD_GRIDS))
@pytest.mark.parametrize("command", ["run", "plan", "report"])
def test_bad_grid_exits_2_and_writes_nothing(tmp_path, case, command):
    path = tmp_path / "grid.yaml"
    path.write_text(BAD_GRIDS[case])
    results = tmp_path / "results"
    args = [command, str(path)] + ([] if command == "plan" else ["--results-dir", str(results)])
    outcome = CliRunner().invoke(main, args)
    assert outcome.exit_code == 2, outcome.output
    message = outcome.output.strip()
    assert message.startswith(f"error: {path}: ") and len(message.splitlines()) == 1
    assert not results.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grid.yaml"]


def test_missing_grid_file_exits_2(tmp_path):
    outcome = CliRunner().invoke(main, ["run", str(tmp_path / "nope.yaml"), "--results-dir", str(tmp_path / "r")])
    assert outcome.exit_code == 2
    assert "nope.yaml: no such grid file" in outcome.output
    assert not (tmp_path / "r").exists()


def test_plan_counts_cells_models_and_resources(tmp_path):
    path = tmp_path / "grid.yaml"
    path.write_text(VALID.replace("poison_ratios: [0.1]", "poison_ratios: [0.1, 0.05]") + "resources: {cpu: 2, gpu: 0.25}\n")
    outcome = CliRunner().invoke(main, ["plan", str(path)])
    assert outcome.exit_code == 0, outcome.output
    # 2 attacks × 2 ratios × 2 defenses × 1 fraction = 8 cells from 4 models
    assert "cells: 8\n" in outcome.output
    assert "backdoored models to train: 4\n" in outcome.output
    assert "resources per trial: cpu 2, gpu 0.25" in outcome.output


def _fake_rows(grid, statuses):
    rows = []
    for i, (cell, status) in enumerate(zip(expand(grid), statuses)):
        row = {name: math.nan for name in COLUMNS}
        row.update(
            grid=grid.name, dataset=cell.dataset, arch=cell.arch, attack=cell.attack.name,
            attack_label=cell.attack.label, attack_params="{}", poison_ratio=cell.poison_ratio,
            target_mode="all2one", target_label=0, defense=cell.defense.name, defense_label=cell.defense.label,
            defense_params="{}", clean_fraction=cell.clean_fraction, seed=cell.seed, cell_id=cell.cell_id,
            attack_key=cell.attack_key, status=status, error="", n_poison=1, n_clean=1, device="cpu", node="",
            torch_version="", bench_version="", git_commit="", grid_hash=grid.hash, finished_at="", detection="",
        )
        if status == "ok":
            row.update(acc_before=0.9, asr_before=1.0, ra_before=0.0, acc_after=0.9 - 0.01 * i,
                       asr_after=0.5, ra_after=0.4, der=0.7)
        rows.append(row)
    return rows


def test_report_writes_tables_and_shows_failed_cells(tmp_path):
    path = tmp_path / "grid.yaml"
    path.write_text(VALID)
    grid = load_grid(path)
    store = ResultStore(tmp_path / "results" / grid.name)
    for row in _fake_rows(grid, ["ok", "ok", "ok", "failed"]):
        store.write_row(row)
    outcome = CliRunner().invoke(main, ["report", str(path), "--results-dir", str(tmp_path / "results"),
                                        "--format", "markdown", "--out", str(tmp_path / "out")])
    assert outcome.exit_code == 0, outcome.output
    table = (tmp_path / "out" / "leaderboard.md").read_text()
    blended_row = next(line for line in table.splitlines() if line.startswith("| blended"))
    assert "failed" in blended_row and "| 88.0 |" in blended_row  # blended/none ok (0.88), blended/ft failed
    assert (store.root / "results.parquet").exists()


def test_report_without_results_exits_2(tmp_path):
    path = tmp_path / "grid.yaml"
    path.write_text(VALID)
    outcome = CliRunner().invoke(main, ["report", str(path), "--results-dir", str(tmp_path / "results")])
    assert outcome.exit_code == 2 and "no results for grid tiny" in outcome.output


def test_report_rejects_unknown_format(tmp_path):
    path = tmp_path / "grid.yaml"
    path.write_text(VALID)
    outcome = CliRunner().invoke(main, ["report", str(path), "--format", "docx"])
    assert outcome.exit_code == 2 and "not one of csv, html, json, latex, markdown" in outcome.output
