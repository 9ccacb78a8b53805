"""Confidence-based unmasking (LLaDA's low-confidence remasking)."""

from __future__ import annotations

import torch

from diffuspeech.interfaces import Sampler, SamplingRequest
from diffuspeech.interfaces.sampler import ModelFunction


def unmask_counts(num_masked: torch.Tensor, steps: int) -> torch.Tensor:
    """Return how many positions each row unmasks at each step, shape (b, steps).

    The counts fall linearly: every step gets ``num_masked // steps`` and the
    first ``num_masked % steps`` steps one more, so all are unmasked after
    ``steps`` steps.
    """
    base = num_masked // steps
    remainder = num_masked % steps
    counts = base[:, None].repeat(1, steps)
    step_index = torch.arange(steps, device=num_masked.device)[None, :]
    return counts + (step_index < remainder[:, None]).long()


def add_gumbel_noise(logits: torch.Tensor, temperature: float, generator: torch.Generator | None) -> torch.Tensor:
    """Return logits perturbed for sampling at ``temperature``, computed in float64.

    Taking the argmax of the result samples from softmax(logits / temperature).
    Low precision in this noise degrades samples, hence float64.
    """
    if temperature == 0:
        return logits.double()
    uniform = torch.rand(logits.shape, generator=generator, dtype=torch.float64, device=logits.device)
    uniform = uniform.clamp_min(torch.finfo(torch.float64).tiny)
    return logits.double() / temperature - torch.log(-torch.log(uniform))


class ConfidenceSampler(Sampler):
    """Predict every masked position, then keep the k_i most confident.

    Thought and speech positions are denoised together. At temperature 0 the
    choice is greedy. The confidence of a position is the softmax
    probability of the chosen token (float64).
    """

    description = "confidence-based unmasking with a linear unmask count (LLaDA, DiffuSpeech)"

    def __init__(self, steps: int = 32, temperature: float = 1.0) -> None:
        if steps < 1:
            raise ValueError(f"steps must be at least 1, got {steps}")
        if temperature < 0:
            raise ValueError(f"temperature must be non-negative, got {temperature}")
        self.steps = steps
        self.temperature = temperature

    @torch.no_grad()
    def sample(
        self,
        model: ModelFunction,
        request: SamplingRequest,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        tokens = request.tokens.clone()
        masked = request.target_mask & (tokens == request.mask_id)
        counts = unmask_counts(masked.sum(dim=1), self.steps)

        for step in range(self.steps):
            if not masked.any():
                break
            logits = model(tokens, request.attention_mask).double()
            logits = logits.masked_fill(~request.allowed, float("-inf"))

            # b batch, n length, V vocabulary: choose a token per position, then its confidence.
            chosen = add_gumbel_noise(logits, self.temperature, generator).argmax(dim=-1)
            probabilities = torch.softmax(logits, dim=-1)
            confidence = probabilities.gather(-1, chosen[..., None]).squeeze(-1)
            confidence = confidence.masked_fill(~masked, float("-inf"))

            commit = torch.zeros_like(masked)
            for row in range(tokens.shape[0]):
                k = int(counts[row, step])
                if k:
                    commit[row, confidence[row].topk(k).indices] = True
            tokens = torch.where(commit, chosen, tokens)
            masked &= ~commit

        return tokens
