"""Sampler plugin kind."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

import torch

from diffuspeech.interfaces.plugin import Plugin

ModelFunction = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class SamplingRequest:
    """A batch of partly masked sequences to denoise.

    Shapes (b batch, n length, V vocabulary size):
    - ``tokens`` (b, n) int64: condition tokens in place, ``mask_id`` at
      every position to generate, padding past each sequence's end;
    - ``attention_mask`` (b, n) bool: True at real positions;
    - ``target_mask`` (b, n) bool: True at the positions to generate;
    - ``allowed`` (b, n, V) bool: the ids each position may take;
    - ``modality`` (b, n) int64: TEXT (0) or SPEECH (1) at target positions,
      -1 elsewhere, for samplers that order the modalities.
    """

    tokens: torch.Tensor
    attention_mask: torch.Tensor
    target_mask: torch.Tensor
    allowed: torch.Tensor
    mask_id: int
    modality: torch.Tensor | None = None


class Sampler(Plugin):
    """Turns every masked target position into a token by iterative unmasking.

    ``sample`` calls ``model(tokens, attention_mask)`` for logits
    (b, n, V) and returns the completed tokens (b, n); positions outside
    ``target_mask`` are returned unchanged.
    """

    @abstractmethod
    def sample(
        self,
        model: ModelFunction,
        request: SamplingRequest,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Return the denoised tokens (b, n)."""
