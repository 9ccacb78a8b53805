"""Tests for ``diffuspeech train --dry-run``: meta-device sizing and the per-GPU memory estimate."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_llada_checkpoint import TINY_CONFIG, write_checkpoint

from diffuspeech.dry_run import GIB, dry_run, estimate_memory, local_files, world_size
from diffuspeech.errors import RecipeError
from diffuspeech.recipe import load_recipe
from diffuspeech_plugins.backbones.llada import LLaDABackbone

LLADA_8B = 8_015_581_184
ADDED_ROWS = 9 + 500
"""Special tokens and speech units the reference adds to LLaDA-8B's 126,464 text rows."""


def test_reference_stage2_cli(tmp_path: Path) -> None:
    """The reference prints LLaDA-8B's count plus the added rows, with no weights, data or writes."""
    environment = {**os.environ, "DIFFUSPEECH_WEIGHTS": str(tmp_path / "no_weights")}
    result = subprocess.run(
        [sys.executable, "-m", "diffuspeech.cli", "train", "reference/stage2", "--dry-run"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=environment,
        timeout=120,
        check=False,
    )

    assert result.returncode == 0, result.stderr[-2000:]
    expected = LLADA_8B + ADDED_ROWS * 4096 * 2
    assert expected == 8_019_750_912
    assert f"parameters: {expected:,}\n" in result.stdout
    assert "vocabulary: 126,973 ids = 126,464 text + 9 special + 500 speech units" in result.stdout
    assert "memory per GPU (estimate): 14.9 GiB" in result.stdout
    assert "strategy fsdp, world size 8" in result.stdout
    assert f"backbone.args.path                    {tmp_path / 'no_weights'}/LLaDA-8B-Instruct  (missing)" in (
        result.stdout
    )
    assert not list(tmp_path.iterdir())


def test_tiny_count_matches_real_build() -> None:
    """The meta-device count equals the parameters of the same backbone built in memory."""
    recipe = load_recipe("tiny")
    report = dry_run(recipe)
    real = LLaDABackbone(vocab_size=report.vocabulary.size, d_model=128, n_layers=4, n_heads=4, mlp_hidden_size=384)

    assert report.parameters == sum(parameter.numel() for parameter in real.parameters())
    assert report.vocabulary.size == 128 + 11 + 512


def tiny_checkpoint_overrides(folder: Path, text_size: int) -> list[str]:
    """Return overrides that point the reference backbone at the tiny checkpoint in ``folder``."""
    return [
        f"backbone.args.path={folder}",
        "backbone.args.preset=null",
        f"text_tokenizer.args.vocab_size={text_size}",
        f"text_tokenizer.args.mask_id={TINY_CONFIG['mask_token_id']}",
        f"text_tokenizer.args.pad_id={TINY_CONFIG['pad_token_id']}",
    ]


def test_architecture_read_from_config(tmp_path: Path) -> None:
    """With a checkpoint folder present the dry run sizes config.json's architecture without reading weights."""
    folder = tmp_path / "llada"
    write_checkpoint(folder)
    for shard in folder.glob("*.safetensors"):
        shard.write_bytes(b"not read by a dry run")
    recipe = load_recipe(
        "reference/stage1",
        tiny_checkpoint_overrides(folder, text_size=64),
    )

    report = dry_run(recipe)

    d, rows, hidden, layers = 32, 64 + 9 + 500, 48, 2
    per_layer = 2 * d * d + 2 * d * 16 + 3 * d * hidden + 2 * d
    assert report.parameters == layers * per_layer + 2 * rows * d + d
    assert ("backbone.args.path", str(folder), True) in report.files


def test_text_rows_mismatch(tmp_path: Path) -> None:
    """A text tokenizer size other than the checkpoint's text rows is a recipe error."""
    write_checkpoint(tmp_path / "llada")
    recipe = load_recipe(
        "reference/stage1",
        tiny_checkpoint_overrides(tmp_path / "llada", text_size=60),
    )

    with pytest.raises(RecipeError, match=r"reports 60 text ids but the backbone's checkpoint has 64 text rows"):
        dry_run(recipe)


def test_vocoder_unit_mismatch() -> None:
    """A vocoder whose unit count differs from the speech tokenizer's fails in the dry run."""
    recipe = load_recipe("reference/stage1", ["vocoder.args.num_units=1000"])

    with pytest.raises(RecipeError, match=r"vocoder\.args\.num_units: the vocoder expects 1000 but .* produces 500"):
        dry_run(recipe)


@pytest.mark.parametrize(
    ("precision", "strategy", "processes", "per_parameter"),
    [
        ("bf16-mixed", "fsdp", 8, (4 / 8, 4 / 8, 8 / 8)),
        ("bf16-true", "ddp", 8, (2, 2, 4)),
        ("32-true", "auto", 1, (4, 4, 8)),
        ("16-mixed", "deepspeed_stage_2", 4, (4, 4 / 4, 8 / 4)),
        ("bf16-true", "deepspeed_stage_1", 2, (2, 2, 4 / 2)),
    ],
)
def test_memory_formula(precision: str, strategy: str, processes: int, per_parameter: tuple[float, ...]) -> None:
    """Weights, gradients and AdamW moments cost the stated bytes, divided where the strategy shards them."""
    estimate = estimate_memory(1_000_000, precision, strategy, processes)

    assert estimate.weights == pytest.approx(1_000_000 * per_parameter[0])
    assert estimate.gradients == pytest.approx(1_000_000 * per_parameter[1])
    assert estimate.optimizer == pytest.approx(1_000_000 * per_parameter[2])
    assert estimate.total == pytest.approx(1_000_000 * sum(per_parameter))
    assert f"world size {processes}" in estimate.formula


def test_reference_memory_value() -> None:
    """The reference's bf16-mixed FSDP estimate over 8 GPUs is 16 bytes per parameter divided by 8."""
    estimate = estimate_memory(8_019_750_912, "bf16-mixed", "fsdp", 8)

    assert estimate.total == 8_019_750_912 * 16 / 8
    assert round(estimate.total / GIB, 1) == 14.9


def test_world_size() -> None:
    """The world size is devices times nodes; a device list counts its entries and auto counts 1."""
    from omegaconf import OmegaConf

    assert world_size(OmegaConf.create({"devices": 8, "num_nodes": 4})) == (32, None)
    assert world_size(OmegaConf.create({"devices": [0, 1], "num_nodes": 1})) == (2, None)
    processes, note = world_size(OmegaConf.create({"devices": "auto", "num_nodes": 2}))
    assert processes == 2
    assert note is not None and "auto" in note


def test_local_files_listed(tmp_path: Path) -> None:
    """Component paths are listed with their existence; outputs and the recipe path are not."""
    (tmp_path / "hubert").mkdir()
    recipe = load_recipe("reference/stage1", [f"speech_tokenizer.args.model_path={tmp_path / 'hubert'}"])

    files = {key: (path, found) for key, path, found in local_files(recipe)}

    assert files["speech_tokenizer.args.model_path"] == (str(tmp_path / "hubert"), True)
    assert files["backbone.args.path"][1] is False
    assert "corpus.jsonl.path" in files
    assert "output_dir" not in files
    assert "recipe_path" not in files


def test_meta_build_allocates_nothing() -> None:
    """The dry run's backbone lives on the meta device, so the 8B reference needs no memory."""
    report = dry_run(load_recipe("reference/stage1"))

    assert report.backbone_class == "LLaDAPretrainedBackbone"
    assert report.parameters == 8_019_750_912
    assert torch.get_default_device().type == "cpu"
