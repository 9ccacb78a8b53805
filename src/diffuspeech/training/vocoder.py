"""The train-vocoder entry point: a SpeechBrain unit HiFi-GAN trained from scratch on any unit tokenizer.

The recipe's speech tokenizer is fitted on the training split (when it is not
fitted yet), units come from the unit cache, and Lightning trains
``speechbrain.lobes.models.HifiGAN.UnitHifiganGenerator`` on random aligned
(units, waveform) segments. The generator is trained with SpeechBrain's L1
log-mel loss from the first step, and with its multi-period and multi-scale
discriminators (least-squares GAN loss plus feature matching) from
``vocoder_training.adversarial_start_step`` on. The run has its own MLflow run,
and the result is a folder in the layout of SpeechBrain's published models
(``hyperparams.yaml`` and ``generator.ckpt``) that ``vocoder.unit_hifigan`` loads.
"""

from __future__ import annotations

import json
import logging
import math
import random
from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader, Dataset

from diffuspeech.data.features import (
    UnitCache,
    audio_references,
    fit_speech_tokenizer,
    load_row_audio,
    tokenizer_fingerprint,
)
from diffuspeech.data.manifest import read_manifest
from diffuspeech.errors import RecipeError
from diffuspeech.interfaces import SpeechTokenizer
from diffuspeech.recipe import build_component
from diffuspeech.training.tracking import log_artifact, make_logger

log = logging.getLogger(__name__)

GENERATOR_CLASS = "speechbrain.lobes.models.HifiGAN.UnitHifiganGenerator"

# Each vocoder_training key: (check, what a valid value is).
_POSITIVE_INT = (lambda value: isinstance(value, int) and not isinstance(value, bool) and value >= 1, "an integer >= 1")
_POSITIVE_NUMBER = (
    lambda value: isinstance(value, int | float) and not isinstance(value, bool) and value > 0,
    "a number > 0",
)
SETTINGS: dict[str, tuple[Any, str]] = {
    "max_steps": _POSITIVE_INT,
    "batch_size": _POSITIVE_INT,
    "segment_units": _POSITIVE_INT,
    "learning_rate": _POSITIVE_NUMBER,
    "adam_betas": (lambda value: isinstance(value, list) and len(value) == 2, "a list of two numbers"),
    "adversarial_start_step": (
        lambda value: value is None or (isinstance(value, int) and not isinstance(value, bool) and value >= 0),
        "null (no discriminator) or an integer >= 0",
    ),
    "mel_loss_weight": _POSITIVE_NUMBER,
    "feature_loss_weight": (lambda value: isinstance(value, int | float) and value >= 0, "a number >= 0"),
    "log_every_n_steps": _POSITIVE_INT,
    "accelerator": (lambda value: isinstance(value, str), "a Lightning accelerator name such as auto or cpu"),
    "precision": (lambda value: isinstance(value, str | int), "a Lightning precision such as 32-true"),
    "generator": (lambda value: isinstance(value, dict), "a mapping of UnitHifiganGenerator arguments"),
}


def vocoder_settings(recipe: DictConfig) -> dict[str, Any]:
    """Return the checked ``vocoder_training`` section, or raise ``RecipeError`` naming the invalid key."""
    node = OmegaConf.select(recipe, "vocoder_training", default=None)
    if not isinstance(node, DictConfig):
        raise RecipeError("vocoder_training: missing; extend recipes/vocoder/tiny.yaml or add the section")
    settings = OmegaConf.to_container(node, resolve=True)
    assert isinstance(settings, dict)
    for raw_key, value in settings.items():
        key = str(raw_key)
        if key not in SETTINGS:
            raise RecipeError(f"vocoder_training.{key}: unknown key; choices: {', '.join(SETTINGS)}")
        check, expected = SETTINGS[key]
        if not check(value):
            raise RecipeError(f"vocoder_training.{key}: invalid value {value!r}; expected {expected}")
    missing = sorted(set(SETTINGS) - set(map(str, settings)))
    if missing:
        raise RecipeError(f"vocoder_training: missing key(s) {', '.join(missing)}")
    return {str(key): value for key, value in settings.items()}


def generator_arguments(settings: dict[str, Any], num_units: int, hop_length: int) -> dict[str, Any]:
    """Return the ``UnitHifiganGenerator`` arguments for ``num_units`` units of ``hop_length`` samples each."""
    generator = dict(settings["generator"])
    factors = generator.get("upsample_factors")
    if not isinstance(factors, list) or math.prod(factors) != hop_length:
        raise RecipeError(
            f"vocoder_training.generator.upsample_factors: {factors} multiply to "
            f"{math.prod(factors) if isinstance(factors, list) else 'nothing'}, but the speech tokenizer gives "
            f"one unit per {hop_length} samples; choose factors whose product is {hop_length}"
        )
    embedding_dim = int(generator.pop("embedding_dim", 128))
    return {
        "in_channels": embedding_dim,
        "out_channels": 1,
        "vocab_size": num_units + 1,
        "embedding_dim": embedding_dim,
        "duration_predictor": False,
        **generator,
    }


