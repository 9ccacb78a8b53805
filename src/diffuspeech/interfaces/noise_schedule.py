"""Noise schedule plugin kind."""

from __future__ import annotations

from abc import abstractmethod

import torch

from diffuspeech.interfaces.plugin import Plugin


class NoiseSchedule(Plugin):
    """The masking probability of the forward process as a function of time.

    ``t`` is a float tensor with values in (0, 1]. ``mask_probability(t)`` is
    gamma(t): 0 at t = 0 (clean), 1 at t = 1 (all masked), non-decreasing.
    ``loss_weight(t)`` is the ELBO weight gamma'(t) / gamma(t), which is 1/t for
    the linear schedule (MDLM, LLaDA).
    """

    @abstractmethod
    def mask_probability(self, t: torch.Tensor) -> torch.Tensor:
        """Return gamma(t), same shape as ``t``."""

    @abstractmethod
    def loss_weight(self, t: torch.Tensor) -> torch.Tensor:
        """Return gamma'(t) / gamma(t), same shape as ``t``."""
