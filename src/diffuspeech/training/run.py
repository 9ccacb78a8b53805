"""The train entry point: a readable setup, then ``trainer.fit``."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig

from diffuspeech.data.datamodule import SpeechTextDataModule
from diffuspeech.data.features import UnitCache, fit_speech_tokenizer, fit_text_tokenizer
from diffuspeech.data.manifest import read_manifest
from diffuspeech.system import System, build_backbone, compose
from diffuspeech.training.module import DiffusionLM
from diffuspeech.training.samples import ValidationSamples
from diffuspeech.training.tracking import make_logger

log = logging.getLogger(__name__)


def prepare_features(system: System, data_dir: Path, output_dir: Path) -> UnitCache:
    """Fit the tokenizers on the training split (when not fitted yet) and fill the unit cache."""
    train_rows = read_manifest(data_dir / "manifests" / "train.jsonl")
    settings = system.recipe.training

    fit_text_tokenizer(system.text_tokenizer, train_rows, output_dir)
    fit_speech_tokenizer(
        system.speech_tokenizer, train_rows, int(settings.speech_tokenizer_fit_files), int(system.recipe.seed)
    )
    system.vocoder.attach(system.speech_tokenizer)
    return UnitCache(system.speech_tokenizer, data_dir / "cache")


def train(recipe: DictConfig) -> Path:
    """Train the recipe's model; return the path of the last checkpoint."""
    # Composition checks every plugin before anything is read or written.
    system = compose(recipe)

    settings = recipe.training
    output_dir = Path(str(recipe.output_dir))
    data_dir = Path(str(recipe.data_dir))
    output_dir.mkdir(parents=True, exist_ok=True)
    L.seed_everything(int(recipe.seed), workers=True)
    torch.set_float32_matmul_precision("high")

    # The vocabulary size depends on the fitted text tokenizer, so features come before the model.
    units = prepare_features(system, data_dir, output_dir)
    datamodule = SpeechTextDataModule(system, units, data_dir / "manifests")
    datamodule.setup("fit")
    backbone = build_backbone(recipe, system.vocabulary)
    module = DiffusionLM(system, backbone)
    log.info(
        "Vocabulary %d ids; backbone %s with %.2fM parameters",
        system.vocabulary.size,
        type(backbone).__name__,
        sum(p.numel() for p in backbone.parameters()) / 1e6,
    )

    logger = make_logger(recipe)
    checkpoints = ModelCheckpoint(
        dirpath=output_dir / "checkpoints", filename="step{step:06d}", auto_insert_metric_name=False, save_last=True
    )
    samples = ValidationSamples(
        int(settings.validation_samples), int(settings.validation_audio_samples), int(recipe.seed)
    )
    trainer = L.Trainer(
        max_steps=int(settings.max_steps),
        accelerator=str(settings.accelerator),
        devices=settings.devices,
        strategy=str(settings.strategy),
        num_nodes=int(settings.num_nodes),
        precision=str(settings.precision),  # type: ignore[arg-type]
        gradient_clip_val=float(settings.gradient_clip),
        accumulate_grad_batches=int(settings.accumulate_grad_batches),
        val_check_interval=int(settings.validation_interval),
        check_val_every_n_epoch=None,
        log_every_n_steps=int(settings.log_every_n_steps),
        num_sanity_val_steps=0,
        logger=logger,
        callbacks=[checkpoints, samples],
        default_root_dir=str(output_dir),
        enable_model_summary=False,
    )
    trainer.fit(module, datamodule=datamodule)

    last = Path(checkpoints.last_model_path or checkpoints.best_model_path)
    (output_dir / "mlflow_run_id").write_text(str(logger.run_id) + "\n", encoding="utf-8")
    return last
