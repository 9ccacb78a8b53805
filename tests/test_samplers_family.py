"""Tests for the sampler family: every plugin, network-call counts, thresholds, end markers and caching."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest
import torch

from diffuspeech.interfaces import KeyValueCache, Sampler, SamplingRequest
from diffuspeech.layouts import Budgets, build_layout
from diffuspeech.registry import get_registry
from diffuspeech.vocabulary import SPEECH, TEXT, Vocabulary
from diffuspeech_plugins.backbones.llada import LLaDABackbone
from diffuspeech_plugins.samplers.ancestral import AncestralSampler
from diffuspeech_plugins.samplers.confidence import ConfidenceSampler
from diffuspeech_plugins.samplers.presets import ParallelDecodingSampler

ModelFunction = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
SAMPLERS = ("confidence", "random_remasking", "semi_ar", "parallel", "ancestral")


@pytest.fixture
def backbone(vocabulary: Vocabulary) -> LLaDABackbone:
    """A 2-layer backbone with random weights over the test vocabulary."""
    torch.manual_seed(0)
    return LLaDABackbone(vocabulary.size, d_model=32, n_layers=2, n_heads=4, mlp_hidden_size=64, init_std=0.1).eval()


def s2s_request(
    vocabulary: Vocabulary, budgets: Budgets, question_lengths: tuple[int, ...] = (3, 5)
) -> SamplingRequest:
    """Right-padded s2s rows (thought 4 + reply 5 targets each) with the span metadata generation gives."""
    layouts = [
        build_layout(
            "s2s",
            {
                "question_units": vocabulary.units_to_ids(torch.arange(length) % vocabulary.num_units).tolist(),
                "thought": None,
                "reply_units": None,
            },
            vocabulary,
            budgets,
        )
        for length in question_lengths
    ]
    length = max(layout.tokens.numel() for layout in layouts)
    rows = len(layouts)
    tokens = torch.full((rows, length), vocabulary.pad_id, dtype=torch.long)
    attention_mask = torch.zeros(rows, length, dtype=torch.bool)
    target_mask = torch.zeros(rows, length, dtype=torch.bool)
    modality = torch.full((rows, length), -1, dtype=torch.long)
    end_id = torch.full((rows, length), -1, dtype=torch.long)
    span_position = torch.full((rows, length), -1, dtype=torch.long)
    for row, layout in enumerate(layouts):
        n = layout.tokens.numel()
        tokens[row, :n] = layout.tokens
        attention_mask[row, :n] = True
        target_mask[row, :n] = layout.target_mask
        modality[row, :n] = layout.modality
        for name, (start, end) in layout.spans.items():
            end_id[row, start:end] = vocabulary.eot_id if name == "thought" else vocabulary.eos_id
            span_position[row, start:end] = torch.arange(end - start)
    table = torch.stack([vocabulary.allowed_ids(TEXT), vocabulary.allowed_ids(SPEECH)])
    allowed = torch.ones(rows, length, vocabulary.size, dtype=torch.bool)
    allowed[target_mask] = table[modality[target_mask]]
    return SamplingRequest(
        tokens,
        attention_mask,
        target_mask,
        allowed,
        vocabulary.mask_id,
        modality,
        end_id=end_id,
        span_position=span_position,
    )


def counting(model: ModelFunction, calls: list[torch.Tensor]) -> ModelFunction:
    """Wrap ``model`` so each call records its input tokens."""

    def wrapped(tokens: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        calls.append(tokens.clone())
        return model(tokens, attention_mask)

    return wrapped


@pytest.mark.parametrize("name", SAMPLERS)
def test_every_sampler_fills_targets(
    name: str, backbone: LLaDABackbone, vocabulary: Vocabulary, budgets: Budgets
) -> None:
    """Each registered sampler fills every target with an allowed id, keeps the rest, and counts its calls."""
    request = s2s_request(vocabulary, budgets)
    sampler = get_registry().get("sampler", name).cls(steps=6, temperature=1.0)
    calls: list[torch.Tensor] = []

    tokens = sampler.sample(counting(backbone, calls), request, torch.Generator().manual_seed(0))

    assert isinstance(sampler, Sampler)
    assert not (tokens[request.target_mask] == vocabulary.mask_id).any()
    picked = request.allowed.gather(-1, tokens[..., None]).squeeze(-1)
    assert bool(picked[request.target_mask].all())
    assert torch.equal(tokens[~request.target_mask], request.tokens[~request.target_mask])
    assert sampler.last_stats is not None
    assert sampler.last_stats.network_calls == len(calls)
    assert sampler.last_stats.sequence_evaluations == 2 * len(calls)


@pytest.mark.parametrize("confidence", ["probability", "margin", "entropy", "random"])
def test_confidence_measures_fill_targets(
    confidence: str, backbone: LLaDABackbone, vocabulary: Vocabulary, budgets: Budgets
) -> None:
    """Every confidence measure completes the request in the step budget."""
    request = s2s_request(vocabulary, budgets)

    tokens = ConfidenceSampler(steps=3, temperature=0.0, confidence=confidence).sample(
        backbone, request, torch.Generator().manual_seed(0)
    )

    assert not (tokens[request.target_mask] == vocabulary.mask_id).any()


def test_measures_rank_differently(backbone: LLaDABackbone, vocabulary: Vocabulary, budgets: Budgets) -> None:
    """Probability and random remasking commit different positions, so their outputs differ."""
    request = s2s_request(vocabulary, budgets)
    outputs = {
        measure: ConfidenceSampler(steps=9, temperature=0.0, confidence=measure).sample(
            backbone, request, torch.Generator().manual_seed(1)
        )
        for measure in ("probability", "random")
    }

    assert not torch.equal(outputs["probability"], outputs["random"])


@pytest.mark.parametrize(("steps", "cfg_scale", "evaluations"), [(3, 0.0, 3 * 2), (9, 0.0, 9 * 2), (4, 1.5, 4 * 4)])
def test_network_calls_counted(
    steps: int, cfg_scale: float, evaluations: int, backbone: LLaDABackbone, vocabulary: Vocabulary, budgets: Budgets
) -> None:
    """One call per step (9 targets a row), and classifier-free guidance evaluates each row twice per call."""
    request = s2s_request(vocabulary, budgets)
    calls: list[torch.Tensor] = []
    sampler = ConfidenceSampler(steps=steps, temperature=0.0, cfg_scale=cfg_scale)

    sampler.sample(counting(backbone, calls), request)

    assert sampler.last_stats is not None
    assert sampler.last_stats.network_calls == steps == len(calls)
    assert sampler.last_stats.sequence_evaluations == evaluations
    assert sampler.last_stats.nfe_per_answer == evaluations / 2
    assert sum(calls[0].shape[0] for _ in calls) == evaluations


def test_guidance_masks_condition(backbone: LLaDABackbone, vocabulary: Vocabulary, budgets: Budgets) -> None:
    """The unconditional rows of a guided call hold the mask id at every condition position."""
    request = s2s_request(vocabulary, budgets)
    condition = request.attention_mask & ~request.target_mask
    calls: list[torch.Tensor] = []

    ConfidenceSampler(steps=2, temperature=0.0, cfg_scale=1.0).sample(counting(backbone, calls), request)

    unconditional = calls[0][2:]
    assert bool((unconditional[condition] == vocabulary.mask_id).all())
    assert torch.equal(calls[0][:2][condition], request.tokens[condition])


def confident_model(vocabulary: Vocabulary) -> ModelFunction:
    """A model sure of one unit id at speech positions and one text id at text positions."""

    def model(tokens: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(*tokens.shape, vocabulary.size)
        logits[..., 3] = 30.0
        logits[..., vocabulary.unit_offset + 2] = 30.0
        return logits

    return model


def test_threshold_commits_confident_at_once(vocabulary: Vocabulary, budgets: Budgets) -> None:
    """When every prediction is confident, threshold decoding finishes in one call per phase."""
    request = s2s_request(vocabulary, budgets)
    sampler = ConfidenceSampler(steps=8, temperature=0.0, threshold=0.9)

    tokens = sampler.sample(confident_model(vocabulary), request)

    assert sampler.last_stats is not None
    assert sampler.last_stats.network_calls == 1
    assert sampler.last_stats.committed == [[9, 9]]
    assert not (tokens[request.target_mask] == vocabulary.mask_id).any()


@pytest.mark.parametrize("threshold", [0.99, 0.5, 0.05])
def test_threshold_commits_at_least_one(
    threshold: float, backbone: LLaDABackbone, vocabulary: Vocabulary, budgets: Budgets
) -> None:
    """Each step commits at least one position in every unfinished row, and never more steps than the budget."""
    request = s2s_request(vocabulary, budgets)
    sampler = ConfidenceSampler(steps=20, temperature=0.0, threshold=threshold)

    sampler.sample(backbone, request)

    assert sampler.last_stats is not None
    remaining = torch.tensor([9, 9])
    for committed in sampler.last_stats.committed:
        step = torch.tensor(committed)
        assert bool((step[remaining > 0] >= 1).all())
        remaining -= step
    assert remaining.tolist() == [0, 0]
    assert sampler.last_stats.steps <= 20


def test_ancestral_skips_unchanged_steps(backbone: LLaDABackbone, vocabulary: Vocabulary, budgets: Budgets) -> None:
    """With many more steps than targets, most steps change nothing and reuse the logits."""
    request = s2s_request(vocabulary, budgets, question_lengths=(4,))
    calls: list[torch.Tensor] = []
    sampler = AncestralSampler(steps=64, temperature=1.0)

    tokens = sampler.sample(counting(backbone, calls), request, torch.Generator().manual_seed(0))

    assert sampler.last_stats is not None
    assert 9 <= sampler.last_stats.steps <= 64
    assert sampler.last_stats.network_calls == len(calls) <= 9
    assert sampler.last_stats.network_calls < sampler.last_stats.steps
    for before, after in itertools.pairwise(calls):
        assert not torch.equal(before, after)
    assert not (tokens[request.target_mask] == vocabulary.mask_id).any()


def test_top_k_one_is_greedy(backbone: LLaDABackbone, vocabulary: Vocabulary, budgets: Budgets) -> None:
    """top_k=1 or a tiny top_p at temperature 1 gives the greedy tokens."""
    request = s2s_request(vocabulary, budgets)
    greedy = ConfidenceSampler(steps=4, temperature=0.0).sample(backbone, request)

    top_k = ConfidenceSampler(steps=4, temperature=1.0, top_k=1).sample(
        backbone, request, torch.Generator().manual_seed(0)
    )
    top_p = ConfidenceSampler(steps=4, temperature=1.0, top_p=1e-6).sample(
        backbone, request, torch.Generator().manual_seed(0)
    )

    assert torch.equal(top_k, greedy)
    assert torch.equal(top_p, greedy)


def ending_model(vocabulary: Vocabulary) -> ModelFunction:
    """A model that prefers the closing markers everywhere, as an undertrained one may."""

    def model(tokens: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(*tokens.shape, vocabulary.size)
        logits[..., vocabulary.eot_id] = 5.0
        logits[..., vocabulary.eos_id] = 5.0
        logits[..., 4] = 1.0
        logits[..., vocabulary.unit_offset + 1] = 1.0
        return logits

    return model


@pytest.mark.parametrize("sampler_class", [ConfidenceSampler, AncestralSampler])
def test_end_suppression_changes_tokens(sampler_class: type, vocabulary: Vocabulary, budgets: Budgets) -> None:
    """min_content keeps closing markers out of each span's first positions, so the chosen tokens change."""
    request = s2s_request(vocabulary, budgets)
    model = ending_model(vocabulary)

    plain = sampler_class(steps=4, temperature=0.0).sample(model, request)
    held = sampler_class(steps=4, temperature=0.0, min_content=2).sample(model, request)

    starts = request.span_position == 0
    second = request.span_position == 1
    ends = torch.tensor([vocabulary.eot_id, vocabulary.eos_id])
    assert bool(torch.isin(plain[starts], ends).all())
    assert not torch.isin(held[starts | second], ends).any()
    assert bool(torch.isin(held[request.span_position >= 2], ends).all())


