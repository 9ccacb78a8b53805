"""Smoke tests: each codec variant and each schedule variant trains a few steps through train() and speaks.

Every run pairs one codec recipe from recipes/variants/ with one schedule
recipe's noise_schedule section, on the small flite corpus and a one-layer
backbone. A run passes when training finishes, validation sampling logs audio,
and the checkpoint speaks a number word through the variant's vocoder.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from diffuspeech.inference import load_checkpoint
from diffuspeech.recipe import RECIPES_DIR, load_recipe
from diffuspeech.training.run import train
from diffuspeech.vocabulary import SPEECH, TEXT

pytestmark = pytest.mark.slow

SMALL_RUN = [
    "backbone.args.d_model=32",
    "backbone.args.n_layers=1",
    "backbone.args.n_heads=2",
    "backbone.args.mlp_hidden_size=64",
    "training.max_steps=2",
    "training.batch_size=4",
    "training.batches_per_epoch=2",
    "training.validation_interval=2",
    "training.validation_items_per_task=1",
    "training.validation_samples=1",
    "training.validation_audio_samples=1",
    "training.log_every_n_steps=1",
    "training.accelerator=cpu",
    "sampler.args.steps=2",
]

# (codec recipe, schedule recipe, expected schedule class names for text and speech)
PAIRS = [
    ("codec_mel_kmeans_griffin_lim", "schedule_linear", ("LinearSchedule", "LinearSchedule")),
    ("codec_hubert_kmeans_unit_hifigan", "schedule_cosine", ("CosineSchedule", "CosineSchedule")),
    ("codec_mel_kmeans_unit_hifigan", "schedule_polynomial", ("LinearSchedule", "PolynomialSchedule")),
]


def with_schedule(recipe: DictConfig, schedule_recipe: str) -> DictConfig:
    """Replace ``recipe``'s noise_schedule section by the one of ``recipes/variants/<schedule_recipe>.yaml``."""
    schedules = load_recipe(RECIPES_DIR / "variants" / f"{schedule_recipe}.yaml").noise_schedule
    recipe.noise_schedule = OmegaConf.create(OmegaConf.to_container(schedules))
    return recipe


@pytest.mark.parametrize(("codec", "schedule", "schedule_classes"), PAIRS, ids=[pair[0] for pair in PAIRS])
def test_variant_trains_and_speaks(
    codec: str,
    schedule: str,
    schedule_classes: tuple[str, str],
    tmp_path: Path,
    flite_corpus: Path,
    tiny_hubert: Path,
    unit_hifigan_writer: Callable[..., Path],
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The variant trains 2 steps, logs validation audio, and its checkpoint speaks through its vocoder."""
    from conftest import SMALL_CORPUS, SMALL_MEL_UNITS

    overrides = [f"data_dir={flite_corpus}", f"output_dir={tmp_path / 'run'}", *SMALL_CORPUS, *SMALL_RUN]
    if codec == "codec_hubert_kmeans_unit_hifigan":
        vocoder = unit_hifigan_writer(tmp_path / "hifigan", 32, [8, 5, 4, 4])
        overrides += [
            f"speech_tokenizer.args.model_path={tiny_hubert}",
            "speech_tokenizer.args.centroids_path=null",
            "speech_tokenizer.args.layer=2",
            "speech_tokenizer.args.num_units=32",
            f"vocoder.args.model_path={vocoder}",
        ]
    else:
        overrides += SMALL_MEL_UNITS
    if codec == "codec_mel_kmeans_unit_hifigan":
        vocoder_run: Path = request.getfixturevalue("small_vocoder_run")
        overrides.append(f"vocoder.args.model_path={vocoder_run / 'vocoder'}")
    recipe = with_schedule(load_recipe(RECIPES_DIR / "variants" / f"{codec}.yaml", overrides), schedule)

    # An earlier run in this process leaves MLFLOW_TRACKING_URI set (mlflow.set_tracking_uri exports it).
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    checkpoint = train(recipe)

    model = load_checkpoint(checkpoint)
    schedules = model.system.schedules
    assert (type(schedules[TEXT]).__name__, type(schedules[SPEECH]).__name__) == schedule_classes
    assert type(model.system.speech_tokenizer).__name__ == (
        "HubertKMeansTokenizer" if "hubert" in codec else "MelKMeansTokenizer"
    )
    assert type(model.system.vocoder).__name__ == ("GriffinLimVocoder" if "griffin" in codec else "UnitHifiganVocoder")

    waveform = model.speak("one", seed=0)
    samples_per_unit = model.system.vocoder.sample_rate / model.system.vocoder.frame_rate
    assert waveform.numel() > 0
    assert math.isclose(waveform.numel() % samples_per_unit, 0.0)
    assert bool(torch.isfinite(waveform).all())

    run_dir = tmp_path / "run"
    client = MlflowClient(tracking_uri=f"sqlite:///{run_dir / 'mlflow.db'}")
    run_id = (run_dir / "mlflow_run_id").read_text().strip()
    assert len(client.get_metric_history(run_id, "train/loss")) == 2
    audio_steps = client.list_artifacts(run_id, "audio")
    assert audio_steps
    assert any(item.path.endswith(".wav") for item in client.list_artifacts(run_id, audio_steps[0].path))
