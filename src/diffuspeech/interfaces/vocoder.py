"""Vocoder plugin kind."""

from __future__ import annotations

from abc import abstractmethod

import torch

from diffuspeech.interfaces.plugin import Plugin
from diffuspeech.interfaces.speech_tokenizer import SpeechTokenizer


class Vocoder(Plugin):
    """Turns units back into a waveform.

    Contract: ``decode`` takes an int64 tensor of shape (frames,) with values
    in ``[0, num_units)`` at ``frame_rate`` units per second and returns a
    float32 tensor of shape (samples,) at ``sample_rate`` Hz.
    """

    sample_rate: int
    frame_rate: float
    num_units: int

    @abstractmethod
    def decode(self, units: torch.Tensor) -> torch.Tensor:
        """Return the waveform for ``units``: (frames,) int64 -> (samples,) float32."""

    def attach(self, speech_tokenizer: SpeechTokenizer) -> None:
        """Receive the fitted speech tokenizer, for vocoders that read its codebook."""
        return None