def test_end_penalty_changes_tokens(vocabulary: Vocabulary, budgets: Budgets) -> None:
    """A penalty larger than the markers' lead lets content win everywhere; it acts before the choice."""
    request = s2s_request(vocabulary, budgets)

    tokens = ConfidenceSampler(steps=4, temperature=0.0, end_penalty=10.0).sample(ending_model(vocabulary), request)

    ends = torch.tensor([vocabulary.eot_id, vocabulary.eos_id])
    assert not torch.isin(tokens[request.target_mask], ends).any()


def test_end_suppression_needs_span_positions(vocabulary: Vocabulary, budgets: Budgets) -> None:
    """Without span metadata from the request, span positions are derived from runs of target positions."""
    request = s2s_request(vocabulary, budgets)
    expected = request.span_position.clone()
    request.span_position = None
    request.end_id = request.end_id

    held = ConfidenceSampler(steps=4, temperature=0.0, min_content=1).sample(ending_model(vocabulary), request)

    ends = torch.tensor([vocabulary.eot_id, vocabulary.eos_id])
    assert not torch.isin(held[expected == 0], ends).any()


class RecordingBackbone(LLaDABackbone):
    """A LLaDA backbone that records the tokens and logits of each full pass that builds a cache."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.refreshes: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.partial_calls = 0

    def forward_with_cache(
        self, tokens: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, KeyValueCache]:
        logits, cache = super().forward_with_cache(tokens, attention_mask)
        self.refreshes.append((tokens.clone(), logits.clone()))
        return logits, cache

    def forward_positions(
        self, tokens: torch.Tensor, attention_mask: torch.Tensor, positions: torch.Tensor, cache: KeyValueCache
    ) -> torch.Tensor:
        self.partial_calls += 1
        return super().forward_positions(tokens, attention_mask, positions, cache)


@pytest.fixture
def recording(vocabulary: Vocabulary) -> RecordingBackbone:
    """The same weights as ``backbone``, recording cache refreshes."""
    torch.manual_seed(0)
    model = RecordingBackbone(vocabulary.size, d_model=32, n_layers=2, n_heads=4, mlp_hidden_size=64, init_std=0.1)
    return model.eval()


@pytest.mark.parametrize("cache", ["condition", "block"])
def test_cache_refresh_is_exact(
    cache: str, recording: RecordingBackbone, vocabulary: Vocabulary, budgets: Budgets
) -> None:
    """Each refresh (first step of a block) gives exactly the plain forward's logits; other steps use the cache."""
    request = s2s_request(vocabulary, budgets)
    sampler = ConfidenceSampler(steps=8, temperature=0.0, block_length=3, cache=cache)

    sampler.sample(recording, request)

    assert sampler.last_stats is not None
    assert len(recording.refreshes) == 3
    assert recording.partial_calls == sampler.last_stats.cached_calls == 8 - 3
    refreshes = list(recording.refreshes)
    for tokens, logits in refreshes:
        assert torch.equal(logits, LLaDABackbone.forward(recording, tokens, request.attention_mask))


