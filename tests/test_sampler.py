"""Tests for the confidence sampler, driven by a small LLaDA backbone with random weights."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from diffuspeech.data.datamodule import collate_layouts
from diffuspeech.interfaces import SamplingRequest
from diffuspeech.layouts import Budgets, build_layout
from diffuspeech.vocabulary import SPEECH, TEXT, Vocabulary
from diffuspeech_plugins.backbones.llada import LLaDABackbone
from diffuspeech_plugins.samplers.confidence import ConfidenceSampler, unmask_counts


@pytest.fixture
def backbone(vocabulary: Vocabulary) -> LLaDABackbone:
    """A 2-layer backbone with random weights over the test vocabulary."""
    torch.manual_seed(0)
    return LLaDABackbone(vocab_size=vocabulary.size, d_model=32, n_layers=2, n_heads=4, mlp_hidden_size=64).eval()


def sampling_request(vocabulary: Vocabulary, budgets: Budgets) -> SamplingRequest:
    """Return an s2s row (9 masked targets) and an asr row (4 masked targets), right-padded."""
    layouts = [
        build_layout(
            "s2s",
            {
                "question_units": vocabulary.units_to_ids(torch.tensor([1, 2, 3])).tolist(),
                "thought": None,
                "reply_units": None,
            },
            vocabulary,
            budgets,
        ),
        build_layout(
            "asr",
            {"question_units": vocabulary.units_to_ids(torch.tensor([4])).tolist(), "transcript": None},
            vocabulary,
            budgets,
        ),
    ]
    length = max(layout.tokens.numel() for layout in layouts)
    tokens = torch.full((2, length), vocabulary.pad_id, dtype=torch.long)
    attention_mask = torch.zeros(2, length, dtype=torch.bool)
    target_mask = torch.zeros(2, length, dtype=torch.bool)
    allowed = torch.ones(2, length, vocabulary.size, dtype=torch.bool)
    for row, layout in enumerate(layouts):
        n = layout.tokens.numel()
        tokens[row, :n] = layout.tokens
        attention_mask[row, :n] = True
        target_mask[row, :n] = layout.target_mask
        for position in layout.target_mask.nonzero().flatten().tolist():
            allowed[row, position] = vocabulary.allowed_ids(int(layout.modality[position]))
    return SamplingRequest(tokens, attention_mask, target_mask, allowed, vocabulary.mask_id)


def chosen_are_allowed(tokens: torch.Tensor, request: SamplingRequest) -> bool:
    """Return True when every target position holds an id that its ``allowed`` row permits."""
    picked = request.allowed.gather(-1, tokens[..., None]).squeeze(-1)
    return bool(picked[request.target_mask].all())


@pytest.mark.parametrize("steps", [1, 3, 9, 50])
def test_all_targets_unmasked(steps: int, backbone: LLaDABackbone, vocabulary: Vocabulary, budgets: Budgets) -> None:
    """After T steps no target is masked, for T of 1, below, equal to and above the masked count."""
    request = sampling_request(vocabulary, budgets)

    tokens = ConfidenceSampler(steps=steps, temperature=1.0).sample(backbone, request, torch.Generator().manual_seed(0))

    assert tokens.shape == request.tokens.shape
    assert not (tokens[request.target_mask] == vocabulary.mask_id).any()
    assert chosen_are_allowed(tokens, request)


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_non_targets_unchanged(
    temperature: float, backbone: LLaDABackbone, vocabulary: Vocabulary, budgets: Budgets
) -> None:
    """Condition tokens, markers and padding come back as they went in."""
    request = sampling_request(vocabulary, budgets)
    original = request.tokens.clone()

    tokens = ConfidenceSampler(steps=4, temperature=temperature).sample(
        backbone, request, torch.Generator().manual_seed(0)
    )

    assert torch.equal(tokens[~request.target_mask], original[~request.target_mask])
    assert torch.equal(request.tokens, original)


@pytest.mark.parametrize("steps", [1, 4, 9])
def test_unmasks_counts_per_step(steps: int, backbone: LLaDABackbone, vocabulary: Vocabulary, budgets: Budgets) -> None:
    """At each model call, the number of masked targets is what unmask_counts leaves after the steps before."""
    request = sampling_request(vocabulary, budgets)
    masked_per_call: list[torch.Tensor] = []

    def model(tokens: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        masked_per_call.append((request.target_mask & (tokens == vocabulary.mask_id)).sum(dim=1))
        return backbone(tokens, attention_mask)

    ConfidenceSampler(steps=steps, temperature=1.0).sample(model, request, torch.Generator().manual_seed(0))

    num_masked = torch.tensor([9, 4])
    counts = unmask_counts(num_masked, steps)
    assert len(masked_per_call) == steps
    for step, seen in enumerate(masked_per_call):
        assert seen.tolist() == (num_masked - counts[:, :step].sum(dim=1)).tolist()


def test_stops_when_all_unmasked(backbone: LLaDABackbone, vocabulary: Vocabulary, budgets: Budgets) -> None:
    """With more steps than masked positions, the model is called once per masked position of the longest row."""
    request = sampling_request(vocabulary, budgets)
    calls = []

    def model(tokens: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        return backbone(tokens, attention_mask)

    ConfidenceSampler(steps=50, temperature=1.0).sample(model, request, torch.Generator().manual_seed(0))

    assert len(calls) == 9


@pytest.mark.parametrize(("num_masked", "steps"), [([9, 4], 4), ([9, 4], 1), ([3, 0], 8), ([512, 17], 64)])
def test_unmask_counts_linear(num_masked: list[int], steps: int) -> None:
    """Counts sum to the masked count, never rise, and differ by at most one between steps."""
    counts = unmask_counts(torch.tensor(num_masked), steps)

    assert counts.shape == (len(num_masked), steps)
    assert counts.sum(dim=1).tolist() == num_masked
    assert bool((counts.diff(dim=1) <= 0).all())
    assert bool(((counts.max(dim=1).values - counts.min(dim=1).values) <= 1).all())


def test_same_seed_same_output(backbone: LLaDABackbone, vocabulary: Vocabulary, budgets: Budgets) -> None:
    """At temperature 1, two runs with the same seed give the same tokens."""
    request = sampling_request(vocabulary, budgets)
    sampler = ConfidenceSampler(steps=4, temperature=1.0)

    first = sampler.sample(backbone, request, torch.Generator().manual_seed(7))
    second = sampler.sample(backbone, request, torch.Generator().manual_seed(7))

    assert torch.equal(first, second)


def test_seeds_can_differ(backbone: LLaDABackbone, vocabulary: Vocabulary, budgets: Budgets) -> None:
    """At temperature 1, different seeds give different tokens."""
    request = sampling_request(vocabulary, budgets)
    sampler = ConfidenceSampler(steps=4, temperature=1.0)

    outputs = {
        tuple(sampler.sample(backbone, request, torch.Generator().manual_seed(seed)).flatten().tolist())
        for seed in range(4)
    }

    assert len(outputs) > 1


def test_greedy_ignores_generator(backbone: LLaDABackbone, vocabulary: Vocabulary, budgets: Budgets) -> None:
    """At temperature 0 the choice is greedy, so seeds do not matter."""
    request = sampling_request(vocabulary, budgets)
    sampler = ConfidenceSampler(steps=4, temperature=0.0)

    first = sampler.sample(backbone, request, torch.Generator().manual_seed(0))
    second = sampler.sample(backbone, request, torch.Generator().manual_seed(1))

    assert torch.equal(first, second)


@pytest.mark.parametrize("temperature", [0.0, 1.0, 5.0])
def test_disallowed_never_chosen(
    temperature: float, backbone: LLaDABackbone, vocabulary: Vocabulary, budgets: Budgets
) -> None:
    """Ids outside ``allowed`` are never chosen, even when the model strongly prefers one."""
    request = sampling_request(vocabulary, budgets)
    generator = torch.Generator().manual_seed(0)

    # Allow three random non-mask ids per position, and make the model favor id 0 when it is not allowed.
    scores = torch.rand(request.allowed.shape, generator=generator)
    scores[..., vocabulary.mask_id] = -1.0
    scores[..., 0] = -1.0
    allowed = torch.zeros_like(request.allowed)
    allowed.scatter_(-1, scores.topk(3, dim=-1).indices, True)
    request.allowed = allowed

    def model(tokens: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        logits = backbone(tokens, attention_mask)
        logits[..., 0] += 100.0
        return logits

    tokens = ConfidenceSampler(steps=5, temperature=temperature).sample(model, request, generator)

    assert chosen_are_allowed(tokens, request)
    assert not (tokens[request.target_mask] == 0).any()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [({"steps": 0}, "steps must be at least 1, got 0"), ({"temperature": -0.5}, "temperature must be non-negative")],
)
def test_invalid_settings(arguments: dict[str, Any], message: str) -> None:
    """A step count below 1 or a negative temperature raises ValueError."""
    with pytest.raises(ValueError, match=message):
        ConfidenceSampler(**arguments)


@pytest.mark.parametrize("task", ["s2t", "tts", "s2s"])
def test_text_first_unmasks_every_task(task: str) -> None:
    """text_first completes batches with text targets only, speech targets only, or both."""
    vocabulary = Vocabulary(text_size=12, num_units=8)
    budgets = Budgets(transcript=4, thought=4, answer=3, reply_units=5)
    fields: dict[str, list[int] | None] = {
        "question_units": vocabulary.units_to_ids(torch.tensor([1, 2, 3])).tolist(),
        "transcript": [1, 2],
        "thought": None,
        "answer": None,
        "reply_units": None,
    }
    layout = build_layout(task, fields, vocabulary, budgets)
    batch = collate_layouts([layout, layout], ["a", "b"], vocabulary.pad_id)
    torch.manual_seed(0)
    model = LLaDABackbone(vocabulary.size, d_model=32, n_layers=1, n_heads=2, mlp_hidden_size=64).eval()
    table = torch.stack(
        [vocabulary.allowed_ids(TEXT), vocabulary.allowed_ids(SPEECH), torch.ones(vocabulary.size, dtype=torch.bool)]
    )
    allowed = table[torch.where(batch.modality < 0, torch.full_like(batch.modality, 2), batch.modality)]
    request = SamplingRequest(
        batch.tokens, batch.attention_mask, batch.target_mask, allowed, vocabulary.mask_id, batch.modality
    )

    tokens = ConfidenceSampler(steps=4, temperature=0.0, order="text_first").sample(model, request)

    assert not (tokens == vocabulary.mask_id).any()
    assert torch.equal(tokens[~batch.target_mask], batch.tokens[~batch.target_mask])
