"""Sigmoid masking schedule, a logistic curve rescaled to run from 0 to 1 on [0, 1]."""

from __future__ import annotations

import math

import torch

from diffuspeech.interfaces import NoiseSchedule


class SigmoidSchedule(NoiseSchedule):
    """Mask probability (s(k (t - 1/2)) - s(-k/2)) / (s(k/2) - s(-k/2)), with s the logistic function.

    ``steepness`` (k) is a positive finite number. A small k gives a nearly
    linear schedule, and a large k masks few positions for t below 1/2 and most
    positions above it. gamma(0) = 0, gamma(1/2) = 1/2 and gamma(1) = 1 for
    every k. The ELBO weight gamma'(t) / gamma(t) is
    k s(x) (1 - s(x)) / (s(x) - s(-k/2)) with x = k (t - 1/2).
    """

    description = (
        "sigmoid masking schedule: a logistic curve of the given steepness through (0, 0) and (1, 1) (example plugin)"
    )

    def __init__(self, steepness: float = 6.0) -> None:
        if not math.isfinite(steepness) or steepness <= 0:
            raise ValueError(f"steepness must be a positive finite number, got {steepness}")
        self.steepness = float(steepness)
        self._low = 1.0 / (1.0 + math.exp(0.5 * self.steepness))
        self._high = 1.0 / (1.0 + math.exp(-0.5 * self.steepness))

    def mask_probability(self, t: torch.Tensor) -> torch.Tensor:
        logistic = torch.sigmoid(self.steepness * (t - 0.5))
        return (logistic - self._low) / (self._high - self._low)

    def loss_weight(self, t: torch.Tensor) -> torch.Tensor:
        logistic = torch.sigmoid(self.steepness * (t - 0.5))
        return self.steepness * logistic * (1.0 - logistic) / (logistic - self._low)