@pytest.mark.parametrize("sampler_arguments", [{"block_length": 3}, {"order": "text_first"}, {"threshold": 0.3}])
def test_cache_off_matches_plain_path(
    sampler_arguments: dict[str, object], backbone: LLaDABackbone, vocabulary: Vocabulary, budgets: Budgets
) -> None:
    """cache=none on the backbone, and any cache mode on a model without the capability, equal plain calls."""
    request = s2s_request(vocabulary, budgets)

    def plain(tokens: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return backbone(tokens, attention_mask)

    reference = ConfidenceSampler(steps=6, temperature=0.0, **sampler_arguments).sample(plain, request)  # type: ignore[arg-type]
    off = ConfidenceSampler(steps=6, temperature=0.0, cache="none", **sampler_arguments).sample(backbone, request)  # type: ignore[arg-type]
    fallback = ConfidenceSampler(steps=6, temperature=0.0, cache="block", **sampler_arguments)  # type: ignore[arg-type]

    assert torch.equal(off, reference)
    assert torch.equal(fallback.sample(plain, request), reference)
    assert fallback.last_stats is not None
    assert fallback.last_stats.cached_calls == 0


@pytest.mark.parametrize("n_kv_heads", [None, 2])
def test_positions_match_full_pass(n_kv_heads: int | None, vocabulary: Vocabulary, budgets: Budgets) -> None:
    """With unchanged tokens, recomputing some positions against the cache matches the full pass there."""
    torch.manual_seed(1)
    model = LLaDABackbone(vocabulary.size, d_model=32, n_layers=2, n_heads=4, n_kv_heads=n_kv_heads, init_std=0.1)
    request = s2s_request(vocabulary, budgets)
    positions = torch.stack([request.target_mask[row].nonzero().flatten() for row in range(2)])

    with torch.no_grad():
        full, cache = model.eval().forward_with_cache(request.tokens, request.attention_mask)
        partial = model.forward_positions(request.tokens, request.attention_mask, positions, cache)

    assert torch.equal(full, model(request.tokens, request.attention_mask))
    expected = full.gather(1, positions[..., None].expand(-1, -1, full.shape[-1]))
    torch.testing.assert_close(partial, expected, atol=1e-5, rtol=1e-5)


def test_parallel_preset_uses_cache(recording: RecordingBackbone, vocabulary: Vocabulary, budgets: Budgets) -> None:
    """The parallel preset decodes with the block cache and at most ``steps`` calls."""
    request = s2s_request(vocabulary, budgets)
    sampler = ParallelDecodingSampler(steps=8, threshold=0.5, block_length=4)

    tokens = sampler.sample(recording, request)

    assert sampler.last_stats is not None
    assert sampler.last_stats.network_calls <= 8
    assert len(recording.refreshes) == 3
    assert not (tokens[request.target_mask] == vocabulary.mask_id).any()


def test_stream_yields_each_block(backbone: LLaDABackbone, vocabulary: Vocabulary, budgets: Budgets) -> None:
    """sample_stream yields after each block, finished positions only grow, and the end equals sample."""
    request = s2s_request(vocabulary, budgets)
    sampler = ConfidenceSampler(steps=9, temperature=0.0, block_length=3, order="text_first")

    stream = list(sampler.sample_stream(backbone, request))

    # text_first: thought (4) in blocks 3 + 1, then reply (5) in blocks 3 + 2.
    assert len(stream) == 4
    counts = [int(finished.sum()) for _, finished in stream]
    assert counts == [6, 8, 14, 18]
    for (_, before), (_, after) in itertools.pairwise(stream):
        assert bool((after | ~before).all())
    assert torch.equal(stream[-1][0], sampler.sample(backbone, request))


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"confidence": "loud"}, "confidence 'loud' is invalid"),
        ({"threshold": 1.5}, r"threshold must be in \(0, 1\]"),
        ({"block_length": 0}, "block_length must be at least 1"),
        ({"cache": "all"}, "cache 'all' is invalid; choices: none, condition, block"),
        ({"top_k": 0}, "top_k must be at least 1"),
        ({"top_p": 0.0}, r"top_p must be in \(0, 1\]"),
        ({"cfg_scale": -1.0}, "cfg_scale must be non-negative"),
        ({"min_content": -1}, "min_content must be non-negative"),
        ({"order": "speech_first"}, "order 'speech_first' is invalid"),
    ],
)
def test_invalid_options(arguments: dict[str, object], message: str) -> None:
    """Invalid options raise ValueError naming the value and the accepted range."""
    with pytest.raises(ValueError, match=message):
        ConfidenceSampler(**arguments)  # type: ignore[arg-type]
