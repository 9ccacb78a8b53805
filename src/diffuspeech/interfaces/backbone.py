"""Backbone plugin kind."""

from __future__ import annotations

from abc import abstractmethod

import torch
from torch import nn

from diffuspeech.interfaces.plugin import Plugin


class Backbone(nn.Module, Plugin):
    """A bidirectional sequence model over the unified vocabulary, with no time input.

    The core passes ``vocab_size`` (the unified vocabulary's size) to the
    constructor. Contract: ``forward(tokens, attention_mask)`` takes int64
    tokens of shape (batch, length) and a bool mask of the same shape that is
    True at real positions and False at padding, and returns float logits of
    shape (batch, length, vocab_size). Padding must not influence real
    positions. ``state_dict`` is ``torch.nn.Module``'s: the weights.
    """

    vocab_size: int

    def __init__(self) -> None:
        nn.Module.__init__(self)

    @abstractmethod
    def forward(self, tokens: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Return logits (batch, length, vocab_size)."""
