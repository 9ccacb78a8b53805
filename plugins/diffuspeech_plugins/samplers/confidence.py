"""Confidence-based unmasking (LLaDA's low-confidence remasking) and its configurable family.

One class covers LLaDA's sampler and the variants built on it: other
confidence measures, random remasking, semi-autoregressive blocks,
confidence-threshold parallel decoding, key/value caching, top-k, top-p,
classifier-free guidance, the order of text and speech, and end-marker
suppression. The named plugins in ``presets.py`` fix some of these options.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from diffuspeech.interfaces import Sampler, SamplingRequest, SamplingStats
from diffuspeech.interfaces.sampler import ModelFunction
from diffuspeech_plugins.samplers.logits import (
    CONFIDENCE_MEASURES,
    add_gumbel_noise,
    confidence_of,
    filter_top_k,
    filter_top_p,
    suppress_end_markers,
)
from diffuspeech_plugins.samplers.network import CACHE_MODES, TargetNetwork
from diffuspeech_plugins.samplers.targets import TargetSlots, first_true, split_blocks

__all__ = ["ConfidenceSampler", "add_gumbel_noise", "unmask_counts"]

ORDERS = ("joint", "text_first")


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


def check_common_options(
    steps: int, temperature: float, order: str, top_k: int | None, top_p: float | None, cfg_scale: float
) -> None:
    """Raise ValueError on an invalid option shared by every sampler of the family."""
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    if temperature < 0:
        raise ValueError(f"temperature must be non-negative, got {temperature}")
    if order not in ORDERS:
        raise ValueError(f"order {order!r} is invalid; choices: {', '.join(ORDERS)}")
    if order == "text_first" and steps < 2:
        raise ValueError(f"order text_first needs at least 2 steps, got {steps}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be at least 1 or null, got {top_k}")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1] or null, got {top_p}")
    if cfg_scale < 0:
        raise ValueError(f"cfg_scale must be non-negative (0 turns guidance off), got {cfg_scale}")


def split_phases(slots: TargetSlots, masked: torch.Tensor, order: str, steps: int) -> list[tuple[torch.Tensor, int]]:
    """Return (member slots (b, m), steps) per phase: one phase for ``joint``, text then speech for ``text_first``.

    With ``text_first`` the text gets ``steps // 2`` steps and speech the rest
    when the batch has both; a batch with one modality gives it every step.
    """
    if order == "joint":
        return [(masked, steps)]
    text = masked & (slots.modality == 0)
    speech = masked & ~text
    text_steps = steps // 2 if speech.any() else steps
    if not text.any():
        text_steps = 0
    return [(text, text_steps), (speech, steps - text_steps)]


class ConfidenceSampler(Sampler):
    """Predict every masked position of the current block, then commit the most confident.

    At each step the sampler predicts a token for every masked target of the
    current block and commits the k most confident, where k falls linearly
    so the block is done after its share of ``steps`` (LLaDA's
    ``get_num_transfer_tokens``). Options:

    - ``temperature``: 0 is greedy; otherwise Gumbel-max sampling in float64;
    - ``top_k`` and ``top_p``: filter the distribution before the choice;
    - ``confidence``: ``probability`` of the chosen token (LLaDA), ``margin``
      between the top two, negative ``entropy``, or ``random`` (random remasking);
    - ``threshold``: also commit every masked position whose confidence reaches
      it (parallel decoding, Fast-dLLM), so a block can finish in fewer steps;
      at least one position per step is always committed;
    - ``block_length``: semi-autoregressive decoding over blocks of this many
      target positions, left to right; ``steps`` is split evenly over the
      blocks, at least one step each;
    - ``order``: ``joint`` denoises thought and speech together (DiffuSpeech);
      ``text_first`` gives the text ``steps // 2`` steps, then the speech the rest;
    - ``cfg_scale``: classifier-free guidance against a pass with the
      condition masked; 0 turns it off;
    - ``cache``: ``none``, ``condition`` or ``block`` key/value reuse (see
      ``network.py`` for what each approximates); the backbone must offer
      ``KeyValueCaching``, otherwise every call is a full one;
    - ``min_content`` and ``end_penalty``: forbid a span's closing marker at
      its first ``min_content`` positions, and lower its logit by
      ``end_penalty`` elsewhere, before tokens are chosen.

    Not supported: remasking committed tokens. ``last_stats`` holds the
    network calls of the latest call.
    """

    description = "confidence-based unmasking with a linear unmask count (LLaDA, DiffuSpeech) and its variants"

    def __init__(
        self,
        steps: int = 32,
        temperature: float = 1.0,
        order: str = "joint",
        confidence: str = "probability",
        threshold: float | None = None,
        block_length: int | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        cfg_scale: float = 0.0,
        cache: str = "none",
        min_content: int = 0,
        end_penalty: float = 0.0,
    ) -> None:
        check_common_options(steps, temperature, order, top_k, top_p, cfg_scale)
        if confidence not in CONFIDENCE_MEASURES:
            raise ValueError(f"confidence {confidence!r} is invalid; choices: {', '.join(CONFIDENCE_MEASURES)}")
        if threshold is not None and not 0 < threshold <= 1:
            raise ValueError(f"threshold must be in (0, 1] or null, got {threshold}")
        if block_length is not None and block_length < 1:
            raise ValueError(f"block_length must be at least 1 or null, got {block_length}")
        if cache not in CACHE_MODES:
            raise ValueError(f"cache {cache!r} is invalid; choices: {', '.join(CACHE_MODES)}")
        if min_content < 0:
            raise ValueError(f"min_content must be non-negative, got {min_content}")
        if end_penalty < 0:
            raise ValueError(f"end_penalty must be non-negative, got {end_penalty}")
        self.steps = steps
        self.temperature = temperature
        self.order = order
        self.confidence = confidence
        self.threshold = threshold
        self.block_length = block_length
        self.top_k = top_k
        self.top_p = top_p
        self.cfg_scale = cfg_scale
        self.cache = cache
        self.min_content = min_content
        self.end_penalty = end_penalty

    @torch.no_grad()
    def sample(
        self,
        model: ModelFunction,
        request: SamplingRequest,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        final = request.tokens.clone()
        for tokens, _ in self.sample_stream(model, request, generator):
            final = tokens
        return final

    @torch.no_grad()
    def sample_stream(
        self,
        model: ModelFunction,
        request: SamplingRequest,
        generator: torch.Generator | None = None,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self.order == "text_first" and request.modality is None:
            raise ValueError("order text_first needs SamplingRequest.modality")
        slots = TargetSlots.from_request(request)
        tokens = request.tokens.clone()
        stats = SamplingStats(batch_size=tokens.shape[0])
        self.last_stats = stats
        network = TargetNetwork(model, request, slots, self.cache, self.cfg_scale, stats)
        masked = slots.valid & (tokens.gather(1, slots.positions) == request.mask_id)

        for members, phase_steps in split_phases(slots, masked, self.order, self.steps):
            blocks = [block for block in split_blocks(members, self.block_length) if block.any()]
            if not blocks or phase_steps == 0:
                continue
            shares = unmask_counts(torch.tensor([max(phase_steps, len(blocks))]), len(blocks))[0].tolist()
            for block, block_steps in zip(blocks, shares, strict=True):
                tokens, masked = self._denoise_block(network, slots, tokens, masked, block, block_steps, generator)
                finished = request.target_mask.clone()
                finished.scatter_(1, slots.positions, slots.valid & ~masked)
                yield tokens, finished & request.target_mask

    def _denoise_block(
        self,
        network: TargetNetwork,
        slots: TargetSlots,
        tokens: torch.Tensor,
        masked: torch.Tensor,
        block: torch.Tensor,
        steps: int,
        generator: torch.Generator | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Unmask the masked slots of ``block`` (b, m) in at most ``steps`` steps; return tokens and ``masked``."""
        index = first_true(block, int(block.sum(dim=1).max()))
        block_slots = slots.gather(index)
        block_masked = masked.gather(1, index) & block.gather(1, index)

        for step in range(steps):
            if not block_masked.any():
                break
            logits = network.logits(tokens, index, refresh=step == 0)
            chosen, confidence = self._choose(logits, block_slots, generator)
            confidence = confidence.masked_fill(~block_masked, float("-inf"))
            commit = self._select(confidence, block_masked, steps - step)

            current = tokens.gather(1, block_slots.positions)
            tokens = tokens.scatter(1, block_slots.positions, torch.where(commit, chosen, current))
            block_masked &= ~commit
            network.stats.steps += 1
            network.stats.committed.append(commit.sum(dim=1).tolist())

        # Index columns outside the block (rows with a shorter block) keep their state.
        outside = masked.gather(1, index) & ~block.gather(1, index)
        return tokens, masked.scatter(1, index, block_masked | outside)

    def _choose(
        self, logits: torch.Tensor, slots: TargetSlots, generator: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the chosen ids (b, k) and their float64 confidence from logits (b, k, V)."""
        logits = logits.double().masked_fill(~slots.allowed, float("-inf"))
        logits = suppress_end_markers(logits, slots.end_id, slots.span_position, self.min_content, self.end_penalty)
        logits = filter_top_p(filter_top_k(logits, self.top_k), self.top_p)
        chosen = add_gumbel_noise(logits, self.temperature, generator).argmax(dim=-1)
        return chosen, confidence_of(logits, chosen, self.confidence, generator)

    def _select(self, confidence: torch.Tensor, masked: torch.Tensor, steps_left: int) -> torch.Tensor:
        """Return the slots (b, k) to commit: the linear count, or more where ``threshold`` is reached."""
        remaining = masked.sum(dim=1)
        count = remaining // steps_left + (remaining % steps_left > 0).long()
        if self.threshold is not None:
            count = torch.maximum(count, (masked & (confidence >= self.threshold)).sum(dim=1))
        largest = int(count.max())
        commit = torch.zeros_like(masked)
        if largest == 0:
            return commit
        top = confidence.topk(largest, dim=1).indices
        rank = torch.arange(largest, device=masked.device)[None, :]
        return commit.scatter(1, top, rank < count[:, None])
