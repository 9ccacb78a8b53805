"""Checkpoints from strangers run no code: no pickled callables, and no plugin modules they pick."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from diffuspeech.errors import DiffuSpeechError
from diffuspeech.inference import TRUST_PLUGIN_PATHS, load_checkpoint, stored_recipe
from diffuspeech.recipe import load_recipe


def checkpoint_naming(path: Path, backbone: str) -> Path:
    """Write a checkpoint of plain values whose stored recipe names ``backbone`` as the backbone plugin."""
    recipe = OmegaConf.to_container(load_recipe("tiny", [f"backbone.name={backbone}"]), resolve=True)
    torch.save({"diffuspeech": {"recipe": recipe, "plugins": {}}, "state_dict": {}}, path)
    return path


@pytest.mark.parametrize("load", [load_checkpoint, stored_recipe])
def test_dotted_plugin_path_in_checkpoint_rejected(tmp_path: Path, load: object) -> None:
    """A checkpoint naming a plugin by dotted path is rejected before that module is imported."""
    path = checkpoint_naming(tmp_path / "stranger.ckpt", "stranger_module_never_imported:Backbone")

    with pytest.raises(DiffuSpeechError, match=r"names plugin 'stranger_module_never_imported:Backbone' at backbone"):
        load(path)  # type: ignore[operator]
    assert "stranger_module_never_imported" not in sys.modules


def test_dotted_plugin_path_trusted_by_user(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With the trust variable set, the stored recipe is returned as written."""
    path = checkpoint_naming(tmp_path / "own.ckpt", "my_package.backbones:Mine")
    monkeypatch.setenv(TRUST_PLUGIN_PATHS, "1")

    assert stored_recipe(path).backbone.name == "my_package.backbones:Mine"


def test_folder_as_checkpoint_named(tmp_path: Path) -> None:
    """A run folder given in place of a checkpoint file gets its own message, not 'not found'."""
    with pytest.raises(DiffuSpeechError, match="is a folder; give a checkpoint file"):
        load_checkpoint(tmp_path)
