"""MLflow tracking: the embedded default is a SQLite database in the run folder.

The tracking URI is, in order: the recipe's ``tracking.uri``, the
``MLFLOW_TRACKING_URI`` environment variable, then
``sqlite:///<output_dir>/mlflow.db`` (no server needed). A server that
cannot be reached never stops training: see ``FaultTolerantMLFlowLogger``
and ``make_logger``.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import tempfile
import time
from argparse import Namespace
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import MLFlowLogger
from lightning.pytorch.utilities import rank_zero_only
from mlflow.exceptions import MlflowException
from omegaconf import DictConfig, OmegaConf
from requests.exceptions import RequestException

log = logging.getLogger(__name__)


def tracking_uri(recipe: DictConfig) -> str:
    """Return the tracking URI the recipe resolves to."""
    configured = OmegaConf.select(recipe, "tracking.uri", default=None)
    if configured:
        return str(configured)
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    database = Path(str(recipe.output_dir)).resolve() / "mlflow.db"
    database.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{database}"


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """Flatten nested mappings and lists to dotted keys, as MLflow parameters."""
    flat: dict[str, Any] = {}
    if isinstance(node, dict):
        for key, value in node.items():
            flat.update(flatten(value, f"{prefix}{key}."))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            flat.update(flatten(value, f"{prefix}{index}."))
    else:
        flat[prefix.rstrip(".")] = node
    return flat


HTTP_LIMITS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
"""MLflow HTTP settings used unless the environment sets them: a dead server costs seconds, not minutes.

MLflow's own defaults (7 retries with exponential backoff, 120 s timeout)
can stall training for minutes per call when the server is down. Without
retries, one failed call switches the run to local recording for good
(see ``FaultTolerantMLFlowLogger``), so set MLFLOW_HTTP_REQUEST_MAX_RETRIES
on a network that drops requests now and then.
"""

TRACKING_ERRORS = (MlflowException, OSError, RequestException)
"""Exceptions that an MLflow call raises when its server or database cannot be reached."""


class FaultTolerantMLFlowLogger(MLFlowLogger):
    """An MLflow logger that keeps training going when the tracking server stops responding.

    After the first failed call it warns once, stops calling the server, and
    appends everything it could not send to ``pending`` (JSON lines of
    metrics, parameters and the final status). Artifacts are copied into
    ``pending``'s folder under ``mlflow_pending_artifacts/``.
    """

    def __init__(self, pending: Path, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.pending = pending
        self.offline = False

    def _record(self, error: BaseException | None, entry: dict[str, Any]) -> None:
        if not self.offline:
            self.offline = True
            log.warning(
                "MLflow tracking at %s failed (%s); training goes on and records what it cannot send in %s",
                self._tracking_uri,
                str(error).splitlines()[0][:300] if error else "unreachable",
                self.pending,
            )
        self.pending.parent.mkdir(parents=True, exist_ok=True)
        with self.pending.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps({"run_id": self._run_id, "time": time.time(), **entry}) + "\n")

    @rank_zero_only
    def log_hyperparams(self, params: dict[str, Any] | Namespace) -> None:
        plain = vars(params) if isinstance(params, Namespace) else dict(params)
        error: BaseException | None = None
        if not self.offline:
            try:
                super().log_hyperparams(params)
                return
            except TRACKING_ERRORS as caught:
                error = caught
        self._record(error, {"params": {key: str(value) for key, value in plain.items()}})

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        error: BaseException | None = None
        if not self.offline:
            try:
                super().log_metrics(metrics, step)
                return
            except TRACKING_ERRORS as caught:
                error = caught
        self._record(error, {"step": step, "metrics": {key: float(value) for key, value in metrics.items()}})

    def log_file(self, path: Path, artifact_path: str | None = None) -> None:
        """Upload one file into the run's artifacts under ``artifact_path`` (None: the root), or keep a copy."""
        error: BaseException | None = None
        if not self.offline:
            try:
                self.experiment.log_artifact(self.run_id, str(path), artifact_path)
                return
            except TRACKING_ERRORS as caught:
                error = caught
        copy = self.pending.parent / "mlflow_pending_artifacts" / (artifact_path or "") / path.name
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, copy)
        self._record(error, {"artifact": str(copy), "artifact_path": artifact_path})

    @rank_zero_only
    def finalize(self, status: str = "success") -> None:
        error: BaseException | None = None
        if not self.offline:
            try:
                super().finalize(status)
                return
            except TRACKING_ERRORS as caught:
                error = caught
        self._record(error, {"status": status})


def _http_limits(uri: str) -> None:
    if uri.startswith(("http://", "https://")):
        for name, value in HTTP_LIMITS.items():
            os.environ.setdefault(name, value)


