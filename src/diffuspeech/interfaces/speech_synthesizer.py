"""Speech synthesizer plugin kind (builds corpora)."""

from __future__ import annotations

from abc import abstractmethod

import torch

from diffuspeech.interfaces.plugin import Plugin


class SpeechSynthesizer(Plugin):
    """Speaks text with a named voice.

    ``synthesize`` returns a float32 mono waveform (samples,) in [-1, 1] and
    its sample rate in Hz. ``rate`` scales speed (1.0 is the voice's own, 1.2
    is 20% faster) and ``pitch`` scales the voice's mean pitch (1.0 unchanged).
    Unknown voices raise ``ValueError`` naming the available ones.
    """

    @property
    @abstractmethod
    def voices(self) -> list[str]:
        """Names of the voices this synthesizer can speak with."""

    @abstractmethod
    def synthesize(self, text: str, voice: str, rate: float = 1.0, pitch: float = 1.0) -> tuple[torch.Tensor, int]:
        """Return (waveform (samples,), sample_rate)."""
