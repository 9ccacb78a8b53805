"""Checkpoint loading refuses anything that is not plain tensors and values."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from diffuspeech.errors import DiffuSpeechError
from diffuspeech.inference import load_checkpoint


class _RunsCode:
    """An object whose unpickling would run a shell command."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def test_crafted_pickle_is_refused(tmp_path: Path) -> None:
    """A checkpoint that would execute code on load is refused and the code never runs."""
    marker = tmp_path / "executed"
    path = tmp_path / "evil.ckpt"
    torch.save({"diffuspeech": _RunsCode(marker), "state_dict": {}}, path)

    with pytest.raises(DiffuSpeechError, match=r"cannot load checkpoint .*evil\.ckpt safely"):
        load_checkpoint(path)
    assert not marker.exists()


def test_plain_pickle_without_entry_is_refused(tmp_path: Path) -> None:
    """A safe file that is not a diffuspeech checkpoint is named as such."""
    path = tmp_path / "other.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, path)

    with pytest.raises(DiffuSpeechError, match="not a diffuspeech checkpoint"):
        load_checkpoint(path)


def test_truncated_checkpoint_is_refused(tmp_path: Path) -> None:
    """A checkpoint cut short by a crash gives a clear error."""
    path = tmp_path / "cut.ckpt"
    torch.save({"diffuspeech": {}, "state_dict": {"w": torch.zeros(64)}}, path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])

    with pytest.raises(DiffuSpeechError, match="cannot load checkpoint"):
        load_checkpoint(path)
