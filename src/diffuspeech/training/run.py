"""The train entry point: a readable setup, then ``trainer.fit``."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

from diffuspeech.data.datamodule import SpeechTextDataModule, bad_rows_message
from diffuspeech.data.features import UnitCache, fit_speech_tokenizer, fit_text_tokenizer
from diffuspeech.data.validation import check_manifest
from diffuspeech.errors import DataError
from diffuspeech.system import System, build_backbone, compose
from diffuspeech.training.checkpointing import (
    CheckpointError,
    RunCheckpoint,
    SafeCheckpointIO,
    StepSeeds,
    read_checkpoint,
    remove_partial_checkpoints,
)
from diffuspeech.training.module import CHECKPOINT_KEY, DiffusionLM
from diffuspeech.training.samples import ValidationSamples
from diffuspeech.training.tracking import FaultTolerantMLFlowLogger, log_artifact, make_logger

log = logging.getLogger(__name__)


def prepare_features(system: System, data_dir: Path, output_dir: Path) -> UnitCache:
    """Fit the tokenizers on the training split (when not fitted yet) and fill the unit cache."""
    settings = system.recipe.training
    path = data_dir / "manifests" / "train.jsonl"
    # Failing here saves fitting the tokenizers; with bad_rows=skip the data module reports the rows.
    check = check_manifest(path, read_samples=False)
    if check.bad and str(settings.get("bad_rows", "fail")) != "skip":
        raise DataError(bad_rows_message(check.bad, path))
    train_rows = check.rows

    fit_text_tokenizer(system.text_tokenizer, train_rows, output_dir)
    fit_speech_tokenizer(
        system.speech_tokenizer, train_rows, int(settings.speech_tokenizer_fit_files), int(system.recipe.seed)
    )
    system.vocoder.attach(system.speech_tokenizer)
    return UnitCache(system.speech_tokenizer, data_dir / "cache")


def find_resume_checkpoint(recipe: DictConfig, checkpoint_dir: Path) -> Path | None:
    """Return ``last.ckpt`` of the run folder when ``training.resume`` is ``auto`` and it exists."""
    last = checkpoint_dir / "last.ckpt"
    mode = str(recipe.training.get("resume", "auto"))
    if not last.is_file():
        return None
    if mode == "never":
        log.warning("training.resume=never: starting afresh; %s will be overwritten", last)
        return None
    return last


MODEL_SECTIONS = ("text_tokenizer", "speech_tokenizer", "backbone", "layout")
"""Recipe sections that shape the weights; a resumed run must not change them."""


def restore_plugin_states(system: System, checkpoint: Path) -> None:
    """Load the fitted tokenizers of a checkpoint, so a resumed run uses the same vocabulary and units."""
    stored = read_checkpoint(checkpoint).get(CHECKPOINT_KEY)
    if not isinstance(stored, dict) or "plugins" not in stored:
        raise CheckpointError(
            f"{checkpoint} is not a diffuspeech training checkpoint; move it away or set training.resume=never"
        )
    # The weights and units only fit the model the checkpoint was trained with.
    trained = stored.get("recipe", {})
    changed = [
        section
        for section in MODEL_SECTIONS
        if section in trained and trained[section] != OmegaConf.to_container(system.recipe[section], resolve=True)
    ]
    if changed:
        raise CheckpointError(
            f"cannot resume from {checkpoint}: the recipe changed {', '.join(changed)} since it was trained; "
            "use another output_dir, or set training.resume=never to start afresh"
        )
    system.load_plugin_states(stored["plugins"])


def report_bad_rows(datamodule: SpeechTextDataModule, logger: FaultTolerantMLFlowLogger, output_dir: Path) -> None:
    """Log the count of skipped rows per split as metrics and their list as ``bad_rows.jsonl``."""
    path = output_dir / "bad_rows.jsonl"
    rows = [row for split_rows in datamodule.bad_rows.values() for row in split_rows]
    if not rows:
        path.unlink(missing_ok=True)
        return
    with path.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row.to_dict()) + "\n")
    counts = {f"data/bad_rows_{split}": float(len(split_rows)) for split, split_rows in datamodule.bad_rows.items()}
    logger.log_metrics(counts, step=0)
    log_artifact(logger, path, "data")
    log.warning("Skipped %d bad row(s) in all; the list is in %s", len(rows), path)


def build_trainer(recipe: DictConfig, logger: FaultTolerantMLFlowLogger, checkpoints: RunCheckpoint) -> L.Trainer:
    """Return the Lightning trainer of the recipe's training settings."""
    settings = recipe.training
    samples = ValidationSamples(
        int(settings.validation_samples), int(settings.validation_audio_samples), int(recipe.seed)
    )
    return L.Trainer(
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
        callbacks=[checkpoints, samples, StepSeeds(int(recipe.seed))],
        plugins=[SafeCheckpointIO()],
        # The data module shards its batches across ranks itself (see ResumableDataLoader).
        use_distributed_sampler=False,
        default_root_dir=str(recipe.output_dir),
        enable_model_summary=False,
    )


def train(recipe: DictConfig) -> Path:
    """Train the recipe's model; return the path of the last checkpoint.

    When the run folder contains ``checkpoints/last.ckpt`` and
    ``training.resume`` is ``auto``, training resumes from it: same global
    step, optimizer and scheduler state, data position, fitted tokenizers
    and MLflow run.
    """
    # Composition checks every plugin before anything is read or written.
    system = compose(recipe)

    settings = recipe.training
    output_dir = Path(str(recipe.output_dir))
    data_dir = Path(str(recipe.data_dir))
    checkpoint_dir = output_dir / "checkpoints"
    output_dir.mkdir(parents=True, exist_ok=True)
    L.seed_everything(int(recipe.seed), workers=True)
    torch.set_float32_matmul_precision("high")

    # A save killed half-way leaves a temporary file; the checkpoint it was replacing is intact.
    remove_partial_checkpoints(checkpoint_dir)
    resume_from = find_resume_checkpoint(recipe, checkpoint_dir)
    if resume_from is not None:
        log.info("Resuming from %s", resume_from)
        restore_plugin_states(system, resume_from)

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

    logger = make_logger(recipe, resume=resume_from is not None)
    report_bad_rows(datamodule, logger, output_dir)
    checkpoints = RunCheckpoint(
        dirpath=checkpoint_dir,
        filename="step{step:06d}",
        auto_insert_metric_name=False,
        save_last=True,
        every_n_train_steps=int(settings.checkpoint_interval),
        enable_version_counter=False,
    )
    trainer = build_trainer(recipe, logger, checkpoints)
    trainer.fit(module, datamodule=datamodule, ckpt_path=resume_from)
    if module.skipped_batches:
        logger.log_metrics({"train/nonfinite_skipped": float(module.skipped_batches)}, step=trainer.global_step)
        log.warning("Skipped %d batch(es) with a non-finite loss", module.skipped_batches)

    return Path(checkpoints.last_model_path or checkpoints.best_model_path)
