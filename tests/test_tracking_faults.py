"""Training goes on when MLflow cannot be reached, and two runs share one SQLite database safely."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from training_corpus import cli_environment, overrides, write_corpus

from diffuspeech.recipe import load_recipe
from diffuspeech.training.tracking import make_logger

# Opens a run in a shared SQLite database and logs 100 metric points; run twice at once.
LOG_METRICS = """
import sys
from diffuspeech.recipe import load_recipe
from diffuspeech.training.tracking import make_logger
output_dir, uri, name = sys.argv[1:]
recipe = load_recipe("tiny", [f"output_dir={output_dir}", f"tracking.uri={uri}", f"tracking.run_name={name}"])
logger = make_logger(recipe)
for step in range(100):
    logger.log_metrics({"value": float(step)}, step=step)
logger.finalize("success")
"""


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_unreachable_server_falls_back_to_local_database(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A server that refuses connections gives one warning, and the run is recorded in output_dir/mlflow.db."""
    uri = f"http://127.0.0.1:{free_port()}"
    recipe = load_recipe("tiny", [f"output_dir={tmp_path}", f"tracking.uri={uri}"])

    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="diffuspeech"):
        logger = make_logger(recipe)
    logger.log_metrics({"loss": 1.0}, step=0)

    assert time.monotonic() - started < 30
    # Lightning's note that it creates the experiment is a warning too; it is not about the server.
    warnings = [
        record.getMessage()
        for record in caplog.records
        if record.levelno >= logging.WARNING and not record.name.startswith("lightning")
    ]
    assert len(warnings) == 1
    assert f"MLflow tracking server {uri} is unreachable" in warnings[0]
    assert f"recording this run in sqlite:///{tmp_path / 'mlflow.db'} instead" in warnings[0]
    local = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert local.get_metric_history(logger.run_id, "loss")[0].value == 1.0
    assert (tmp_path / "mlflow_tracking_uri").read_text().strip() == f"sqlite:///{tmp_path / 'mlflow.db'}"


@pytest.mark.slow
def test_two_processes_share_sqlite_database(tmp_path: Path) -> None:
    """Two processes creating the database, the experiment and a run at once both succeed."""
    uri = f"sqlite:///{tmp_path / 'shared.db'}"
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", LOG_METRICS, str(tmp_path / name), uri, name],
            env=cli_environment(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("first", "second")
    ]
    results = [process.communicate(timeout=240) for process in processes]

    for process, (_, stderr) in zip(processes, results, strict=True):
        assert process.returncode == 0, stderr[-3000:]
    client = MlflowClient(uri)
    runs = client.search_runs([experiment.experiment_id for experiment in client.search_experiments()])
    assert sorted(run.info.run_name for run in runs) == ["first", "second"]
    for run in runs:
        assert len(client.get_metric_history(run.info.run_id, "value")) == 100
        assert run.info.status == "FINISHED"


@pytest.fixture
def mlflow_server(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes], Path]]:
    """Start ``mlflow server`` on a free loopback port with a SQLite store; stop it and its workers at the end."""
    database = tmp_path / "server.db"
    MlflowClient(f"sqlite:///{database}").search_experiments()  # creates the tables here, faster than the server
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable, "-m", "mlflow", "server",
            "--backend-store-uri", f"sqlite:///{database}",
            "--artifacts-destination", str(tmp_path / "server_artifacts"),
            "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            assert server.poll() is None, "mlflow server exited during start-up"
            assert time.monotonic() < deadline, "mlflow server did not answer within 120 s"
            time.sleep(0.2)
        yield uri, server, database
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=30)


@pytest.mark.slow
def test_server_stopped_mid_run(mlflow_server: tuple[str, subprocess.Popen[bytes], Path], tmp_path: Path) -> None:
    """Killing the server after the first metrics arrive leaves training running to the end, with one warning."""
    uri, server, database = mlflow_server
    corpus = write_corpus(tmp_path / "data")
    output_dir = tmp_path / "run"
    command = [
        sys.executable, "-m", "diffuspeech.cli", "train", "tiny",
        *overrides(corpus, output_dir, max_steps=60), f"tracking.uri={uri}",
    ]  # fmt: skip
    training = subprocess.Popen(
        command, env=cli_environment(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        client = MlflowClient(f"sqlite:///{database}")
        deadline = time.monotonic() + 240
        run_file = output_dir / "mlflow_run_id"
        while time.monotonic() < deadline and training.poll() is None:
            if run_file.exists() and client.get_metric_history(run_file.read_text().strip(), "train/loss"):
                break
            time.sleep(0.05)
        assert training.poll() is None, "training ended before the server was stopped"
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=30)
        _, stderr = training.communicate(timeout=300)
    finally:
        if training.poll() is None:
            training.kill()
            training.wait(timeout=30)

    assert training.returncode == 0, stderr[-3000:]
    assert stderr.count(f"MLflow tracking at {uri} failed") == 1
    assert f"records what it cannot send in {output_dir / 'mlflow_pending.jsonl'}" in stderr
    pending = [json.loads(line) for line in (output_dir / "mlflow_pending.jsonl").read_text().splitlines()]
    run_id = run_file.read_text().strip()
    assert {entry["run_id"] for entry in pending} == {run_id}
    pending_steps = {entry["step"] for entry in pending if "train/loss" in entry.get("metrics", {})}
    sent_steps = {point.step for point in client.get_metric_history(run_id, "train/loss")}
    assert sent_steps
    assert max(pending_steps) == 59
    # A request in flight when the server died may have arrived too, so a step can be in both.
    assert sent_steps | pending_steps == set(range(60))
    assert pending[-1]["status"] == "success"
    assert (output_dir / "checkpoints" / "last.ckpt").is_file()
