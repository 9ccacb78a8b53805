"""Tests for diffuspeech train-vocoder: a real unit HiFi-GAN run on flite speech, reloaded through the plugin."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from diffuspeech.cli import main
from diffuspeech.data.features import UnitCache, fit_speech_tokenizer, tokenizer_fingerprint
from diffuspeech.data.manifest import read_manifest
from diffuspeech.errors import RecipeError
from diffuspeech.recipe import build_component, load_recipe
from diffuspeech.training.vocoder import train_vocoder
from diffuspeech_plugins.vocoders.unit_hifigan import UnitHifiganVocoder

pytestmark = pytest.mark.slow


def test_writes_speechbrain_folder(small_vocoder_run: Path) -> None:
    """The run writes hyperparams.yaml, generator.ckpt and the tokenizer record of its 32 units."""
    folder = small_vocoder_run / "vocoder"
    record = json.loads((folder / "speech_tokenizer.json").read_text())
    hyperparams = (folder / "hyperparams.yaml").read_text()

    assert (folder / "generator.ckpt").is_file()
    assert "generator: !new:speechbrain.lobes.models.HifiGAN.UnitHifiganGenerator" in hyperparams
    assert "vocab_size: 33" in hyperparams
    assert record["class"] == "MelKMeansTokenizer"
    assert record["num_units"] == 32
    assert record["frame_rate"] == 25.0


def test_plugin_reloads_and_decodes(small_vocoder_run: Path, flite_corpus: Path) -> None:
    """vocoder.unit_hifigan loads the folder, accepts the same fitted tokenizer and decodes real units."""
    from conftest import SMALL_CORPUS, SMALL_MEL_UNITS

    recipe = load_recipe(
        "variants/codec_mel_kmeans_unit_hifigan",
        [
            f"data_dir={flite_corpus}",
            *SMALL_CORPUS,
            *SMALL_MEL_UNITS,
            f"vocoder.args.model_path={small_vocoder_run / 'vocoder'}",
        ],
    )
    tokenizer = build_component(recipe, "speech_tokenizer", "speech_tokenizer")
    rows = read_manifest(flite_corpus / "manifests" / "train.jsonl")
    fit_speech_tokenizer(tokenizer, rows, int(recipe.training.speech_tokenizer_fit_files), int(recipe.seed))
    vocoder = build_component(recipe, "vocoder", "vocoder")
    assert isinstance(vocoder, UnitHifiganVocoder)
    record = json.loads((small_vocoder_run / "vocoder" / "speech_tokenizer.json").read_text())
    assert record["fingerprint"] == tokenizer_fingerprint(tokenizer)

    vocoder.attach(tokenizer)
    cache = UnitCache(tokenizer, flite_corpus / "cache")
    units = cache[rows[0].get("audio")]
    waveform = vocoder.decode(units)

    assert waveform.shape == (units.numel() * 640,)
    assert bool(torch.isfinite(waveform).all())
    assert float(waveform.abs().max()) <= 1.0


def test_mlflow_run_has_losses(small_vocoder_run: Path) -> None:
    """The run has its own MLflow run in the vocoder experiment, with losses by step and the folder's files."""
    client = MlflowClient(tracking_uri=f"sqlite:///{small_vocoder_run / 'mlflow.db'}")
    run = client.get_run((small_vocoder_run / "mlflow_run_id").read_text().strip())

    assert client.get_experiment(run.info.experiment_id).name == "diffuspeech-vocoder"
    assert run.data.params["vocoder_training.max_steps"] == "3"
    generator_losses = client.get_metric_history(run.info.run_id, "train/generator_loss")
    assert len(generator_losses) == 3
    assert all(point.value > 0 for point in generator_losses)
    assert len(client.get_metric_history(run.info.run_id, "train/discriminator_loss")) == 1
    artifacts = {item.path for item in client.list_artifacts(run.info.run_id, "vocoder")}
    assert artifacts == {"vocoder/hyperparams.yaml", "vocoder/speech_tokenizer.json"}


def test_bad_settings_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An unknown key, and factors that do not match the tokenizer's hop, fail naming the recipe key."""
    assert main(["train-vocoder", "vocoder/tiny", f"output_dir={tmp_path}", "vocoder_training.warmup=5"]) == 2
    assert "vocoder_training.warmup: unknown key" in capsys.readouterr().err

    recipe = load_recipe(
        "vocoder/tiny", [f"output_dir={tmp_path}", "vocoder_training.generator.upsample_factors=[8,5,4]"]
    )
    with pytest.raises(
        RecipeError, match=r"upsample_factors: \[8, 5, 4\] multiply to 160, .* one unit per 640 samples"
    ):
        train_vocoder(recipe)
