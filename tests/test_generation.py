"""Tests for generation: request metadata, padded batches against single items, and streaming."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from diffuspeech.generation import build_request, generate, generate_stream
from diffuspeech.recipe import load_recipe
from diffuspeech.system import System, build_backbone, compose

SENTENCES = [
    "what is three plus four",
    "three plus four is seven",
    "seven",
    "what do you get when you add two and five",
    "two plus five is seven",
    "nine minus one is eight",
]


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> System:
    """The tiny recipe with a small fitted text tokenizer, 16 speech units and short budgets."""
    recipe = load_recipe(
        "tiny",
        [
            "text_tokenizer.args.vocab_size=40",
            "speech_tokenizer.args.num_units=16",
            "layout.thought=6",
            "layout.answer=3",
            "layout.reply_units=7",
            "layout.transcript=6",
            "backbone.args.d_model=32",
            "backbone.args.n_layers=2",
            "backbone.args.n_heads=4",
            "backbone.args.mlp_hidden_size=64",
            "sampler.args.steps=6",
        ],
    )
    composed = compose(recipe)
    composed.text_tokenizer.fit(SENTENCES, Path(tmp_path_factory.mktemp("tokenizer")))
    return composed


def conditions(system: System) -> list[dict[str, list[int]]]:
    """Three spoken questions of different lengths, so the batch is padded."""
    vocabulary = system.vocabulary
    return [{"question_units": vocabulary.units_to_ids(torch.arange(length) % 16).tolist()} for length in (3, 9, 5)]


def test_request_metadata(system: System) -> None:
    """Targets get their closing marker and span index; guidance hides only condition content."""
    vocabulary = system.vocabulary
    request, layouts = build_request(system, "s2s", conditions(system), torch.device("cpu"))

    start, end = layouts[0].spans["thought"]
    assert request.end_id is not None and request.span_position is not None
    assert request.end_id[0, start:end].tolist() == [vocabulary.eot_id] * 6
    assert request.span_position[0, start:end].tolist() == list(range(6))
    start, end = layouts[0].spans["reply_units"]
    assert request.end_id[0, start:end].tolist() == [vocabulary.eos_id] * 7
    assert request.condition_mask is not None
    assert request.condition_mask[0].sum() == 3
    assert not request.condition_mask[0, 0]


@pytest.mark.parametrize(
    "sampler_overrides",
    [
        {},
        {"block_length": 3, "threshold": 0.5, "cache": "block"},
        {"cache": "condition", "order": "joint"},
    ],
)
@pytest.mark.parametrize("task", ["s2s", "s2t"])
def test_padded_batch_matches_single_items(system: System, task: str, sampler_overrides: dict[str, object]) -> None:
    """A padded batch gives each item the answer it gets alone, with and without caching."""
    torch.manual_seed(0)
    backbone = build_backbone(system.recipe, system.vocabulary)
    for name, value in sampler_overrides.items():
        setattr(system.sampler, name, value)
    items = conditions(system)
    try:
        batched = generate(system, backbone, task, items)
        alone = [generate(system, backbone, task, [item])[0] for item in items]
    finally:
        system.sampler.block_length = None  # type: ignore[attr-defined]
        system.sampler.threshold = None  # type: ignore[attr-defined]
        system.sampler.cache = "none"  # type: ignore[attr-defined]
        system.sampler.order = "text_first"  # type: ignore[attr-defined]

    for together, single in zip(batched, alone, strict=True):
        assert together.texts == single.texts
        for name in together.units:
            assert torch.equal(together.units[name], single.units[name])


def test_stream_ends_with_generate(system: System) -> None:
    """Streaming yields one partial result per block, prefixes only grow, and the last equals generate."""
    torch.manual_seed(0)
    backbone = build_backbone(system.recipe, system.vocabulary)
    system.sampler.block_length = 3  # type: ignore[attr-defined]
    try:
        stream = [results[0] for results in generate_stream(system, backbone, "s2s", conditions(system)[:1])]
        final = generate(system, backbone, "s2s", conditions(system)[:1])[0]
    finally:
        system.sampler.block_length = None  # type: ignore[attr-defined]

    # text_first with blocks of 3: the thought (6) in 2 blocks, then the reply (7) in 3.
    assert len(stream) == 5
    assert not stream[0].complete["reply_units"]
    lengths = [result.units["reply_units"].numel() for result in stream]
    assert lengths == sorted(lengths)
    assert stream[-1].texts == final.texts
    assert torch.equal(stream[-1].units["reply_units"], final.units["reply_units"])
    assert stream[-1].complete == {"thought": True, "reply_units": True}
