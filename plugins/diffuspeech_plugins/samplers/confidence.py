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

    With ``order="joint"`` (DiffuSpeech's setting) thought and speech
    positions are denoised together. With ``order="text_first"`` the text
    targets get the first ``steps // 2`` steps and the speech targets the
    rest, so speech is generated from a finished thought (a batch with one
    modality only gives it every step). At temperature 0
    the choice is greedy. The confidence of a position is the softmax
    probability of the chosen token (float64).
    """

    description = "confidence-based unmasking with a linear unmask count (LLaDA, DiffuSpeech)"

    def __init__(self, steps: int = 32, temperature: float = 1.0, order: str = "joint") -> None:
        if steps < 1:
            raise ValueError(f"steps must be at least 1, got {steps}")
        if temperature < 0:
            raise ValueError(f"temperature must be non-negative, got {temperature}")
        if order not in ("joint", "text_first"):
            raise ValueError(f"order {order!r} is invalid; choices: joint, text_first")
        if order == "text_first" and steps < 2:
            raise ValueError(f"order text_first needs at least 2 steps, got {steps}")
        self.steps = steps
        self.temperature = temperature
        self.order = order

    @torch.no_grad()
    def sample(
        self,
        model: ModelFunction,
        request: SamplingRequest,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        tokens = request.tokens.clone()
        masked = request.target_mask & (tokens == request.mask_id)
        if self.order == "joint":
            return self._denoise(model, request, tokens, masked, self.steps, generator)
        if request.modality is None:
            raise ValueError("order text_first needs SamplingRequest.modality")

        # Text targets first, then speech targets conditioned on the finished text. The steps are
        # shared only when the batch has both, so TTS keeps every step for its speech.
        text = masked & (request.modality == 0)
        speech = masked & ~text
        text_steps = self.steps // 2 if speech.any() else self.steps
        if not text.any():
            text_steps = 0
        tokens = self._denoise(model, request, tokens, text, text_steps, generator)
        return self._denoise(model, request, tokens, speech, self.steps - text_steps, generator)

    def _denoise(
        self,
        model: ModelFunction,
        request: SamplingRequest,
        tokens: torch.Tensor,
        masked: torch.Tensor,
        steps: int,
        generator: torch.Generator | None,
    ) -> torch.Tensor:
        """Unmask the ``masked`` positions of ``tokens`` in ``steps`` steps (none when ``steps`` is 0)."""
        if steps == 0:
            return tokens
        masked = masked.clone()
        counts = unmask_counts(masked.sum(dim=1), steps)

        for step in range(steps):
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
