"""Loading a trained checkpoint and answering, transcribing and speaking with it."""

from __future__ import annotations

import dataclasses
import itertools
import logging
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from diffuspeech.audio import load_audio
from diffuspeech.errors import DiffuSpeechError
from diffuspeech.generation import Generated, generate_batched, generate_stream
from diffuspeech.interfaces import Backbone, Sampler
from diffuspeech.recipe import apply_overrides, build_component
from diffuspeech.settings import plugin_keys
from diffuspeech.system import System, build_backbone, compose
from diffuspeech.threads import limited_threads
from diffuspeech.training.checkpointing import read_checkpoint
from diffuspeech.training.module import CHECKPOINT_KEY

log = logging.getLogger(__name__)


@dataclass
class AudioChunk:
    """A piece of a streamed spoken answer.

    ``waveform`` (samples,) at the vocoder's rate; ``seconds`` is the wall
    time from the start of the request to when the chunk was ready;
    ``thought`` is the text thought when it is complete, else None; ``last``
    marks the final chunk, whose waveform may be empty.
    """

    waveform: torch.Tensor
    seconds: float
    thought: str | None
    last: bool = False


@dataclass
class LoadedModel:
    """A trained system and backbone, ready for generation."""

    system: System
    backbone: Backbone

    def with_sampler(self, overrides: Sequence[str]) -> LoadedModel:
        """Return a copy whose sampler is rebuilt from the stored recipe plus ``overrides`` (``sampler.*=value``)."""
        bad = [item for item in overrides if not item.startswith("sampler.")]
        if bad:
            raise DiffuSpeechError(f"only sampler settings can change here, got {', '.join(bad)}; use sampler.*=value")
        recipe = apply_overrides(self.system.recipe, overrides)
        sampler: Sampler = build_component(recipe, "sampler", "sampler")
        return LoadedModel(dataclasses.replace(self.system, recipe=recipe, sampler=sampler), self.backbone)

    def units_of(self, audio_path: Path) -> list[int]:
        """Return vocabulary ids of the speech units of a wav file."""
        waveform = load_audio(audio_path, self.system.speech_tokenizer.sample_rate)
        units = self.system.speech_tokenizer.encode(waveform)
        return self.system.vocabulary.units_to_ids(units).tolist()

    def run(self, task: str, conditions: list[dict[str, list[int]]], seed: int = 0) -> list[Generated]:
        """Generate the targets of ``task`` for each condition."""
        batch_size = int(self.system.recipe.training.batch_size)
        return generate_batched(self.system, self.backbone, task, conditions, batch_size, seed)

    def ask(self, audio_path: Path, seed: int = 0) -> tuple[str, torch.Tensor]:
        """Answer a spoken question: return the thought and the spoken answer's waveform."""
        result = self.run("s2s", [{"question_units": self.units_of(audio_path)}], seed)[0]
        return result.texts["thought"], self.vocode(result.units["reply_units"])

    def ask_stream(self, audio_path: Path, seed: int = 0) -> Iterator[AudioChunk]:
        """Answer a spoken question, yielding audio as each block of reply units is finished.

        With a sampler that decodes in blocks (``block_length``) and
        ``order=text_first``, the thought is finished first and the reply's
        blocks then arrive left to right, so the first audio comes before the
        whole answer is denoised. Each chunk is vocoded on its own, so Griffin-Lim
        restarts its phase estimate at chunk boundaries.
        """
        start = time.perf_counter()
        conditions = [{"question_units": self.units_of(audio_path)}]
        generator = torch.Generator(device=next(self.backbone.parameters()).device).manual_seed(seed)
        emitted = 0
        result: Generated | None = None
        for results in generate_stream(self.system, self.backbone, "s2s", conditions, generator):
            result = results[0]
            units = result.units["reply_units"]
            if units.numel() > emitted:
                waveform = self.vocode(units[emitted:])
                emitted = units.numel()
                thought = result.texts["thought"] if result.complete["thought"] else None
                yield AudioChunk(waveform, time.perf_counter() - start, thought)
        thought = result.texts["thought"] if result is not None else ""
        yield AudioChunk(torch.zeros(0), time.perf_counter() - start, thought, last=True)

    def transcribe(self, audio_path: Path, seed: int = 0) -> str:
        """Return the transcript of a wav file."""
        return self.run("asr", [{"question_units": self.units_of(audio_path)}], seed)[0].texts["transcript"]

    def speak(self, text: str, seed: int = 0) -> torch.Tensor:
        """Return the waveform of ``text`` spoken by the model."""
        if not text.strip():
            raise DiffuSpeechError("the text to speak is empty; give at least one word")
        ids = self.system.text_tokenizer.encode(text)
        decoded = self.system.text_tokenizer.decode(ids)
        if decoded.split() != text.split():
            missing = sorted({character for character in text if not character.isspace() and character not in decoded})
            log.warning(
                "the text tokenizer does not cover %s of %r, so the model speaks %r; "
                "write the text with the characters of the training corpus",
                ", ".join(repr(character) for character in missing) or "part",
                text,
                decoded,
            )
        return self.vocode(self.run("tts", [{"transcript": ids}], seed)[0].units["reply_units"])

    def vocode(self, units: torch.Tensor) -> torch.Tensor:
        """Decode units to a waveform; an empty unit sequence gives 0.1 s of silence."""
        if units.numel() == 0:
            return torch.zeros(self.system.vocoder.sample_rate // 10)
        with limited_threads(1):
            return self.system.vocoder.decode(units)


def _read_checkpoint(path: Path, device: str) -> dict[str, Any]:
    """Read a diffuspeech checkpoint without executing code from it (``weights_only=True``)."""
    checkpoint = read_checkpoint(path, device)
    if CHECKPOINT_KEY not in checkpoint:
        raise DiffuSpeechError(f"{path} is not a diffuspeech checkpoint: it has no {CHECKPOINT_KEY!r} entry")
    return checkpoint


TRUST_PLUGIN_PATHS = "DIFFUSPEECH_TRUST_PLUGIN_PATHS"
"""Environment variable that, set to 1, lets a checkpoint's recipe name plugins by dotted path."""


def _checked_recipe(path: Path, stored: Any) -> DictConfig:
    """Return the stored recipe, rejecting plugins named by dotted path unless the user trusts them.

    A dotted path (``module:Class``) imports a module that the checkpoint's
    author chose. Plugins from installed entry points, or dotted paths in a
    recipe the user wrote, are the only code a user chooses to run.
    """
    recipe = OmegaConf.create(stored)
    if os.environ.get(TRUST_PLUGIN_PATHS) == "1":
        return recipe
    for key in plugin_keys():
        name = OmegaConf.select(recipe, f"{key}.name", default=None)
        if isinstance(name, str) and ":" in name:
            raise DiffuSpeechError(
                f"checkpoint {path} names plugin {name!r} at {key}.name by dotted path, which would import that "
                f"module; only installed plugins load from checkpoints. Set {TRUST_PLUGIN_PATHS}=1 if you trust it"
            )
    return recipe


def stored_recipe(path: Path) -> DictConfig:
    """Return the resolved recipe a checkpoint was trained with."""
    return _checked_recipe(path, _read_checkpoint(path, "cpu")[CHECKPOINT_KEY]["recipe"])


def load_checkpoint(path: Path, device: str = "cpu") -> LoadedModel:
    """Load a diffuspeech checkpoint without executing code from it (``weights_only=True``)."""
    checkpoint = _read_checkpoint(path, device)
    stored = checkpoint[CHECKPOINT_KEY]
    recipe = _checked_recipe(path, stored["recipe"])
    system = compose(recipe)
    system.load_plugin_states(stored["plugins"])
    prefix = "backbone."
    weights = {k[len(prefix) :]: v for k, v in checkpoint["state_dict"].items() if k.startswith(prefix)}
    backbone = _trained_backbone(recipe, system, weights)
    backbone.to(device).eval()
    return LoadedModel(system, backbone)


def _trained_backbone(recipe: DictConfig, system: System, weights: dict[str, torch.Tensor]) -> Backbone:
    """Build the recipe's backbone with the trained ``weights``.

    The backbone is built on the meta device first, so a backbone that starts
    from pretrained files named in the recipe does not read them again: the
    trained weights replace them anyway. A backbone that keeps state outside
    its state dict (a tensor still on the meta device) is built normally.
    """
    with torch.device("meta"):
        backbone = build_backbone(recipe, system.vocabulary)
    backbone.load_state_dict(weights, assign=True)
    tensors = itertools.chain(backbone.parameters(), backbone.buffers())
    if any(tensor.is_meta for tensor in tensors):
        backbone = build_backbone(recipe, system.vocabulary)
        backbone.load_state_dict(weights)
    return backbone
