"""Training killed with SIGKILL resumes to the same weights as a run that was never interrupted."""

from __future__ import annotations

import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient
from training_corpus import cli_environment, overrides, run_cli, write_corpus

from diffuspeech.data.datamodule import EpochBatchSampler
from diffuspeech.errors import DiffuSpeechError
from diffuspeech.training.checkpointing import SafeCheckpointIO, read_checkpoint

pytestmark = pytest.mark.slow

MAX_STEPS = 14
"""Steps of each run: the 5-batch epochs end at 5 and 10, checkpoints come every 4 steps."""

# Runs training in a child process whose ``torch.save`` writes half of the fourth checkpoint file,
# then kills the process with SIGKILL: a kill in the middle of a save.
DYING_SAVE = """
import io, os, signal, sys, torch
from diffuspeech.cli import main
original = torch.save
saves = [0]
def dying_save(obj, handle, *args, **kwargs):
    saves[0] += 1
    if saves[0] < 4:
        return original(obj, handle, *args, **kwargs)
    buffer = io.BytesIO()
    original(obj, buffer)
    handle.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    handle.flush()
    os.kill(os.getpid(), signal.SIGKILL)
torch.save = dying_save
sys.exit(main(sys.argv[1:]))
"""


def backbone_weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    """Return the backbone tensors of a training checkpoint."""
    state = read_checkpoint(checkpoint)["state_dict"]
    return {key: value for key, value in state.items() if key.startswith("backbone.")}


def assert_same_weights(actual: Path, expected: Path) -> None:
    """Assert bitwise-equal backbone weights and the same global step."""
    assert read_checkpoint(actual)["global_step"] == read_checkpoint(expected)["global_step"] == MAX_STEPS
    weights, reference = backbone_weights(actual), backbone_weights(expected)
    assert weights.keys() == reference.keys()
    for key in reference:
        assert torch.equal(weights[key], reference[key]), key


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("resume") / "data")


@pytest.fixture(scope="module")
def reference_run(corpus: Path) -> Path:
    """An uninterrupted run; returns its last checkpoint."""
    output_dir = corpus.parent / "reference"
    result = run_cli("train", "tiny", *overrides(corpus, output_dir, max_steps=MAX_STEPS))
    assert result.returncode == 0, result.stderr[-3000:]
    return output_dir / "checkpoints" / "last.ckpt"


def single_run(output_dir: Path) -> str:
    """Return the id of the only MLflow run in the run folder's database."""
    client = MlflowClient(tracking_uri=f"sqlite:///{output_dir / 'mlflow.db'}")
    runs = client.search_runs([experiment.experiment_id for experiment in client.search_experiments()])
    assert len(runs) == 1
    return str(runs[0].info.run_id)


