"""Generation: fill a task's target spans with the sampler and decode them.

Used by validation, ``diffuspeech ask/transcribe/speak`` and evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from diffuspeech.data.datamodule import collate_layouts
from diffuspeech.interfaces import Backbone, SamplingRequest
from diffuspeech.layouts import TASK_SPANS, build_layout, span_content
from diffuspeech.system import System
from diffuspeech.vocabulary import SPEECH, TEXT


@dataclass
class Generated:
    """Decoded target spans of one request: text per text field, units per speech field."""

    task: str
    texts: dict[str, str] = field(default_factory=dict)
    units: dict[str, torch.Tensor] = field(default_factory=dict)


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


@torch.no_grad()
def generate(
    system: System,
    backbone: Backbone,
    task: str,
    conditions: list[dict[str, list[int]]],
    generator: torch.Generator | None = None,
) -> list[Generated]:
    """Generate the target spans of ``task`` for each condition (vocabulary ids per field)."""
    vocabulary = system.vocabulary
    layouts = []
    for index, condition in enumerate(conditions):
        fields: dict[str, list[int] | None] = dict(condition)
        for name, _, is_target in TASK_SPANS[task]:
            if is_target:
                fields[name] = None
        layouts.append(build_layout(task, fields, vocabulary, system.budgets, item_id=f"request {index}"))
    batch = collate_layouts(layouts, [str(i) for i in range(len(layouts))], vocabulary.pad_id)

    device = next(backbone.parameters()).device
    request = SamplingRequest(
        tokens=batch.tokens.to(device),
        attention_mask=batch.attention_mask.to(device),
        target_mask=batch.target_mask.to(device),
        allowed=allowed_ids(system, batch.modality.to(device)),
        mask_id=vocabulary.mask_id,
        modality=batch.modality.to(device),
    )
    was_training = backbone.training
    backbone.eval()
    try:
        tokens = system.sampler.sample(backbone, request, generator).cpu()
    finally:
        backbone.train(was_training)

    results = []
    for row, layout in zip(tokens, layouts, strict=True):
        result = Generated(task)
        for name, modality, is_target in TASK_SPANS[task]:
            if not is_target:
                continue
            span = layout.spans[name]
            if modality == TEXT:
                ids = vocabulary.ids_to_text_ids(span_content(row, span, vocabulary.eot_id))
                result.texts[name] = system.text_tokenizer.decode(ids)
            else:
                content = torch.tensor(span_content(row, span, vocabulary.eos_id), dtype=torch.long)
                result.units[name] = vocabulary.ids_to_units(content)
        results.append(result)
    return results


def generate_batched(
    system: System,
    backbone: Backbone,
    task: str,
    conditions: list[dict[str, list[int]]],
    batch_size: int,
    seed: int,
) -> list[Generated]:
    """Run ``generate`` in batches with one seeded generator, so results repeat for a seed."""
    generator = torch.Generator(device=next(backbone.parameters()).device).manual_seed(seed)
    results: list[Generated] = []
    for start in range(0, len(conditions), batch_size):
        results += generate(system, backbone, task, conditions[start : start + batch_size], generator)
    return results
