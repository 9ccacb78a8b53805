"""A LLaDA backbone whose logits turn NaN on chosen training calls, for the non-finite loss tests.

Recipes name it by dotted path: ``backbone.name=poisoned_backbone:PoisonedLLaDA``.
"""

from __future__ import annotations

from typing import Any

import torch

from diffuspeech_plugins.backbones.llada import LLaDABackbone


class PoisonedLLaDA(LLaDABackbone):
    """``LLaDABackbone`` that adds NaN to its logits on the training forward calls numbered in ``nan_calls``.

    Calls are counted from 1 and only in training mode, so call k is the batch of global step k - 1
    when no batch was skipped before it.
    """

    def __init__(self, nan_calls: list[int], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.nan_calls = set(nan_calls)
        self.training_calls = 0

    def forward(self, tokens: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        logits = super().forward(tokens, attention_mask)
        if not self.training:
            return logits
        self.training_calls += 1
        if self.training_calls in self.nan_calls:
            return logits + float("nan")
        return logits
