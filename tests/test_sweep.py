"""End to end through Ray Tune on a tiny grid: rows, MLflow runs, training once, resume, failures."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner
from mlflow.tracking import MlflowClient

from bench.cells import expand, group_by_attack
from bench.cli import main
from bench.grid import load_grid
from bench.rows import COLUMNS
from bench.sweep import SweepOptions, run_sweep
from bench.tracking import CELL_TAG, NODE_TAG, STAGE_TAG, default_tracking_uri

pytestmark = pytest.mark.slow

TINY = """\
name: tiny
seeds: [0]
datasets: [digits]
archs: [small_cnn]
attacks: [badnets]
poison_ratios: [0.1]
defenses: [none, {{name: ft, epochs: 1, batch_size: 32}}]
clean_fractions: [0.05]
train: {{epochs: 2, batch_size: 64, lr: 0.05}}
resources: {{cpu: 1, gpu: {gpu}}}
"""


def grid_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def runs(uri: str, stage: str) -> list:
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("tiny")
    return client.search_runs([experiment.experiment_id], filter_string=f"tags.`{STAGE_TAG}` = '{stage}'")


def test_run_records_rows_and_runs_then_resumes_without_training(tmp_path):
    # GPU asked for on a machine without one: degrades to CPU with a notice, never hangs.
    path = grid_file(tmp_path, TINY.format(gpu=0.5))
    results = tmp_path / "results"
    first = CliRunner().invoke(main, ["run", str(path), "--results-dir", str(results)])
    assert first.exit_code == 0, first.output
    assert "no GPU in the Ray cluster" in first.output

    grid = load_grid(path)
    cells = expand(grid)
    rows = pd.read_parquet(results / "tiny" / "results.parquet")
    assert list(rows.columns) == list(COLUMNS)
    assert sorted(rows["cell_id"]) == sorted(c.cell_id for c in cells)
    assert set(rows["status"]) == {"ok"}
    for column in ("acc_before", "asr_before", "acc_after", "asr_after", "ra_after", "der"):
        assert rows[column].between(0, 1).all(), column
    undefended = rows[rows["defense"] == "none"].iloc[0]
    assert undefended["acc_after"] == undefended["acc_before"]
    assert undefended["der"] == 0.5
    assert rows["grid_hash"].unique().tolist() == [grid.hash]
    assert (rows["n_poison"] == 144).all()  # round(0.1 × 1437)

    uri = default_tracking_uri(results)
    attack_runs, cell_runs = runs(uri, "attack"), runs(uri, "defense")
    assert len(attack_runs) == len(group_by_attack(cells)) == 1  # trained exactly once
    assert sorted(r.data.tags[CELL_TAG] for r in cell_runs) == sorted(rows["cell_id"])
    ft_run = next(r for r in cell_runs if r.data.params["defense"] == "ft")
    assert ft_run.data.metrics["acc_after"] == pytest.approx(rows.loc[rows["defense"] == "ft", "acc_after"].item())
    assert ft_run.info.status == "FINISHED"
    client = MlflowClient(tracking_uri=uri)
    history = client.get_metric_history(attack_runs[0].info.run_id, "train_loss")
    assert len(history) == 2  # one point per attack-training epoch
    parent = client.get_run(ft_run.data.tags["mlflow.parentRunId"])
    assert parent.info.status == "FINISHED"
    top = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"tiny.yaml", "results.parquet", "report"} <= top
    assert "report/index.html" in {a.path for a in client.list_artifacts(parent.info.run_id, "report")}

    row_files = sorted((results / "tiny" / "rows").glob("*.parquet"))
    stamps = [f.stat().st_mtime_ns for f in row_files]
    second = CliRunner().invoke(main, ["run", str(path), "--results-dir", str(results)])
    assert second.exit_code == 0, second.output
    assert "Nothing to run" in second.output
    assert sorted((results / "tiny" / "rows").glob("*.parquet")) == row_files
    assert [f.stat().st_mtime_ns for f in row_files] == stamps
    assert len(runs(uri, "attack")) == 1 and len(runs(uri, "defense")) == len(cells)


def test_new_defense_reuses_the_trained_model(tmp_path):
    results = tmp_path / "results"
    path = grid_file(tmp_path, TINY.format(gpu=0))
    assert run_sweep(load_grid(path), SweepOptions(results_dir=results)).models_trained == 1
    path.write_text(path.read_text().replace("defenses: [none,", "defenses: [none, {name: ftsam, epochs: 1},"))
    summary = run_sweep(load_grid(path), SweepOptions(results_dir=results))
    assert summary.models_trained == 0
    assert summary.finished_before == 2 and summary.counts["ok"] == 1


def test_changed_defense_parameters_rerun_that_entry_and_reports_leave_the_old_rows_out(tmp_path):
    results = tmp_path / "results"
    path = grid_file(tmp_path, TINY.format(gpu=0))
    run_sweep(load_grid(path), SweepOptions(results_dir=results))
    path.write_text(path.read_text().replace("{name: ft, epochs: 1,", "{name: ft, epochs: 2,"))
    summary = run_sweep(load_grid(path), SweepOptions(results_dir=results))  # its MLflow report sees both ft rows
    assert summary.models_trained == 0 and summary.finished_before == 1 and summary.counts["ok"] == 1
    outcome = CliRunner().invoke(main, ["report", str(path), "--results-dir", str(results), "--format", "csv",
                                        "--no-plots", "--out", str(tmp_path / "report")])
    assert outcome.exit_code == 0, outcome.output
    assert "1 stored rows are of cells no longer in" in outcome.output


def test_failed_trial_is_recorded_and_the_sweep_goes_on(tmp_path):
    """cifar10 is absent offline: its attack trial fails, its cells are failed rows, digits still runs."""
    text = TINY.format(gpu=0).replace("datasets: [digits]", "datasets: [digits, cifar10]")
    text += f"data: {{root: {tmp_path / 'no-data'}, download: false}}\n"
    results = tmp_path / "results"
    outcome = CliRunner().invoke(main, ["run", str(grid_file(tmp_path, text)), "--results-dir", str(results)])
    assert outcome.exit_code == 1, outcome.output
    assert "failed: cifar10/small_cnn/badnets/0.1/none/0.05/s0" in outcome.output
    rows = pd.read_parquet(results / "tiny" / "results.parquet").set_index("dataset")
    assert set(rows.loc["digits", "status"]) == {"ok"}
    failed = rows.loc["cifar10"]
    assert set(failed["status"]) == {"failed"}
    assert failed["error"].str.startswith("DatasetUnavailableError: cifar10 is not available").all()
    assert failed["error"].str.contains("cifar-10-batches-py").all()
    assert failed["acc_after"].isna().all()  # missing metrics are NaN, never 0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_logs_to_a_real_mlflow_server(tmp_path):
    port = _free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
         "--artifacts-destination", str(tmp_path / "server-artifacts"), "--workers", "1"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        uri = f"http://127.0.0.1:{port}"
        _wait_for_health(uri, server)
        path = grid_file(tmp_path, TINY.format(gpu=0))
        summary = run_sweep(load_grid(path), SweepOptions(results_dir=tmp_path / "results", mlflow_uri=uri))
        assert summary.counts["ok"] == 2
        assert len(runs(uri, "defense")) == 2 and len(runs(uri, "attack")) == 1
        assert not (tmp_path / "results" / "mlflow.db").exists()
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)


def test_two_node_ray_cluster(tmp_path):
    """The driver's head node has no CPUs, so every trial runs on the other node, away from the driver."""
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    worker = cluster.add_node(num_cpus=2)
    try:
        ray.init(address=cluster.address, log_to_driver=False)
        path = grid_file(tmp_path, TINY.format(gpu=0).replace("poison_ratios: [0.1]", "poison_ratios: [0.1, 0.05]"))
        results = tmp_path / "results"
        summary = run_sweep(load_grid(path), SweepOptions(results_dir=results, address=cluster.address))
        assert summary.counts["ok"] == 4 and summary.models_trained == 2
        assert len([n for n in ray.nodes() if n["Alive"]]) == 2
        attack_nodes = {r.data.tags[NODE_TAG] for r in runs(default_tracking_uri(results), "attack")}
        rows = pd.read_parquet(results / "tiny" / "results.parquet")
        assert attack_nodes | set(rows["node"]) == {worker.node_id}
    finally:
        ray.shutdown()
        cluster.shutdown()


def _wait_for_health(url: str, process: subprocess.Popen, seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            urllib.request.urlopen(f"{url}/health", timeout=2)
            return
        except OSError:
            assert process.poll() is None, "server exited"
            assert time.monotonic() < deadline, f"{url} did not answer in {seconds} s"
            time.sleep(0.5)


def test_ui_serves_the_project_store(tmp_path):
    import json

    from bench.tracking import Tracker

    results = tmp_path / "results"
    Tracker(default_tracking_uri(results), "tiny", results / "mlartifacts").start("a run", {}, {})
    port = _free_port()
    ui = subprocess.Popen(
        [sys.executable, "-m", "bench", "ui", "--results-dir", str(results), "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_for_health(url, ui)
        request = urllib.request.Request(
            f"{url}/api/2.0/mlflow/experiments/search", data=b'{"max_results": 10}',
            headers={"Content-Type": "application/json"},
        )
        names = [e["name"] for e in json.load(urllib.request.urlopen(request, timeout=10))["experiments"]]
        assert "tiny" in names
    finally:
        os.killpg(ui.pid, 15)
        ui.wait(timeout=30)