def test_sigkill_after_checkpoint_resumes_exactly(corpus: Path, reference_run: Path) -> None:
    """SIGKILL after a checkpoint, then train again: same weights, one MLflow run."""
    output_dir = corpus.parent / "killed"
    command = [
        sys.executable,
        "-m",
        "diffuspeech.cli",
        "train",
        "tiny",
        *overrides(corpus, output_dir, max_steps=MAX_STEPS),
    ]
    last = output_dir / "checkpoints" / "last.ckpt"
    process = subprocess.Popen(command, env=cli_environment(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 240
        while not last.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        assert process.poll() is None, "training ended before the kill"
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.kill()
        process.wait(timeout=60)
        assert process.stderr is not None
        process.stderr.close()
    killed_at = read_checkpoint(last)["global_step"]
    assert 0 < killed_at < MAX_STEPS
    run_id = (output_dir / "mlflow_run_id").read_text().strip()

    resumed = run_cli("train", "tiny", *overrides(corpus, output_dir, max_steps=MAX_STEPS))

    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"Resuming from {last}" in resumed.stderr
    assert f"Continuing MLflow run {run_id}" in resumed.stderr
    assert_same_weights(last, reference_run)
    assert single_run(output_dir) == run_id
    # Lightning logs a step's metrics after its checkpoint, so a kill in between loses that one point.
    history = MlflowClient(f"sqlite:///{output_dir / 'mlflow.db'}").get_metric_history(run_id, "train/loss")
    missing = set(range(MAX_STEPS)) - {point.step for point in history}
    assert missing <= {killed_at - 1}


def test_sigkill_during_save_keeps_last_checkpoint(corpus: Path, reference_run: Path) -> None:
    """A kill half-way through writing last.ckpt leaves the previous one, and resume still matches."""
    output_dir = corpus.parent / "killed_in_save"
    # Saves at steps 5 and 10 (epoch ends): the kill hits last.ckpt of step 10, so training resumes
    # from the end of the first epoch.
    arguments = ["train", "tiny", *overrides(corpus, output_dir, max_steps=MAX_STEPS, checkpoint_interval=5)]
    dying = subprocess.run(
        [sys.executable, "-c", DYING_SAVE, *arguments],
        env=cli_environment(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert dying.returncode == -signal.SIGKILL, dying.stderr[-3000:]
    checkpoints = output_dir / "checkpoints"
    partial = [path.name for path in checkpoints.iterdir() if ".partial-" in path.name]
    assert len(partial) == 1
    assert partial[0].startswith("last.ckpt.partial-")
    assert read_checkpoint(checkpoints / "last.ckpt")["global_step"] == 5

    resumed = run_cli(*arguments)

    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "left by a checkpoint save that did not finish" in resumed.stderr
    assert not [path for path in checkpoints.iterdir() if ".partial-" in path.name]
    assert_same_weights(checkpoints / "last.ckpt", reference_run)
    single_run(output_dir)


def test_resume_never_starts_afresh(corpus: Path, reference_run: Path) -> None:
    """training.resume=never ignores last.ckpt and opens a new MLflow run."""
    output_dir = corpus.parent / "fresh"
    shutil.copytree(reference_run.parent.parent, output_dir)
    first_run = (output_dir / "mlflow_run_id").read_text().strip()

    result = run_cli("train", "tiny", *overrides(corpus, output_dir, max_steps=2, resume="never"))

    assert result.returncode == 0, result.stderr[-3000:]
    assert "training.resume=never: starting afresh" in result.stderr
    assert read_checkpoint(output_dir / "checkpoints" / "last.ckpt")["global_step"] == 2
    assert (output_dir / "mlflow_run_id").read_text().strip() != first_run


def test_resume_with_changed_model_fails(corpus: Path, reference_run: Path) -> None:
    """Resuming with another backbone size names the changed section instead of a state-dict traceback."""
    output_dir = corpus.parent / "changed"
    shutil.copytree(reference_run.parent.parent, output_dir)

    result = run_cli("train", "tiny", *overrides(corpus, output_dir, max_steps=14), "backbone.args.n_layers=3")

    assert result.returncode == 2
    assert "the recipe changed backbone since it was trained" in result.stderr
    assert "Traceback" not in result.stderr


def test_checkpoint_io_refuses_crafted_pickle(tmp_path: Path) -> None:
    """The trainer's checkpoint reader rejects a pickle that would run code, and the code never runs."""
    marker = tmp_path / "executed"

    class RunsCode:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "last.ckpt"
    torch.save({"state_dict": {}, "payload": RunsCode()}, path)

    with pytest.raises(DiffuSpeechError, match=r"cannot load checkpoint .*last\.ckpt safely"):
        SafeCheckpointIO().load_checkpoint(path)
    assert not marker.exists()


def test_checkpoint_io_save_is_atomic(tmp_path: Path) -> None:
    """A failed save leaves the previous file and no temporary file."""
    path = tmp_path / "last.ckpt"
    io = SafeCheckpointIO()
    io.save_checkpoint({"step": torch.tensor(1)}, path)

    with pytest.raises((pickle.PicklingError, AttributeError, TypeError)):
        io.save_checkpoint({"step": torch.tensor(2), "bad": lambda: None}, path)

    assert read_checkpoint(path)["step"].item() == 1
    assert [item.name for item in tmp_path.iterdir()] == ["last.ckpt"]


def test_batches_shard_across_ranks() -> None:
    """Two ranks get equal batch counts that cover the epoch, and an iteration can start mid-epoch."""
    ranks = [EpochBatchSampler(length=20, batch_size=4, rank=rank, world_size=2) for rank in range(2)]

    batches = [list(sampler) for sampler in ranks]

    assert [len(sampler) for sampler in ranks] == [3, 3]
    assert [len(rank_batches) for rank_batches in batches] == [3, 3]
    assert batches[0][0] == [0, 1, 2, 3]
    assert batches[1][0] == [4, 5, 6, 7]
    assert {index for rank_batches in batches for batch in rank_batches for index in batch} == set(range(20))
    ranks[1].start = 2
    assert list(ranks[1]) == [batches[1][2]]
    assert list(ranks[1]) == batches[1]
