"""Tests for the task layouts: token sequences, budgets and span decoding.

Ids come from the ``vocabulary`` fixture. Text ids are 0-11. The task tokens
are asr 12, tts 13, s2t 14, s2s 15 and t2t 16. The markers are sos 17, eos 18,
sot 19 and eot 20, then mask 21 and pad 22. Speech unit u has id 23 + u.
"""

from __future__ import annotations

import pytest
import torch

from diffuspeech.layouts import Budgets, build_layout, span_content
from diffuspeech.vocabulary import SPEECH, TEXT, Vocabulary

ASR, TTS, S2T, S2S, T2T = 12, 13, 14, 15, 16
SOS, EOS, SOT, EOT, MASK = 17, 18, 19, 20, 21


def unit(index: int) -> int:
    """Return the vocabulary id of speech unit ``index``."""
    return 23 + index


# Each case: task, fields, expected tokens, and one character per position:
# "-" condition, "t" text target, "s" speech target.
LAYOUT_CASES = [
    (
        "asr",
        {"question_units": [unit(1), unit(2)], "transcript": [3, 4, 5]},
        [ASR, SOS, unit(1), unit(2), EOS, SOT, 3, 4, 5, EOT],
        "------tttt",
    ),
    (
        "tts",
        {"transcript": [3, 4], "reply_units": [unit(0), unit(1)]},
        [TTS, SOT, 3, 4, EOT, SOS, unit(0), unit(1), EOS, EOS, EOS],
        "------sssss",
    ),
    (
        "s2t",
        {"question_units": [unit(3)], "thought": [1, 2, 3], "answer": [7]},
        [S2T, SOS, unit(3), EOS, SOT, 1, 2, 3, EOT, SOT, 7, EOT, EOT],
        "-----tttt-ttt",
    ),
    (
        "s2s",
        {"question_units": [unit(1), unit(2), unit(3)], "thought": [5, 6], "reply_units": [unit(0), unit(7)]},
        [S2S, SOS, unit(1), unit(2), unit(3), EOS, SOT, 5, 6, EOT, EOT, SOS, unit(0), unit(7), EOS, EOS, EOS],
        "-------tttt-sssss",
    ),
    (
        "t2t",
        {"question": [8, 9], "thought": [1], "answer": [2, 3]},
        [T2T, SOT, 8, 9, EOT, SOT, 1, EOT, EOT, EOT, SOT, 2, 3, EOT],
        "------tttt-ttt",
    ),
]


@pytest.mark.parametrize(("task", "fields", "expected", "roles"), LAYOUT_CASES, ids=[c[0] for c in LAYOUT_CASES])
def test_layout_tokens(
    task: str,
    fields: dict[str, list[int] | None],
    expected: list[int],
    roles: str,
    vocabulary: Vocabulary,
    budgets: Budgets,
) -> None:
    """Each task lays out as the sequence written by hand, with targets and modalities marked."""
    layout = build_layout(task, fields, vocabulary, budgets)

    assert layout.task == task
    assert layout.tokens.tolist() == expected
    assert layout.tokens.dtype == torch.long
    assert layout.target_mask.tolist() == [role != "-" for role in roles]
    assert layout.modality.tolist() == [{"-": -1, "t": TEXT, "s": SPEECH}[role] for role in roles]


def test_layout_spans(vocabulary: Vocabulary, budgets: Budgets) -> None:
    """Spans give each target field's (start, end) positions, which cover its budget."""
    fields = LAYOUT_CASES[3][1]

    layout = build_layout("s2s", fields, vocabulary, budgets)

    assert layout.spans == {"thought": (7, 11), "reply_units": (12, 17)}


def test_sampling_layout_masks_targets(vocabulary: Vocabulary, budgets: Budgets) -> None:
    """A target field given as None fills its whole budget with mask tokens."""
    layout = build_layout(
        "s2s", {"question_units": [unit(4)], "thought": None, "reply_units": None}, vocabulary, budgets
    )

    assert layout.tokens.tolist() == [S2S, SOS, unit(4), EOS, SOT, *[MASK] * 4, SOS, *[MASK] * 5]
    assert layout.target_mask.tolist() == [False] * 5 + [True] * 4 + [False] + [True] * 5


