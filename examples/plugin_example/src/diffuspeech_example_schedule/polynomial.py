"""Polynomial masking schedule, gamma(t) = t ** power."""

from __future__ import annotations

import torch

from diffuspeech.interfaces import NoiseSchedule


class PolynomialSchedule(NoiseSchedule):
    """Mask probability t ** power; ELBO weight power / t.

    ``power`` is a positive float. ``power=1`` is the linear schedule. A
    larger power masks fewer positions at mid times, so training sees more
    nearly clean sequences. gamma(0) = 0 and gamma(1) = 1 for every power.
    """

    description = "polynomial masking schedule gamma(t) = t ** power, ELBO weight power / t (example plugin)"

    def __init__(self, power: float = 2.0) -> None:
        if power <= 0:
            raise ValueError(f"power must be positive, got {power}")
        self.power = float(power)

    def mask_probability(self, t: torch.Tensor) -> torch.Tensor:
        return t**self.power

    def loss_weight(self, t: torch.Tensor) -> torch.Tensor:
        # gamma'(t) / gamma(t) = power * t ** (power - 1) / t ** power
        return self.power / t
