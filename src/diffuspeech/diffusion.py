"""The masked-diffusion forward process and its ELBO-weighted loss.

Selective masking: only target positions are ever masked, so the condition
(the task token, the markers and the user's input) stays clean. Each
modality has its own schedule and its own time draw per sequence, after
MMaDA: a sequence's text targets are masked at t_text and its speech
targets at t_speech.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from diffuspeech.interfaces import NoiseSchedule
from diffuspeech.vocabulary import SPEECH, TEXT

MIN_TIME = 1e-3
"""Times are drawn from [MIN_TIME, 1] so that the 1/t-like weights stay finite."""


@dataclass
class NoisedBatch:
    """The result of the forward process; tensors are (b, n) unless stated.

    ``times`` and ``weights`` map each modality code to a (b,) tensor.
    """

    tokens: torch.Tensor
    masked: torch.Tensor
    weight: torch.Tensor
    times: dict[int, torch.Tensor]


def add_noise(
    tokens: torch.Tensor,
    target_mask: torch.Tensor,
    modality: torch.Tensor,
    schedules: dict[int, NoiseSchedule],
    mask_id: int,
    generator: torch.Generator | None = None,
) -> NoisedBatch:
    """Mask target positions of each modality with probability gamma_m(t_m).

    ``tokens``, ``target_mask`` and ``modality`` are (b, n). Returns the
    noised tokens, which positions were masked, and the per-position loss
    weight gamma_m'(t_m) / gamma_m(t_m) (zero outside targets).
    """
    b, n = tokens.shape
    device = tokens.device
    masked = torch.zeros(b, n, dtype=torch.bool, device=device)
    weight = torch.zeros(b, n, dtype=torch.float32, device=device)
    times: dict[int, torch.Tensor] = {}
    draws = torch.rand(b, n, generator=generator, device=device)

    for code in (TEXT, SPEECH):
        positions = target_mask & (modality == code)
        t = MIN_TIME + (1 - MIN_TIME) * torch.rand(b, generator=generator, device=device)
        times[code] = t
        probability = schedules[code].mask_probability(t)[:, None]
        masked |= positions & (draws < probability)
        weight = torch.where(positions, schedules[code].loss_weight(t)[:, None].float(), weight)

    noised = torch.where(masked, torch.full_like(tokens, mask_id), tokens)
    return NoisedBatch(tokens=noised, masked=masked, weight=weight, times=times)


def diffusion_loss(
    logits: torch.Tensor, clean: torch.Tensor, noised: NoisedBatch, target_mask: torch.Tensor
) -> torch.Tensor:
    """Return the ELBO-weighted cross entropy over masked target positions.

    Each sequence's weighted sum is divided by its number of target
    positions (as LLaDA divides by the answer length), then averaged over the
    batch. ``logits`` is (b, n, V); ``clean`` and ``target_mask`` are (b, n).
    """
    cross_entropy = F.cross_entropy(logits.transpose(1, 2).float(), clean, reduction="none")
    per_position = cross_entropy * noised.weight * noised.masked
    per_sequence = per_position.sum(dim=1) / target_mask.sum(dim=1).clamp_min(1)
    return per_sequence.mean()