def test_empty_target_is_all_closers(vocabulary: Vocabulary, budgets: Budgets) -> None:
    """An empty target content becomes closing markers only."""
    layout = build_layout("asr", {"question_units": [unit(0)], "transcript": []}, vocabulary, budgets)

    assert layout.tokens.tolist() == [ASR, SOS, unit(0), EOS, SOT, EOT, EOT, EOT, EOT]


def test_content_filling_budget_fits(vocabulary: Vocabulary, budgets: Budgets) -> None:
    """Content of budget - 1 tokens fits, leaving one closing marker."""
    layout = build_layout("asr", {"question_units": [unit(0)], "transcript": [1, 2, 3]}, vocabulary, budgets)

    assert layout.tokens.tolist()[-4:] == [1, 2, 3, EOT]


@pytest.mark.parametrize(
    ("task", "fields", "field_name"),
    [
        ("asr", {"question_units": [unit(0)], "transcript": [1, 2, 3, 4]}, "transcript"),
        ("s2s", {"question_units": [unit(0)], "thought": [1, 2, 3, 4, 5], "reply_units": []}, "thought"),
        ("s2s", {"question_units": [unit(0)], "thought": [], "reply_units": [unit(0)] * 5}, "reply_units"),
        ("t2t", {"question": [1], "thought": [2], "answer": [3, 4, 5]}, "answer"),
    ],
)
def test_budget_overflow_names_field(
    task: str, fields: dict[str, list[int] | None], field_name: str, vocabulary: Vocabulary, budgets: Budgets
) -> None:
    """Content longer than its budget raises, naming the item, the field and the recipe key."""
    with pytest.raises(ValueError, match=rf"item row-7: {field_name} has \d+ tokens") as info:
        build_layout(task, fields, vocabulary, budgets, item_id="row-7")

    assert f"layout.{field_name}" in str(info.value)


def test_missing_condition_field(vocabulary: Vocabulary, budgets: Budgets) -> None:
    """A condition field that is absent or None raises, naming the field."""
    with pytest.raises(ValueError, match="task tts needs the condition field 'transcript'"):
        build_layout("tts", {"reply_units": None}, vocabulary, budgets, item_id="a")


def test_unknown_task(vocabulary: Vocabulary, budgets: Budgets) -> None:
    """An unknown task raises and lists the choices."""
    with pytest.raises(ValueError, match="unknown task 'asr2'; choices: asr, tts, s2t, s2s, t2t"):
        build_layout("asr2", {}, vocabulary, budgets)


def test_span_content_decodes_layout(vocabulary: Vocabulary, budgets: Budgets) -> None:
    """span_content recovers each target's content from a laid-out sequence."""
    fields = LAYOUT_CASES[3][1]
    layout = build_layout("s2s", fields, vocabulary, budgets)

    assert span_content(layout.tokens, layout.spans["thought"], vocabulary.eot_id) == [5, 6]
    assert span_content(layout.tokens, layout.spans["reply_units"], vocabulary.eos_id) == [unit(0), unit(7)]


@pytest.mark.parametrize(
    ("span_tokens", "expected"),
    [
        ([4, 5, EOT, 6, EOT], [4, 5]),
        ([EOT, 4, 5, 6, 7], []),
        ([4, 5, 6, 7, 8], [4, 5, 6, 7, 8]),
    ],
)
def test_span_content_stops_at_closer(span_tokens: list[int], expected: list[int]) -> None:
    """Decoding keeps the ids before the first closer, or the whole span when there is none."""
    tokens = torch.tensor([T2T, SOT, *span_tokens, SOT])

    assert span_content(tokens, (2, 7), EOT) == expected
