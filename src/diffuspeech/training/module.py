"""The LightningModule of masked speech-text diffusion."""

from __future__ import annotations

import logging
from typing import Any

import lightning as L
import torch
from omegaconf import OmegaConf

from diffuspeech.data.datamodule import Batch, ResumableDataLoader
from diffuspeech.diffusion import add_noise, diffusion_loss
from diffuspeech.errors import DiffuSpeechError
from diffuspeech.interfaces import Backbone
from diffuspeech.system import System

log = logging.getLogger(__name__)

CHECKPOINT_KEY = "diffuspeech"
"""Checkpoint entry holding the resolved recipe and the fitted plugin states."""


class NonFiniteLossError(DiffuSpeechError):
    """The training loss was NaN or infinite and ``training.nonfinite_loss`` is ``stop``."""


class DiffusionLM(L.LightningModule):
    """Trains a backbone with the ELBO-weighted masked-diffusion loss.

    Optimizer: AdamW with linear warm-up then cosine decay to
    ``training.min_lr_ratio`` of the peak rate. A NaN or infinite loss stops
    training, or skips the batch when ``training.nonfinite_loss`` is
    ``skip`` (counted in the metric ``train/nonfinite_skipped``, and kept
    across resumes). Checkpoints carry the
    resolved recipe and the fitted tokenizers, so a checkpoint alone is
    enough for inference.
    """

    def __init__(self, system: System, backbone: Backbone) -> None:
        super().__init__()
        self.system = system
        self.backbone = backbone
        self.settings = system.recipe.training
        self.skipped_batches = 0

    def forward(self, tokens: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.backbone(tokens, attention_mask)

    def _loss(self, batch: Batch, generator: torch.Generator | None = None) -> torch.Tensor:
        noised = add_noise(
            batch.tokens,
            batch.target_mask,
            batch.modality,
            self.system.schedules,
            self.system.vocabulary.mask_id,
            generator,
        )
        logits = self.backbone(noised.tokens, batch.attention_mask)
        return diffusion_loss(logits, batch.tokens, noised, batch.target_mask)

    def training_step(self, batch: Batch, batch_index: int) -> torch.Tensor | None:
        loader = getattr(getattr(self.trainer, "datamodule", None), "train_loader", None)
        if isinstance(loader, ResumableDataLoader):
            loader.mark_consumed()

        loss = self._loss(batch)
        if not self._loss_is_finite(loss):
            self._handle_nonfinite(loss, batch, batch_index)
            return None
        size = batch.tokens.shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=size)
        self.log("train/tokens", float(batch.attention_mask.sum()), reduce_fx="sum", batch_size=size)
        return loss

    def _loss_is_finite(self, loss: torch.Tensor) -> bool:
        """Return whether the loss is finite on every rank, so that all ranks skip or stop together."""
        finite = bool(torch.isfinite(loss.detach()).all())
        return bool(self.trainer.strategy.reduce_boolean_decision(finite, all=True))

    def _handle_nonfinite(self, loss: torch.Tensor, batch: Batch, batch_index: int) -> None:
        """Skip the batch (no backward, no optimizer step) or raise, as ``training.nonfinite_loss`` selects."""
        ids = ", ".join(batch.ids[:8]) + (f" and {len(batch.ids) - 8} more" if len(batch.ids) > 8 else "")
        where = (
            f"non-finite training loss ({float(loss.detach()):.4g}) at global step {self.global_step} "
            f"(epoch {self.current_epoch}, batch {batch_index}); batch item ids: {ids}"
        )
        if str(self.settings.get("nonfinite_loss", "stop")) != "skip":
            raise NonFiniteLossError(
                f"{where}. Lower training.learning_rate, check these rows, "
                "or set training.nonfinite_loss=skip to skip such batches"
            )
        self.skipped_batches += 1
        log.warning("Skipping a batch with a %s (%d skipped so far)", where, self.skipped_batches)
        self.log("train/nonfinite_skipped", float(self.skipped_batches), reduce_fx="max", batch_size=len(batch.ids))

    def validation_step(self, batch: Batch, batch_index: int) -> None:
        # A fixed noise draw per batch makes validation losses comparable across epochs.
        generator = torch.Generator(device=batch.tokens.device).manual_seed(int(self.system.recipe.seed) + batch_index)
        loss = self._loss(batch, generator)
        self.log("valid/loss", loss, prog_bar=True, batch_size=batch.tokens.shape[0])

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        return (
            batch.to(device)
            if isinstance(batch, Batch)
            else super().transfer_batch_to_device(batch, device, dataloader_idx)
        )

    def configure_optimizers(self) -> Any:
        settings = self.settings
        optimizer = torch.optim.AdamW(
            self.backbone.parameters(),
            lr=float(settings.learning_rate),
            weight_decay=float(settings.weight_decay),
            betas=(0.9, 0.98),
        )
        total = int(settings.max_steps)
        warmup = int(settings.warmup_steps)
        floor = float(settings.min_lr_ratio)

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            progress = min(1.0, (step - warmup) / max(1, total - warmup))
            return floor + (1 - floor) * 0.5 * (1 + torch.cos(torch.tensor(progress * torch.pi)).item())

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[CHECKPOINT_KEY] = {
            "recipe": OmegaConf.to_container(self.system.recipe, resolve=True),
            "plugins": self.system.plugin_states(),
            "skipped_batches": self.skipped_batches,
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.skipped_batches = int(checkpoint.get(CHECKPOINT_KEY, {}).get("skipped_batches", 0))
