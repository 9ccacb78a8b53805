"""Cosine masking schedule, gamma(t) = cos(pi/2 * (1 - t)) (MMaDA; DiffuSpeech)."""

from __future__ import annotations

import math

import torch

from diffuspeech.interfaces import NoiseSchedule


class CosineSchedule(NoiseSchedule):
    """Mask probability cos(pi/2 (1 - t)); ELBO weight (pi/2) tan(pi/2 (1 - t))."""

    description = "cosine masking schedule gamma(t) = cos(pi/2 (1 - t)) (MMaDA, DiffuSpeech)"

    def mask_probability(self, t: torch.Tensor) -> torch.Tensor:
        return torch.cos(0.5 * math.pi * (1.0 - t))

    def loss_weight(self, t: torch.Tensor) -> torch.Tensor:
        # gamma'(t) / gamma(t) = (pi/2) sin(pi/2 (1 - t)) / cos(pi/2 (1 - t))
        return 0.5 * math.pi * torch.tan(0.5 * math.pi * (1.0 - t))
