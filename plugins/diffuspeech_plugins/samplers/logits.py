"""Logit processing shared by the samplers: noise, filters, end-marker suppression and confidence.

Everything here works in float64: low precision in Gumbel noise is a known
source of degraded samples in masked diffusion models (Zheng et al., 2024,
arXiv:2409.02908), and LLaDA's reference sampler uses float64 for the same reason.
"""

from __future__ import annotations

import torch

CONFIDENCE_MEASURES = ("probability", "margin", "entropy", "random")


def add_gumbel_noise(logits: torch.Tensor, temperature: float, generator: torch.Generator | None) -> torch.Tensor:
    """Return logits perturbed for sampling at ``temperature``, computed in float64.

    Taking the argmax of the result samples from softmax(logits / temperature).
    At temperature 0 the logits come back unperturbed, so the argmax is greedy.
    """
    if temperature == 0:
        return logits.double()
    uniform = torch.rand(logits.shape, generator=generator, dtype=torch.float64, device=logits.device)
    uniform = uniform.clamp_min(torch.finfo(torch.float64).tiny)
    return logits.double() / temperature - torch.log(-torch.log(uniform))


def filter_top_k(logits: torch.Tensor, top_k: int | None) -> torch.Tensor:
    """Set every logit below the ``top_k``-th largest of its row (last dimension) to -inf."""
    if top_k is None or top_k >= logits.shape[-1]:
        return logits
    threshold = logits.topk(top_k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < threshold, float("-inf"))


def filter_top_p(logits: torch.Tensor, top_p: float | None) -> torch.Tensor:
    """Keep the smallest set of ids whose probability reaches ``top_p`` (nucleus sampling); -inf elsewhere.

    The most probable id is always kept.
    """
    if top_p is None or top_p >= 1.0:
        return logits
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    probabilities = torch.softmax(sorted_logits, dim=-1)

    # Drop an id when the ids before it already reach top_p.
    before = probabilities.cumsum(dim=-1) - probabilities
    drop_sorted = before >= top_p
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def suppress_end_markers(
    logits: torch.Tensor,
    end_id: torch.Tensor,
    span_position: torch.Tensor,
    min_content: int,
    end_penalty: float,
) -> torch.Tensor:
    """Hold back closing markers in logits (b, m, V) before any token is chosen.

    ``end_id`` (b, m) is the closing marker of each slot's span (-1 for none)
    and ``span_position`` (b, m) the slot's index in its span. The marker is
    forbidden at the first ``min_content`` positions of every span, and
    ``end_penalty`` is subtracted from its logit everywhere else.
    """
    if min_content <= 0 and end_penalty == 0:
        return logits
    has_end = end_id >= 0
    index = end_id.clamp_min(0)[..., None]
    forbidden = has_end & (span_position < min_content)
    logits = logits.masked_fill(
        torch.zeros_like(logits, dtype=torch.bool).scatter(-1, index, forbidden[..., None]), float("-inf")
    )
    if end_penalty:
        penalty = torch.zeros_like(logits).scatter(-1, index, (has_end * end_penalty)[..., None].to(logits.dtype))
        logits = logits - penalty
    return logits


def confidence_of(
    logits: torch.Tensor, chosen: torch.Tensor, measure: str, generator: torch.Generator | None
) -> torch.Tensor:
    """Return the float64 confidence (b, m) of the ``chosen`` ids (b, m) under logits (b, m, V).

    - ``probability``: the softmax probability of the chosen id (LLaDA's low-confidence remasking);
    - ``margin``: the top probability minus the second one;
    - ``entropy``: the negative entropy of the distribution, in nats;
    - ``random``: uniform noise, which unmasks random positions (LLaDA's random remasking).
    """
    if measure == "random":
        return torch.rand(chosen.shape, generator=generator, dtype=torch.float64, device=chosen.device)
    probabilities = torch.softmax(logits.double(), dim=-1)
    if measure == "probability":
        return probabilities.gather(-1, chosen[..., None]).squeeze(-1)
    if measure == "margin":
        top = probabilities.topk(2, dim=-1).values
        return top[..., 0] - top[..., 1]
    if measure == "entropy":
        log_probabilities = torch.log_softmax(logits.double(), dim=-1)
        terms = torch.where(probabilities > 0, probabilities * log_probabilities, torch.zeros_like(probabilities))
        return terms.sum(dim=-1)
    raise ValueError(f"confidence measure {measure!r} is invalid; choices: {', '.join(CONFIDENCE_MEASURES)}")
