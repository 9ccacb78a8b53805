"""The LightningModule of masked speech-text diffusion."""

from __future__ import annotations

import logging
from typing import Any

import lightning as L
import torch
from omegaconf import OmegaConf

from diffuspeech.data.datamodule import Batch
from diffuspeech.diffusion import add_noise, diffusion_loss
from diffuspeech.interfaces import Backbone
from diffuspeech.system import System

log = logging.getLogger(__name__)

CHECKPOINT_KEY = "diffuspeech"
"""Checkpoint entry holding the resolved recipe and the fitted plugin states."""


class DiffusionLM(L.LightningModule):
    """Trains a backbone with the ELBO-weighted masked-diffusion loss.

    Optimizer: AdamW with linear warm-up then cosine decay to
    ``training.min_lr_ratio`` of the peak rate. Checkpoints carry the
    resolved recipe and the fitted tokenizers, so a checkpoint alone is
    enough for inference.
    """

    def __init__(self, system: System, backbone: Backbone) -> None:
        super().__init__()
        self.system = system
        self.backbone = backbone
        self.settings = system.recipe.training

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

    def on_train_epoch_start(self) -> None:
        # The task mixture draws from (seed, epoch, index), so each epoch gets a new draw.
        datamodule = getattr(self.trainer, "datamodule", None)
        dataset = getattr(datamodule, "train_dataset", None)
        if dataset is not None and hasattr(dataset, "epoch"):
            dataset.epoch = self.current_epoch

    def training_step(self, batch: Batch, batch_index: int) -> torch.Tensor:
        loss = self._loss(batch)
        size = batch.tokens.shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=size)
        self.log("train/tokens", float(batch.attention_mask.sum()), reduce_fx="sum", batch_size=size)
        return loss

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
        }
