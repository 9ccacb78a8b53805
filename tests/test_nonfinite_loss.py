"""A NaN training loss stops training with the step and item ids named, or skips the batch and counts it."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient
from training_corpus import overrides, write_corpus

from diffuspeech.recipe import load_recipe
from diffuspeech.training.checkpointing import read_checkpoint
from diffuspeech.training.module import NonFiniteLossError
from diffuspeech.training.run import train

pytestmark = pytest.mark.slow

POISONED = "backbone.name=poisoned_backbone:PoisonedLLaDA"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("nonfinite") / "data")


def test_nan_loss_stops_with_step_and_ids(corpus: Path, tmp_path: Path) -> None:
    """With nonfinite_loss=stop, the third batch's NaN stops training at global step 2, naming its items."""
    recipe = load_recipe(
        "tiny", [*overrides(corpus, tmp_path / "run", max_steps=6), POISONED, "backbone.args.nan_calls=[3]"]
    )

    with pytest.raises(NonFiniteLossError, match=r"non-finite training loss \(nan\) at global step 2 ") as caught:
        train(recipe)

    message = str(caught.value)
    assert "batch item ids: train-" in message
    assert "training.nonfinite_loss=skip" in message


def test_nan_loss_skipped_and_counted(corpus: Path, tmp_path: Path) -> None:
    """With nonfinite_loss=skip, two NaN batches are skipped, counted in MLflow, and training reaches max_steps."""
    output_dir = tmp_path / "run"
    recipe = load_recipe(
        "tiny",
        [
            *overrides(corpus, output_dir, max_steps=6, nonfinite_loss="skip"),
            POISONED,
            "backbone.args.nan_calls=[2,5]",
        ],
    )

    last = train(recipe)

    checkpoint = read_checkpoint(last)
    assert checkpoint["global_step"] == 6
    assert checkpoint["diffuspeech"]["skipped_batches"] == 2
    assert all(torch.isfinite(value).all() for value in checkpoint["state_dict"].values())
    client = MlflowClient(f"sqlite:///{output_dir / 'mlflow.db'}")
    run_id = (output_dir / "mlflow_run_id").read_text().strip()
    history = client.get_metric_history(run_id, "train/nonfinite_skipped")
    assert max(point.value for point in history) == 2
    losses = client.get_metric_history(run_id, "train/loss")
    assert losses
    assert all(math.isfinite(point.value) for point in losses)
