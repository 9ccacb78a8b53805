"""Network calls for the logits of target slots, with optional caching and classifier-free guidance.

Caching modes (``cache``), all refreshed by a full forward pass at the first
step of every block and every ``text_first`` phase, which is exact:

- ``none``: a full forward pass at every step, the plain path.
- ``condition``: later steps recompute every target position and reuse the
  condition's keys and values from the refresh. This is an approximation in a
  bidirectional model, because condition positions attend to the targets,
  which change between steps; Fast-dLLM (Wu et al., 2025, arXiv:2505.22618)
  makes the same one.
- ``block``: later steps recompute only the current block and reuse the keys
  and values of everything else, including targets outside the block (Fast-dLLM's
  dual cache). Cheaper per step, and the stale part is larger.

A model without the ``KeyValueCaching`` capability (a plain function) is
called in full at every step whatever the mode.
"""

from __future__ import annotations

import torch

from diffuspeech.interfaces import KeyValueCache, KeyValueCaching, SamplingRequest, SamplingStats
from diffuspeech.interfaces.sampler import ModelFunction
from diffuspeech_plugins.samplers.targets import TargetSlots

CACHE_MODES = ("none", "condition", "block")


class TargetNetwork:
    """Calls ``model`` for the logits of target slots and counts the calls in ``stats``.

    With ``cfg_scale`` > 0 each call also evaluates every row with the
    condition replaced by the mask id, batched with the conditional rows, and
    returns ``uncond + (cfg_scale + 1) * (cond - uncond)`` (LLaDA's form of
    classifier-free guidance).
    """

    def __init__(
        self,
        model: ModelFunction,
        request: SamplingRequest,
        slots: TargetSlots,
        cache: str,
        cfg_scale: float,
        stats: SamplingStats,
    ) -> None:
        if cache not in CACHE_MODES:
            raise ValueError(f"cache mode {cache!r} is invalid; choices: {', '.join(CACHE_MODES)}")
        self.model = model
        self.request = request
        self.slots = slots
        self.cache_mode = cache if isinstance(model, KeyValueCaching) else "none"
        self.cfg_scale = cfg_scale
        self.stats = stats
        self.cache: KeyValueCache | None = None

        condition = request.condition_mask
        if condition is None:
            condition = request.attention_mask & ~request.target_mask
        self.condition = condition
        self.attention_mask = request.attention_mask
        if cfg_scale > 0:
            self.attention_mask = torch.cat([request.attention_mask, request.attention_mask])

    def logits(self, tokens: torch.Tensor, index: torch.Tensor, refresh: bool) -> torch.Tensor:
        """Return logits (b, k, V) of the slots at ``index`` (b, k) for the current ``tokens`` (b, n).

        ``refresh`` requests a full, exact forward pass that also rebuilds the cache.
        """
        rows = tokens.shape[0]
        if self.cfg_scale > 0:
            unconditional = tokens.masked_fill(self.condition, self.request.mask_id)
            tokens = torch.cat([tokens, unconditional])
            index = torch.cat([index, index])
        positions = self.slots.positions.gather(1, index[:rows]).repeat(tokens.shape[0] // rows, 1)

        logits = self._call(tokens, index, positions, refresh)
        self.stats.network_calls += 1
        self.stats.sequence_evaluations += tokens.shape[0]
        if self.cfg_scale == 0:
            return logits
        conditional, unconditional_logits = logits.chunk(2)
        return unconditional_logits + (self.cfg_scale + 1) * (conditional - unconditional_logits)

    def _call(self, tokens: torch.Tensor, index: torch.Tensor, positions: torch.Tensor, refresh: bool) -> torch.Tensor:
        """Run the network and return logits (rows, k, V) at ``positions`` (rows, k)."""
        vocab = self.slots.allowed.shape[-1]
        if self.cache_mode == "none":
            full = self.model(tokens, self.attention_mask)
            return full.gather(1, positions[..., None].expand(-1, -1, vocab))

        assert isinstance(self.model, KeyValueCaching)
        if refresh or self.cache is None:
            full, self.cache = self.model.forward_with_cache(tokens, self.attention_mask)
            return full.gather(1, positions[..., None].expand(-1, -1, vocab))

        self.stats.cached_calls += 1
        if self.cache_mode == "block":
            return self.model.forward_positions(tokens, self.attention_mask, positions, self.cache)

        # Condition mode: recompute every target slot, then pick the requested ones.
        all_positions = self.slots.positions.repeat(tokens.shape[0] // self.slots.positions.shape[0], 1)
        computed = self.model.forward_positions(tokens, self.attention_mask, all_positions, self.cache)
        return computed.gather(1, index[..., None].expand(-1, -1, vocab))