@contextmanager
def _database_lock(uri: str) -> Iterator[None]:
    """Hold an exclusive lock beside a SQLite tracking database while a run is set up.

    Two processes creating the database, its tables or the same experiment at
    once would otherwise race, and one of them fails. Metric writes later are
    short transactions that SQLite serializes itself.
    """
    if not uri.startswith("sqlite:///"):
        yield
        return
    lock_path = Path(uri[len("sqlite:///") :]).with_suffix(".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _open_logger(recipe: DictConfig, uri: str, run_id: str | None) -> FaultTolerantMLFlowLogger:
    settings = recipe.tracking
    output_dir = Path(str(recipe.output_dir)).resolve()
    # With the embedded SQLite database, artifacts go beside it instead of into ./mlruns of the
    # current folder. An experiment that already exists keeps the artifact location it was made with.
    artifacts = (output_dir / "mlartifacts").as_uri() if uri.startswith("sqlite:") else None
    # MLflow's set_tracking_uri, which the logger calls, also sets MLFLOW_TRACKING_URI. Restoring it
    # keeps a later run in the same process from logging into this run's database.
    before = os.environ.get("MLFLOW_TRACKING_URI")
    try:
        # The client that the logger creates migrates a new database, so it is made under the lock too.
        with _database_lock(uri):
            logger = FaultTolerantMLFlowLogger(
                pending=output_dir / "mlflow_pending.jsonl",
                experiment_name=str(settings.experiment),
                run_name=str(settings.run_name) if settings.get("run_name") else None,
                tracking_uri=uri,
                run_id=run_id,
                artifact_location=artifacts,
            )
            _ = logger.experiment  # creates the experiment and the run, or raises when unreachable
    finally:
        if before is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = before
    return logger


def _stored_run(output_dir: Path, uri: str) -> str | None:
    """Return the run id that a killed run in ``output_dir`` logged to ``uri``, or None."""
    run_file, uri_file = output_dir / "mlflow_run_id", output_dir / "mlflow_tracking_uri"
    if not run_file.is_file():
        return None
    stored_uri = uri_file.read_text(encoding="utf-8").strip() if uri_file.is_file() else None
    if stored_uri is not None and stored_uri != uri:
        log.warning("The earlier run logged to %s, not %s; starting a new MLflow run", stored_uri, uri)
        return None
    return run_file.read_text(encoding="utf-8").strip() or None


def make_logger(recipe: DictConfig, resume: bool = False) -> FaultTolerantMLFlowLogger:
    """Create the MLflow logger of a run and log the resolved recipe and its parameters.

    With ``resume``, the run recorded in ``output_dir/mlflow_run_id`` is
    continued when it exists at the same tracking URI. The run id and URI are
    written to ``output_dir`` at once, so a killed run can be continued. An
    unreachable tracking server gives one warning and the run is recorded in
    the SQLite database of ``output_dir`` instead.
    """
    output_dir = Path(str(recipe.output_dir)).resolve()
    uri = tracking_uri(recipe)
    _http_limits(uri)
    run_id = _stored_run(output_dir, uri) if resume else None
    if getattr(rank_zero_only, "rank", 0) != 0:
        # Lightning gives other ranks a no-op experiment; only rank 0 writes the run files and parameters.
        return _open_logger(recipe, uri, run_id)
    try:
        logger = _open_logger(recipe, uri, run_id)
    except TRACKING_ERRORS as error:
        if run_id is not None and "RESOURCE_DOES_NOT_EXIST" in str(error):
            log.warning("MLflow run %s not found at %s; starting a new run", run_id, uri)
            run_id = None
            logger = _open_logger(recipe, uri, None)
        elif uri.startswith("sqlite:"):
            raise
        else:
            local = f"sqlite:///{output_dir / 'mlflow.db'}"
            log.warning(
                "MLflow tracking server %s is unreachable (%s); recording this run in %s instead",
                uri,
                str(error).splitlines()[0][:300],
                local,
            )
            uri, run_id = local, _stored_run(output_dir, local) if resume else None
            logger = _open_logger(recipe, uri, run_id)

    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "mlflow_run_id").write_text(f"{logger.run_id}\n", encoding="utf-8")
    (output_dir / "mlflow_tracking_uri").write_text(f"{uri}\n", encoding="utf-8")
    if run_id is None:
        container = OmegaConf.to_container(recipe, resolve=True)
        assert isinstance(container, dict)
        logger.log_hyperparams(flatten(container))
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "recipe.yaml"
            path.write_text(OmegaConf.to_yaml(recipe, resolve=True), encoding="utf-8")
            logger.log_file(path)
        log.info("MLflow run %s at %s", logger.run_id, uri)
    else:
        log.info("Continuing MLflow run %s at %s", logger.run_id, uri)
    return logger


def log_artifact(logger: MLFlowLogger, path: Path, artifact_path: str) -> None:
    """Upload one file into the run's artifacts under ``artifact_path``."""
    if isinstance(logger, FaultTolerantMLFlowLogger):
        logger.log_file(path, artifact_path)
    else:
        logger.experiment.log_artifact(logger.run_id, str(path), artifact_path)
