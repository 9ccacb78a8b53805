"""Speech tokenizer plugin kind."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterable

import torch

from diffuspeech.interfaces.plugin import Plugin


class SpeechTokenizer(Plugin):
    """Turns a mono waveform into discrete units.

    Contract: ``encode`` takes a float32 tensor of shape (samples,) at
    ``sample_rate`` Hz with values in [-1, 1] and returns an int64 tensor of
    shape (frames,) with values in ``[0, num_units)``, at ``frame_rate`` units
    per second. A tokenizer that learns a codebook from data reports
    ``is_fitted() == False`` until ``fit`` has run.
    """

    sample_rate: int
    frame_rate: float
    num_units: int

    @abstractmethod
    def encode(self, waveform: torch.Tensor) -> torch.Tensor:
        """Return the units of ``waveform``: (samples,) float -> (frames,) int64."""

    def is_fitted(self) -> bool:
        """Return True when ``encode`` can run without ``fit``."""
        return True

    def fit(self, waveforms: Iterable[torch.Tensor]) -> None:
        """Learn the codebook from waveforms at ``sample_rate``."""
        raise NotImplementedError(f"{type(self).__name__} is pretrained and cannot be fitted on a corpus")
