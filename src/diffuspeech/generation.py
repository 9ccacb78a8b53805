"""Generation: fill a task's target spans with the sampler and decode them.

Used by validation, ``diffuspeech ask/transcribe/speak``, evaluation and the
benchmarks. ``generate_stream`` yields partial results as a block-wise sampler
finishes blocks, for streaming speech.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from diffuspeech.data.datamodule import collate_layouts
from diffuspeech.interfaces import Backbone, SamplingRequest, SamplingStats
from diffuspeech.layouts import TASK_SPANS, Layout, build_layout, span_content
from diffuspeech.system import System
from diffuspeech.vocabulary import SPEECH, TEXT


@dataclass
class Generated:
    """Decoded target spans of one request: text per text field, units per speech field.

    ``complete`` records per field whether the span is final; it is False only
    for the partial results of ``generate_stream``, whose spans then hold
    the finished prefix up to the first position still being denoised.
    """

    task: str
    texts: dict[str, str] = field(default_factory=dict)
    units: dict[str, torch.Tensor] = field(default_factory=dict)
    complete: dict[str, bool] = field(default_factory=dict)


def allowed_ids(system: System, modality: torch.Tensor) -> torch.Tensor:
    """Return (b, n, V) allowed ids for per-position modality codes (b, n)."""
    vocabulary = system.vocabulary
    table = torch.stack(
        [
            vocabulary.allowed_ids(TEXT),
            vocabulary.allowed_ids(SPEECH),
            torch.ones(vocabulary.size, dtype=torch.bool),
        ]
    ).to(modality.device)
    index = torch.where(modality < 0, torch.full_like(modality, 2), modality)
    return table[index]


def build_request(
    system: System, task: str, conditions: list[dict[str, list[int]]], device: torch.device
) -> tuple[SamplingRequest, list[Layout]]:
    """Lay out ``conditions`` with masked targets and return the sampling request and the layouts."""
    vocabulary = system.vocabulary
    layouts = []
    for index, condition in enumerate(conditions):
        fields: dict[str, list[int] | None] = dict(condition)
        for name, _, is_target in TASK_SPANS[task]:
            if is_target:
                fields[name] = None
        layouts.append(build_layout(task, fields, vocabulary, system.budgets, item_id=f"request {index}"))
    batch = collate_layouts(layouts, [str(i) for i in range(len(layouts))], vocabulary.pad_id)

    # Span metadata for samplers: the closing marker of each target position and its index in the span.
    end_id = torch.full_like(batch.tokens, -1)
    end_id[batch.modality == TEXT] = vocabulary.eot_id
    end_id[batch.modality == SPEECH] = vocabulary.eos_id
    span_position = torch.full_like(batch.tokens, -1)
    for row, layout in enumerate(layouts):
        for start, end in layout.spans.values():
            span_position[row, start:end] = torch.arange(end - start)

    # Classifier-free guidance hides the condition's content, keeping the task token and span markers.
    special = (batch.tokens >= vocabulary.text_size) & (batch.tokens < vocabulary.unit_offset)
    condition_mask = batch.attention_mask & ~batch.target_mask & ~special

    request = SamplingRequest(
        tokens=batch.tokens.to(device),
        attention_mask=batch.attention_mask.to(device),
        target_mask=batch.target_mask.to(device),
        allowed=allowed_ids(system, batch.modality.to(device)),
        mask_id=vocabulary.mask_id,
        modality=batch.modality.to(device),
        condition_mask=condition_mask.to(device),
        end_id=end_id.to(device),
        span_position=span_position.to(device),
    )
    return request, layouts


def decode(
    system: System, task: str, tokens: torch.Tensor, layouts: list[Layout], finished: torch.Tensor | None = None
) -> list[Generated]:
    """Decode each row's target spans; with ``finished`` (b, n), only up to the first unfinished position."""
    vocabulary = system.vocabulary
    results = []
    for row, layout in enumerate(layouts):
        result = Generated(task)
        for name, modality, is_target in TASK_SPANS[task]:
            if not is_target:
                continue
            start, end = layout.spans[name]
            closer = vocabulary.eot_id if modality == TEXT else vocabulary.eos_id
            if finished is not None:
                done = finished[row, start:end].tolist()
                prefix = done.index(False) if False in done else len(done)
                content = tokens[row, start : start + prefix].tolist()
                result.complete[name] = prefix == len(done) or closer in content
                content = content[: content.index(closer)] if closer in content else content
            else:
                content = span_content(tokens[row], (start, end), closer)
                result.complete[name] = True
            if modality == TEXT:
                result.texts[name] = system.text_tokenizer.decode(vocabulary.ids_to_text_ids(content))
            else:
                result.units[name] = vocabulary.ids_to_units(torch.tensor(content, dtype=torch.long))
        results.append(result)
    return results


@torch.no_grad()
def generate(
    system: System,
    backbone: Backbone,
    task: str,
    conditions: list[dict[str, list[int]]],
    generator: torch.Generator | None = None,
) -> list[Generated]:
    """Generate the target spans of ``task`` for each condition (vocabulary ids per field)."""
    request, layouts = build_request(system, task, conditions, next(backbone.parameters()).device)
    was_training = backbone.training
    backbone.eval()
    try:
        tokens = system.sampler.sample(backbone, request, generator).cpu()
    finally:
        backbone.train(was_training)
    return decode(system, task, tokens, layouts)


@torch.no_grad()
def generate_stream(
    system: System,
    backbone: Backbone,
    task: str,
    conditions: list[dict[str, list[int]]],
    generator: torch.Generator | None = None,
) -> Iterator[list[Generated]]:
    """Yield partial results each time the sampler finishes a block; the last one is complete.

    How often results come depends on the sampler: one that decodes in blocks
    (``block_length``) yields after each block, others once at the end.
    """
    request, layouts = build_request(system, task, conditions, next(backbone.parameters()).device)
    was_training = backbone.training
    backbone.eval()
    try:
        for tokens, finished in system.sampler.sample_stream(backbone, request, generator):
            yield decode(system, task, tokens.cpu(), layouts, finished.cpu())
    finally:
        backbone.train(was_training)


def generate_batched(
    system: System,
    backbone: Backbone,
    task: str,
    conditions: list[dict[str, list[int]]],
    batch_size: int,
    seed: int,
    stats: list[SamplingStats] | None = None,
) -> list[Generated]:
    """Run ``generate`` in batches with one seeded generator, so results repeat for a seed.

    When ``stats`` is a list, the sampler's ``last_stats`` of each batch is appended to it.
    """
    generator = torch.Generator(device=next(backbone.parameters()).device).manual_seed(seed)
    results: list[Generated] = []
    for start in range(0, len(conditions), batch_size):
        results += generate(system, backbone, task, conditions[start : start + batch_size], generator)
        if stats is not None and system.sampler.last_stats is not None:
            stats.append(system.sampler.last_stats)
    return results
