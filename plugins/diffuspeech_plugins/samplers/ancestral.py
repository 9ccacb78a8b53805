"""MDLM's ancestral sampler, which skips the network when no token changed."""

from __future__ import annotations

import torch

from diffuspeech.interfaces import Sampler, SamplingRequest, SamplingStats
from diffuspeech.interfaces.sampler import ModelFunction
from diffuspeech_plugins.samplers.confidence import check_common_options, split_phases
from diffuspeech_plugins.samplers.logits import add_gumbel_noise, filter_top_k, filter_top_p, suppress_end_markers
from diffuspeech_plugins.samplers.network import TargetNetwork
from diffuspeech_plugins.samplers.targets import TargetSlots


class AncestralSampler(Sampler):
    """Ancestral sampling of the reverse process under the linear schedule (MDLM, Sahoo et al., 2024).

    Going from time t to s = t - 1/T, each masked position is unmasked with
    probability (t - s) / t, which is 1 / (steps left), to a token drawn from
    the model's prediction. Unmasked tokens stay. When no position changed in
    a step the input is the same, so the next step reuses the logits instead
    of calling the network: ``last_stats.network_calls`` is often below
    ``steps``. The unmasking draws and the token noise are float64. Supports
    ``temperature``, ``top_k``, ``top_p``, ``cfg_scale``, ``order`` and
    ``min_content`` as ``ConfidenceSampler`` does; not blocks or caching.
    """

    description = "MDLM ancestral sampling; skips the network call when nothing changed"

    def __init__(
        self,
        steps: int = 32,
        temperature: float = 1.0,
        order: str = "joint",
        top_k: int | None = None,
        top_p: float | None = None,
        cfg_scale: float = 0.0,
        min_content: int = 0,
    ) -> None:
        check_common_options(steps, temperature, order, top_k, top_p, cfg_scale)
        if min_content < 0:
            raise ValueError(f"min_content must be non-negative, got {min_content}")
        self.steps = steps
        self.temperature = temperature
        self.order = order
        self.top_k = top_k
        self.top_p = top_p
        self.cfg_scale = cfg_scale
        self.min_content = min_content

    @torch.no_grad()
    def sample(
        self,
        model: ModelFunction,
        request: SamplingRequest,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        if self.order == "text_first" and request.modality is None:
            raise ValueError("order text_first needs SamplingRequest.modality")
        slots = TargetSlots.from_request(request)
        tokens = request.tokens.clone()
        stats = SamplingStats(batch_size=tokens.shape[0])
        self.last_stats = stats
        network = TargetNetwork(model, request, slots, "none", self.cfg_scale, stats)
        masked = slots.valid & (tokens.gather(1, slots.positions) == request.mask_id)
        every_slot = torch.arange(slots.positions.shape[1], device=tokens.device).expand_as(slots.positions)

        logits: torch.Tensor | None = None
        for members, phase_steps in split_phases(slots, masked, self.order, self.steps):
            phase_masked = members.clone()
            for step in range(phase_steps):
                if not phase_masked.any():
                    break
                if logits is None:
                    logits = self._processed(network.logits(tokens, every_slot, refresh=True), slots)
                chosen = add_gumbel_noise(logits, self.temperature, generator).argmax(dim=-1)

                # The last step unmasks everything left, because its probability is 1.
                draw = torch.rand(phase_masked.shape, generator=generator, dtype=torch.float64, device=tokens.device)
                commit = phase_masked & (draw < 1.0 / (phase_steps - step))
                tokens = tokens.scatter(
                    1, slots.positions, torch.where(commit, chosen, tokens.gather(1, slots.positions))
                )
                phase_masked &= ~commit
                stats.steps += 1
                stats.committed.append(commit.sum(dim=1).tolist())
                if commit.any():
                    logits = None
        return tokens

    def _processed(self, logits: torch.Tensor, slots: TargetSlots) -> torch.Tensor:
        """Return float64 logits (b, m, V) restricted to allowed ids, end markers held back, then filtered."""
        logits = logits.double().masked_fill(~slots.allowed, float("-inf"))
        logits = suppress_end_markers(logits, slots.end_id, slots.span_position, self.min_content, 0.0)
        return filter_top_p(filter_top_k(logits, self.top_k), self.top_p)
