"""Recognizer plugin kind (an independent judge for evaluation)."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterable, Sequence

import torch

from diffuspeech.interfaces.plugin import Plugin


class Recognizer(Plugin):
    """Transcribes speech, independently of the model under test.

    ``set_vocabulary`` restricts recognition to the words of the corpus text.
    ``transcribe`` takes a float32 mono waveform (samples,) and its sample rate
    and returns lower-case words separated by single spaces. With ``choices``,
    the result is one of those sentences (a closed-set grammar).
    """

    @abstractmethod
    def set_vocabulary(self, texts: Iterable[str]) -> None:
        """Restrict open recognition to the words that occur in ``texts``."""

    @abstractmethod
    def transcribe(self, waveform: torch.Tensor, sample_rate: int, choices: Sequence[str] | None = None) -> str:
        """Return the transcript of ``waveform``."""
