"""Linear masking schedule, gamma(t) = t (MDLM, LLaDA)."""

from __future__ import annotations

import torch

from diffuspeech.interfaces import NoiseSchedule


class LinearSchedule(NoiseSchedule):
    """Mask probability t; ELBO weight 1/t."""

    description = "linear masking schedule gamma(t) = t, ELBO weight 1/t (MDLM, LLaDA)"

    def mask_probability(self, t: torch.Tensor) -> torch.Tensor:
        return t.clone()

    def loss_weight(self, t: torch.Tensor) -> torch.Tensor:
        return 1.0 / t
