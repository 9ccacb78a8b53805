"""Backbone plugin kind, and the optional key/value caching capability."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

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

    A backbone may also derive from :class:`KeyValueCaching`, so that samplers
    can reuse attention keys and values across denoising steps.
    """

    vocab_size: int

    def __init__(self) -> None:
        nn.Module.__init__(self)

    @abstractmethod
    def forward(self, tokens: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Return logits (batch, length, vocab_size)."""


@dataclass
class KeyValueCache:
    """Attention keys and values of every layer from one full forward pass.

    ``keys[layer]`` and ``values[layer]`` have shape (b, kv_heads, n, head_dim),
    with position embeddings already applied to the keys.
    """

    keys: list[torch.Tensor]
    values: list[torch.Tensor]


class KeyValueCaching(ABC):
    """Optional backbone capability: recompute only some positions against cached keys and values.

    In a bidirectional model every position attends to every other, so
    reusing the keys and values of positions whose tokens changed since the
    cache was built is an approximation (the one Fast-dLLM makes). Only a
    call of ``forward_with_cache`` is exact.
    """

    @abstractmethod
    def forward_with_cache(
        self, tokens: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, KeyValueCache]:
        """Return the logits of ``forward`` (bit for bit) and the keys and values of every layer."""

    @abstractmethod
    def forward_positions(
        self, tokens: torch.Tensor, attention_mask: torch.Tensor, positions: torch.Tensor, cache: KeyValueCache
    ) -> torch.Tensor:
        """Return logits (b, m, vocab_size) at ``positions`` (b, m) int64, computing only those positions.

        Queries, keys and values are recomputed at ``positions`` from the
        current ``tokens`` (b, n); every other position's keys and values come
        from ``cache``. Each row's positions must be distinct.
        """