class UnitSegments(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Random aligned segments: ``segment_units`` int64 units and ``segment_units * hop_length`` float samples.

    Item ``i`` picks a file and an offset from a generator seeded with ``(seed, i)``,
    so a run is reproducible. A file shorter than the segment is padded: units by
    repeating the last one, audio with zeros.
    """

    def __init__(
        self,
        clips: list[tuple[torch.Tensor, torch.Tensor]],
        segment_units: int,
        hop_length: int,
        length: int,
        seed: int,
    ) -> None:
        self.clips = clips
        self.segment_units = segment_units
        self.hop_length = hop_length
        self.length = length
        self.seed = seed

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        chooser = random.Random(self.seed * 1_000_003 + index)
        units, waveform = self.clips[chooser.randrange(len(self.clips))]
        start = chooser.randrange(max(1, units.numel() - self.segment_units + 1))
        segment = units[start : start + self.segment_units]
        samples = waveform[start * self.hop_length : (start + self.segment_units) * self.hop_length]

        if segment.numel() < self.segment_units:
            segment = torch.cat([segment, segment[-1:].expand(self.segment_units - segment.numel())])
        wanted = self.segment_units * self.hop_length
        if samples.numel() < wanted:
            samples = torch.cat([samples, torch.zeros(wanted - samples.numel())])
        return segment, samples


class UnitHifiganTraining(L.LightningModule):
    """A unit HiFi-GAN generator and its discriminator, trained with manual optimization."""

    def __init__(self, arguments: dict[str, Any], settings: dict[str, Any], sample_rate: int) -> None:
        super().__init__()
        from speechbrain.lobes.models import HifiGAN

        self.automatic_optimization = False
        self.settings = settings
        self.generator = HifiGAN.UnitHifiganGenerator(**arguments)
        self.adversarial = settings["adversarial_start_step"] is not None
        self.discriminator = HifiGAN.HifiganDiscriminator() if self.adversarial else None
        self.mel_loss = HifiGAN.L1SpecLoss(
            sample_rate=sample_rate,
            hop_length=256,
            win_length=1024,
            n_mel_channels=80,
            n_fft=1024,
            mel_fmin=0.0,
            mel_fmax=sample_rate / 2,
        )
        self.generator_loss = HifiGAN.GeneratorLoss(
            mseg_loss=HifiGAN.MSEGLoss(),
            mseg_loss_weight=1.0,
            feat_match_loss=HifiGAN.MelganFeatureLoss(),
            feat_match_loss_weight=float(settings["feature_loss_weight"]),
            l1_spec_loss=self.mel_loss,
            l1_spec_loss_weight=float(settings["mel_loss_weight"]),
        )
        self.discriminator_loss = HifiGAN.DiscriminatorLoss(msed_loss=HifiGAN.MSEDLoss())
        # Lightning counts every optimizer step as a global step, so batches are counted here.
        self.batches_done = 0

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        betas = tuple(float(beta) for beta in self.settings["adam_betas"])
        rate = float(self.settings["learning_rate"])
        optimizers: list[torch.optim.Optimizer] = [torch.optim.AdamW(self.generator.parameters(), lr=rate, betas=betas)]  # type: ignore[arg-type]
        if self.discriminator is not None:
            optimizers.append(torch.optim.AdamW(self.discriminator.parameters(), lr=rate, betas=betas))  # type: ignore[arg-type]
        return optimizers

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_index: int) -> None:
        units, waveform = batch
        # (batch, frames) -> (batch, frames, codebooks 1), shifted by one for the padding row.
        generated, _ = self.generator((units + 1).unsqueeze(-1))
        real = waveform.unsqueeze(1)
        optimizers = self.optimizers()
        generator_optimizer = optimizers[0] if isinstance(optimizers, list) else optimizers
        adversarial = self.discriminator is not None and self.batches_done >= int(
            self.settings["adversarial_start_step"]
        )
        self.batches_done += 1

        if adversarial:
            assert self.discriminator is not None and isinstance(optimizers, list)
            scores_fake, _ = self.discriminator(generated.detach())
            scores_real, _ = self.discriminator(real)
            discriminator_losses = self.discriminator_loss(scores_fake, scores_real)
            optimizers[1].zero_grad()
            self.manual_backward(discriminator_losses["D_loss"])
            optimizers[1].step()
            self.log("train/discriminator_loss", discriminator_losses["D_loss"], prog_bar=True)

        from speechbrain import Stage

        if adversarial:
            assert self.discriminator is not None
            scores_fake, features_fake = self.discriminator(generated)
            _, features_real = self.discriminator(real)
            losses = self.generator_loss(Stage.TRAIN, generated, real, scores_fake, features_fake, features_real)
        else:
            losses = self.generator_loss(Stage.TRAIN, generated, real)
        generator_optimizer.zero_grad()
        self.manual_backward(losses["G_loss"])
        generator_optimizer.step()
        self.log("train/generator_loss", losses["G_loss"], prog_bar=True)
        self.log("train/mel_l1", losses["G_l1_spec_loss"])


def load_clips(
    tokenizer: SpeechTokenizer, data_dir: Path, seed: int, fit_files: int
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Fit the tokenizer if needed and return (units, waveform) of every audio file of the training split."""
    rows = read_manifest(data_dir / "manifests" / "train.jsonl")
    fit_speech_tokenizer(tokenizer, rows, fit_files, seed)
    cache = UnitCache(tokenizer, data_dir / "cache")
    cache.ensure(rows)
    clips = []
    for path, (row, name) in audio_references(rows).items():
        waveform = load_row_audio(path, row, name, tokenizer.sample_rate)
        clips.append((cache[path], waveform))
    return clips


def save_model_folder(
    generator: torch.nn.Module, arguments: dict[str, Any], folder: Path, tokenizer: SpeechTokenizer
) -> None:
    """Write ``hyperparams.yaml``, ``generator.ckpt`` and ``speech_tokenizer.json`` into ``folder``.

    The YAML uses SpeechBrain's HyperPyYAML tags, so SpeechBrain's own
    ``UnitHIFIGAN.from_hparams(source=folder)`` can read the folder too.
    """
    folder.mkdir(parents=True, exist_ok=True)
    lines = [
        "# Unit HiFi-GAN generator written by diffuspeech train-vocoder.",
        f"sample_rate: {int(tokenizer.sample_rate)}",
        f"generator: !new:{GENERATOR_CLASS}",
    ]
    for key, value in arguments.items():
        lines.append(f"  {key}: {json.dumps(value)}")
    lines += [
        "modules:",
        "  generator: !ref <generator>",
        "pretrainer: !new:speechbrain.utils.parameter_transfer.Pretrainer",
        "  loadables:",
        "    generator: !ref <generator>",
    ]
    (folder / "hyperparams.yaml").write_text("\n".join(lines) + "\n", encoding="utf-8")
    torch.save(
        {name: tensor.detach().cpu() for name, tensor in generator.state_dict().items()}, folder / "generator.ckpt"
    )
    record = {
        "class": type(tokenizer).__qualname__,
        "fingerprint": tokenizer_fingerprint(tokenizer),
        "num_units": tokenizer.num_units,
        "frame_rate": tokenizer.frame_rate,
        "sample_rate": tokenizer.sample_rate,
    }
    (folder / "speech_tokenizer.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


def train_vocoder(recipe: DictConfig) -> Path:
    """Train the recipe's unit HiFi-GAN and return the model folder ``<output_dir>/vocoder``."""
    # Every setting is checked before any audio is read.
    settings = vocoder_settings(recipe)
    tokenizer: SpeechTokenizer = build_component(recipe, "speech_tokenizer", "speech_tokenizer")
    hop = tokenizer.sample_rate / tokenizer.frame_rate
    if not math.isclose(hop, round(hop), rel_tol=1e-9):
        raise RecipeError(
            f"speech_tokenizer: {tokenizer.sample_rate} Hz / {tokenizer.frame_rate} units per second is not a whole "
            "number of samples per unit, which a HiFi-GAN's integer upsampling needs"
        )
    arguments = generator_arguments(settings, tokenizer.num_units, round(hop))
    output_dir = Path(str(recipe.output_dir))
    output_dir.mkdir(parents=True, exist_ok=True)
    seed = int(recipe.seed)
    L.seed_everything(seed, workers=True)

    fit_files = int(OmegaConf.select(recipe, "training.speech_tokenizer_fit_files", default=1500))
    clips = load_clips(tokenizer, Path(str(recipe.data_dir)), seed, fit_files)
    batch_size = int(settings["batch_size"])
    dataset = UnitSegments(
        clips, int(settings["segment_units"]), round(hop), int(settings["max_steps"]) * batch_size, seed
    )
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)
    module = UnitHifiganTraining(arguments, settings, tokenizer.sample_rate)
    log.info(
        "Unit HiFi-GAN for %d units of %d samples: generator %.2fM parameters, %d clips",
        tokenizer.num_units,
        round(hop),
        sum(p.numel() for p in module.generator.parameters()) / 1e6,
        len(clips),
    )

    logger = make_logger(recipe)
    trainer = L.Trainer(
        # The dataset contains exactly max_steps batches, so one epoch is the whole run.
        max_epochs=1,
        accelerator=str(settings["accelerator"]),
        devices=1,
        precision=settings["precision"],
        log_every_n_steps=int(settings["log_every_n_steps"]),
        logger=logger,
        default_root_dir=str(output_dir),
        enable_checkpointing=False,
        enable_model_summary=False,
    )
    trainer.fit(module, train_dataloaders=loader)

    folder = output_dir / "vocoder"
    save_model_folder(module.generator, arguments, folder, tokenizer)
    for name in ("hyperparams.yaml", "speech_tokenizer.json"):
        log_artifact(logger, folder / name, "vocoder")
    return folder
