"""A callback that samples from the model during validation.

At the end of every validation it answers a few validation questions
(speech-to-text QA accuracy and ASR exact-match rate as metrics) and writes
spoken answers as wav files into the MLflow run (``audio/step_<N>/``).
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import lightning as L
from lightning.pytorch.loggers import MLFlowLogger

from diffuspeech.audio import save_audio
from diffuspeech.data.datamodule import EncodedRow, SpeechTextDataModule
from diffuspeech.generation import generate_batched
from diffuspeech.training.module import DiffusionLM
from diffuspeech.training.tracking import log_artifact

log = logging.getLogger(__name__)


def _conditions(rows: list[EncodedRow], names: tuple[str, ...]) -> list[dict[str, list[int]]]:
    return [{name: row.fields[name] for name in names} for row in rows]


class ValidationSamples(L.Callback):
    """Samples ``items`` validation questions and ``audio_items`` spoken answers per validation."""

    def __init__(self, items: int, audio_items: int, seed: int) -> None:
        self.items = items
        self.audio_items = audio_items
        self.seed = seed

    def on_validation_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero or self.items == 0:
            return
        assert isinstance(module, DiffusionLM)
        datamodule = getattr(trainer, "datamodule", None)
        assert isinstance(datamodule, SpeechTextDataModule)
        system = module.system
        rows = [row for row in datamodule.valid_rows if "s2t" in row.tasks][: self.items]
        batch_size = int(system.recipe.training.batch_size)

        if rows:
            answers = generate_batched(
                system, module.backbone, "s2t", _conditions(rows, ("question_units",)), batch_size, self.seed
            )
            correct = sum(out.texts["answer"] == row.row.get("answer") for out, row in zip(answers, rows, strict=True))
            module.log("valid/s2t_accuracy", correct / len(rows))

        asr_rows = [row for row in datamodule.valid_rows if "asr" in row.tasks][: self.items]
        if asr_rows:
            transcripts = generate_batched(
                system, module.backbone, "asr", _conditions(asr_rows, ("question_units",)), batch_size, self.seed
            )
            exact = sum(
                out.texts["transcript"] == row.row.get("transcript")
                for out, row in zip(transcripts, asr_rows, strict=True)
            )
            module.log("valid/asr_exact_match", exact / len(asr_rows))

        speech_rows = [row for row in datamodule.valid_rows if "s2s" in row.tasks][: self.audio_items]
        logger = trainer.logger
        if not speech_rows or not isinstance(logger, MLFlowLogger):
            return
        replies = generate_batched(
            system, module.backbone, "s2s", _conditions(speech_rows, ("question_units",)), batch_size, self.seed
        )
        with tempfile.TemporaryDirectory() as folder:
            for row, reply in zip(speech_rows, replies, strict=True):
                units = reply.units["reply_units"]
                if units.numel() == 0:
                    log.info("Validation sample %s has an empty spoken answer", row.id)
                    continue
                path = Path(folder) / f"{row.id}.wav"
                save_audio(path, system.vocoder.decode(units), system.vocoder.sample_rate)
                log_artifact(logger, path, f"audio/step_{trainer.global_step:06d}")
