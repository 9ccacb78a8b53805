"""Polynomial masking schedule, gamma(t) = t ** exponent."""

from __future__ import annotations

import math

import torch

from diffuspeech.interfaces import NoiseSchedule


class PolynomialSchedule(NoiseSchedule):
    """Mask probability t ** exponent; ELBO weight exponent / t.

    ``exponent`` is a positive finite number, and ``exponent=1`` is the linear
    schedule. An exponent above 1 masks fewer positions at mid times, so
    training gets more nearly clean sequences. An exponent below 1 masks more.
    gamma(0) = 0 and gamma(1) = 1 for every exponent.
    """

    description = "polynomial masking schedule gamma(t) = t ** exponent, ELBO weight exponent / t"

    def __init__(self, exponent: float = 2.0) -> None:
        if not math.isfinite(exponent) or exponent <= 0:
            raise ValueError(f"exponent must be a positive finite number, got {exponent}")
        self.exponent = float(exponent)

    def mask_probability(self, t: torch.Tensor) -> torch.Tensor:
        return t.pow(self.exponent)

    def loss_weight(self, t: torch.Tensor) -> torch.Tensor:
        # gamma'(t) / gamma(t) = exponent * t ** (exponent - 1) / t ** exponent
        return self.exponent / t
