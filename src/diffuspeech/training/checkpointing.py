"""Checkpoints that survive a kill, load without running code, and resume exactly.

- ``SafeCheckpointIO`` writes each checkpoint to a temporary file in the same
  folder, flushes it to disk and renames it over the target, so a kill during
  a save leaves the previous file intact. It reads checkpoints with
  ``torch.load(weights_only=True)``, which accepts tensors and plain values
  only and never calls code named in the file.
- ``StepSeeds`` seeds the random generators of torch, numpy and Python before
  every training batch from (recipe seed, global rank, epoch, batch index).
  So the random state at any batch is the same in a resumed run as in an
  uninterrupted one, whatever ran in between (validation, data loader start).
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint

from diffuspeech.errors import DiffuSpeechError

log = logging.getLogger(__name__)

TEMPORARY_MARKER = ".partial-"
"""Infix of the temporary files that a save renames into place."""


class CheckpointError(DiffuSpeechError):
    """A checkpoint cannot be read safely or is not a training checkpoint."""


def read_checkpoint(path: Path, device: Any = "cpu") -> dict[str, Any]:
    """Read a checkpoint with ``torch.load(weights_only=True)``; raise ``CheckpointError`` on any failure."""
    if path.is_dir():
        raise CheckpointError(
            f"checkpoint {path} is a folder; give a checkpoint file, such as checkpoints/last.ckpt of a run folder"
        )
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} not found")
    try:
        checkpoint = torch.load(path, map_location=device, weights_only=True)
    # Any failure of the restricted unpickler means the file is not a checkpoint this loader accepts.
    except Exception as error:
        raise CheckpointError(
            f"cannot load checkpoint {path} safely: {error}. Only checkpoints written by diffuspeech "
            "(tensors and plain values) are accepted"
        ) from error
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"{path} is not a checkpoint: it contains a {type(checkpoint).__name__}, not a mapping")
    return checkpoint


def _fsync_folder(folder: Path) -> None:
    """Flush a folder's entries, so a rename in it survives a power loss (POSIX only)."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


class SafeCheckpointIO(TorchCheckpointIO):
    """Atomic checkpoint writes and code-free checkpoint reads for the Lightning trainer."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options, got {storage_options!r}")
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.with_name(f"{target.name}{TEMPORARY_MARKER}{os.getpid()}")
        try:
            with temporary.open("wb") as handle:
                torch.save(checkpoint, handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, target)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        _fsync_folder(target.parent)

    def load_checkpoint(self, path: Any, map_location: Any | None = None, weights_only: bool | None = None) -> Any:
        # weights_only is forced: a checkpoint from a stranger must not run code, whatever the caller requests.
        return read_checkpoint(Path(path), map_location if map_location is not None else "cpu")


class RunCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` that also saves the final step when it is not a multiple of the interval."""

    def on_train_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if self._last_global_step_saved != trainer.global_step and not trainer.sanity_checking:
            candidates = self._monitor_candidates(trainer)
            self._save_topk_checkpoint(trainer, candidates)
            self._save_last_checkpoint(trainer, candidates)
        super().on_train_end(trainer, module)


def remove_partial_checkpoints(folder: Path) -> list[Path]:
    """Delete temporary files left by saves that were killed; return their paths."""
    if not folder.is_dir():
        return []
    partial = sorted(path for path in folder.iterdir() if TEMPORARY_MARKER in path.name)
    for path in partial:
        log.warning("Removing %s, left by a checkpoint save that did not finish", path)
        path.unlink(missing_ok=True)
    return partial


def batch_seed(seed: int, rank: int, epoch: int, batch_index: int) -> int:
    """Return a 63-bit seed that depends only on (seed, rank, epoch, batch index)."""
    digest = hashlib.sha256(f"{seed}/{rank}/{epoch}/{batch_index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


class StepSeeds(L.Callback):
    """Seeds torch (CPU and CUDA), numpy and ``random`` before each training batch.

    Each rank gets its own stream because its global rank is part of the seed.
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def on_train_batch_start(self, trainer: L.Trainer, module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        value = batch_seed(self.seed, trainer.global_rank, trainer.current_epoch, batch_idx)
        torch.manual_seed(value)
        np.random.seed(value % 2**32)
        random.seed(value)
