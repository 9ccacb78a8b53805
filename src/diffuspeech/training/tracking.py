"""MLflow tracking: the embedded default is a SQLite database in the run folder.

The tracking URI is, in order: the recipe's ``tracking.uri``, the
``MLFLOW_TRACKING_URI`` environment variable, then
``sqlite:///<output_dir>/mlflow.db`` (no server needed).
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import MLFlowLogger
from omegaconf import DictConfig, OmegaConf

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


def make_logger(recipe: DictConfig, run_id: str | None = None) -> MLFlowLogger:
    """Create the MLflow logger of a run and log the resolved recipe and its parameters."""
    settings = recipe.tracking
    uri = tracking_uri(recipe)
    # With the embedded SQLite database, artifacts go beside it instead of into ./mlruns of the
    # current folder. An experiment that already exists keeps the artifact location it was made with.
    artifacts = (Path(str(recipe.output_dir)).resolve() / "mlartifacts").as_uri() if uri.startswith("sqlite:") else None
    logger = MLFlowLogger(
        experiment_name=str(settings.experiment),
        run_name=str(settings.run_name) if settings.get("run_name") else None,
        tracking_uri=uri,
        run_id=run_id,
        artifact_location=artifacts,
    )
    container = OmegaConf.to_container(recipe, resolve=True)
    assert isinstance(container, dict)
    if run_id is None:
        logger.log_hyperparams(flatten(container))
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "recipe.yaml"
            path.write_text(OmegaConf.to_yaml(recipe, resolve=True), encoding="utf-8")
            logger.experiment.log_artifact(logger.run_id, str(path))
    log.info("MLflow run %s at %s", logger.run_id, logger._tracking_uri)
    return logger


def log_artifact(logger: MLFlowLogger, path: Path, artifact_path: str) -> None:
    """Upload one file into the run's artifacts under ``artifact_path``."""
    logger.experiment.log_artifact(logger.run_id, str(path), artifact_path)
