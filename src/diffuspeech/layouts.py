"""Sequence layouts of each task.

A layout is a task token followed by spans. Every span opens with a marker
(``<|sot|>`` for text, ``<|sos|>`` for speech). A condition span contains its
content and its closing marker. A target span has a fixed budget of positions:
its content, then the closing marker repeated to fill the budget, so the
model learns where the content ends. Markers and the task token are part of
the condition and are never masked. Speech-to-speech QA::

    [task_s2s, <|sos|>, user units, <|eos|>,
     <|sot|>, thought text, <|eot|> ..., <|sos|>, reply units, <|eos|> ...]
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from diffuspeech.vocabulary import SPEECH, TEXT, Vocabulary

# The spans of each task, in order: (field name, modality, is_target).
TASK_SPANS: dict[str, tuple[tuple[str, int, bool], ...]] = {
    "asr": (("question_units", SPEECH, False), ("transcript", TEXT, True)),
    "tts": (("transcript", TEXT, False), ("reply_units", SPEECH, True)),
    "s2t": (("question_units", SPEECH, False), ("thought", TEXT, True), ("answer", TEXT, True)),
    "s2s": (("question_units", SPEECH, False), ("thought", TEXT, True), ("reply_units", SPEECH, True)),
    "t2t": (("question", TEXT, False), ("thought", TEXT, True), ("answer", TEXT, True)),
}


@dataclass(frozen=True)
class Budgets:
    """Number of positions of each target span, closing markers included."""

    transcript: int = 24
    thought: int = 24
    answer: int = 8
    reply_units: int = 96

    def of(self, field_name: str) -> int:
        """Return the budget of target span ``field_name``."""
        return int(getattr(self, field_name))


@dataclass
class Layout:
    """One laid-out sequence.

    ``tokens``, ``target_mask`` and ``modality`` have shape (length,).
    ``modality`` is TEXT or SPEECH at target positions and -1 elsewhere.
    ``spans`` maps each target field to its (start, end) positions.
    """

    task: str
    tokens: torch.Tensor
    target_mask: torch.Tensor
    modality: torch.Tensor
    spans: dict[str, tuple[int, int]] = field(default_factory=dict)


def build_layout(
    task: str,
    fields: dict[str, list[int] | None],
    vocabulary: Vocabulary,
    budgets: Budgets,
    item_id: str = "?",
) -> Layout:
    """Lay out one example of ``task``.

    ``fields`` maps span names to vocabulary ids (speech already offset). A
    target field may be None, which fills its span with mask tokens for
    sampling. Raises ``ValueError`` naming the item and field when a target's
    content does not fit its budget.
    """
    if task not in TASK_SPANS:
        raise ValueError(f"unknown task {task!r}; choices: {', '.join(TASK_SPANS)}")

    tokens = [vocabulary.task_id(task)]
    target = [False]
    modality = [-1]
    spans: dict[str, tuple[int, int]] = {}

    for name, span_modality, is_target in TASK_SPANS[task]:
        opener, closer = (
            (vocabulary.sot_id, vocabulary.eot_id) if span_modality == TEXT else (vocabulary.sos_id, vocabulary.eos_id)
        )
        content = fields.get(name)
        tokens.append(opener)
        target.append(False)
        modality.append(-1)

        if not is_target:
            if content is None:
                raise ValueError(f"item {item_id}: task {task} needs the condition field {name!r}")
            tokens += [*content, closer]
            target += [False] * (len(content) + 1)
            modality += [-1] * (len(content) + 1)
            continue

        budget = budgets.of(name)
        if content is None:
            body = [vocabulary.mask_id] * budget
        else:
            if len(content) + 1 > budget:
                raise ValueError(
                    f"item {item_id}: {name} has {len(content)} tokens but its budget is {budget} "
                    f"including the closing marker; raise layout.{name} in the recipe to at least "
                    f"{len(content) + 1}"
                )
            body = [*content] + [closer] * (budget - len(content))
        spans[name] = (len(tokens), len(tokens) + budget)
        tokens += body
        target += [True] * budget
        modality += [span_modality] * budget

    return Layout(
        task=task,
        tokens=torch.tensor(tokens, dtype=torch.long),
        target_mask=torch.tensor(target, dtype=torch.bool),
        modality=torch.tensor(modality, dtype=torch.long),
        spans=spans,
    )


def span_content(tokens: torch.Tensor, span: tuple[int, int], closer: int) -> list[int]:
    """Return the ids of a decoded target span up to its first closing marker."""
    ids = tokens[span[0] : span[1]].tolist()
    return ids[: ids.index(closer)] if closer in ids else ids
