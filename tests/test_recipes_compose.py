"""Every recipe under recipes/ composes.

Each recipe is checked with the dry run, which validates every plugin name
and argument, the core settings, the layout budgets and the codec pairing,
and builds the backbone on the meta device without reading weights. Recipes
whose local files all exist (no pretrained weights needed) are also composed
in full, building every plugin as training does.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from diffuspeech.dry_run import dry_run, local_files
from diffuspeech.recipe import RECIPES_DIR, load_recipe
from diffuspeech.system import build_backbone, compose

RECIPES = sorted(path.relative_to(RECIPES_DIR).as_posix() for path in RECIPES_DIR.glob("**/*.yaml"))


def test_recipes_found() -> None:
    """The glob finds the top-level, reference and variant recipes."""
    for name in ("base.yaml", "tiny.yaml", "reference/stage1.yaml", "reference/stage2.yaml"):
        assert name in RECIPES
    assert any(name.startswith("variants/backbone_") for name in RECIPES)


@pytest.mark.parametrize("name", RECIPES)
def test_recipe_composes(name: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The recipe passes the dry run, and composes in full when it needs no missing local file."""
    monkeypatch.setenv("DIFFUSPEECH_WEIGHTS", str(tmp_path / "weights"))
    recipe = load_recipe(RECIPES_DIR / name)

    report = dry_run(recipe)

    assert report.parameters > 0
    assert report.vocabulary.size > report.vocabulary.text_size
    if all(found for _, _, found in local_files(recipe)):
        system = compose(recipe)
        backbone = build_backbone(recipe, system.vocabulary)
        assert sum(parameter.numel() for parameter in backbone.parameters()) == report.parameters


def test_reference_needs_its_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The reference names the LLaDA, HuBERT and HiFi-GAN folders under DIFFUSPEECH_WEIGHTS."""
    monkeypatch.setenv("DIFFUSPEECH_WEIGHTS", str(tmp_path / "weights"))

    files = {key: path for key, path, _ in local_files(load_recipe("reference/stage2"))}

    assert files["backbone.args.path"] == str(tmp_path / "weights" / "LLaDA-8B-Instruct")
    assert files["text_tokenizer.args.path"] == files["backbone.args.path"]
    assert files["speech_tokenizer.args.model_path"].startswith(str(tmp_path / "weights"))
    assert files["vocoder.args.model_path"].startswith(str(tmp_path / "weights"))
    assert files["backbone.args.init_from"].endswith("reference_stage1/checkpoints/last.ckpt")


def test_stage_settings() -> None:
    """Stage 1 and 2 carry DiffuSpeech's task mixtures, learning rates, bf16, FSDP and T = 512."""
    stage1 = load_recipe("reference/stage1")
    stage2 = load_recipe("reference/stage2")

    assert dict(stage1.training.tasks) == {"asr": 0.4, "tts": 0.4, "t2t": 0.2, "s2s": 0.0, "s2t": 0.0}
    assert dict(stage2.training.tasks) == {"s2s": 0.3, "s2t": 0.3, "t2t": 0.2, "asr": 0.1, "tts": 0.1}
    assert stage1.training.learning_rate == 1e-5
    assert stage2.training.learning_rate == 5e-6
    for stage in (stage1, stage2):
        assert stage.training.precision == "bf16-mixed"
        assert stage.training.strategy == "fsdp"
        assert stage.sampler.args.steps == 512
        assert stage.sampler.args.temperature == 1.0
        assert stage.speech_tokenizer.args.num_units == 500


def test_switched_plugin_drops_parent_args(tmp_path: Path) -> None:
    """A child recipe that names another plugin starts from that plugin's arguments only."""
    (tmp_path / "parent.yaml").write_text(f"extends: {RECIPES_DIR / 'tiny.yaml'}\n", encoding="utf-8")
    (tmp_path / "child.yaml").write_text(
        "extends: parent.yaml\nbackbone:\n  name: llada_pretrained\n  args: {preset: small}\n"
        "sampler:\n  args: {steps: 8}\n",
        encoding="utf-8",
    )

    recipe = load_recipe(tmp_path / "child.yaml")

    assert dict(recipe.backbone.args) == {"preset": "small"}
    assert recipe.sampler.args.steps == 8
    assert recipe.sampler.args.order == "text_first"
