"""Tests for the unified vocabulary: id ranges, special tokens and allowed ids."""

from __future__ import annotations

import pytest
import torch

from diffuspeech.vocabulary import SPAN_MARKERS, SPEECH, TASKS, TEXT, Vocabulary

VOCABULARIES = {
    "own mask and pad": Vocabulary(text_size=12, num_units=8),
    "text mask and pad": Vocabulary(text_size=12, num_units=8, text_mask_id=10, text_pad_id=11),
    "text mask only": Vocabulary(text_size=12, num_units=8, text_mask_id=3),
}


def special_ids(vocabulary: Vocabulary) -> list[int]:
    return [vocabulary.special_id(name) for name in vocabulary.special_tokens]


@pytest.mark.parametrize("vocabulary", VOCABULARIES.values(), ids=VOCABULARIES.keys())
def test_ranges_do_not_overlap(vocabulary: Vocabulary) -> None:
    """Text ids, added special tokens and speech units occupy consecutive, disjoint ranges."""
    specials = special_ids(vocabulary)
    units = vocabulary.units_to_ids(torch.arange(vocabulary.num_units)).tolist()

    assert specials == list(range(vocabulary.text_size, vocabulary.unit_offset))
    assert units == list(range(vocabulary.unit_offset, vocabulary.size))
    assert vocabulary.size == vocabulary.text_size + len(specials) + vocabulary.num_units


def test_own_mask_and_pad_added() -> None:
    """Without text mask and pad ids, <|mask|> and <|pad|> follow the task tokens and markers."""
    vocabulary = Vocabulary(text_size=12, num_units=8)

    assert vocabulary.special_tokens == [f"<|task_{task}|>" for task in TASKS] + [*SPAN_MARKERS, "<|mask|>", "<|pad|>"]
    assert vocabulary.mask_id == 21
    assert vocabulary.pad_id == 22
    assert vocabulary.unit_offset == 23
    assert vocabulary.size == 31


def test_text_mask_and_pad_reused() -> None:
    """Text mask and pad ids are reused, so only task tokens and markers are added."""
    vocabulary = Vocabulary(text_size=12, num_units=8, text_mask_id=10, text_pad_id=11)

    assert "<|mask|>" not in vocabulary.special_tokens
    assert "<|pad|>" not in vocabulary.special_tokens
    assert len(vocabulary.special_tokens) == 9
    assert vocabulary.mask_id == 10
    assert vocabulary.pad_id == 11
    assert vocabulary.unit_offset == 21


def test_text_mask_only_adds_pad() -> None:
    """A text tokenizer with a mask id but no pad id gets only <|pad|> added."""
    vocabulary = VOCABULARIES["text mask only"]

    assert vocabulary.special_tokens[-1] == "<|pad|>"
    assert "<|mask|>" not in vocabulary.special_tokens
    assert vocabulary.mask_id == 3
    assert vocabulary.pad_id == vocabulary.unit_offset - 1


def test_reference_vocabulary_size() -> None:
    """LLaDA's 126,464 text ids with its mask id, 9 special tokens and 500 units make 126,973 ids."""
    vocabulary = Vocabulary(text_size=126464, num_units=500, text_mask_id=126336, text_pad_id=126081)

    assert len(vocabulary.special_tokens) == 9
    assert vocabulary.size == 126973


def test_special_ids_by_name(vocabulary: Vocabulary) -> None:
    """Task tokens and markers have the ids the layout tests rely on."""
    assert [vocabulary.task_id(task) for task in TASKS] == [12, 13, 14, 15, 16]
    assert [vocabulary.sos_id, vocabulary.eos_id, vocabulary.sot_id, vocabulary.eot_id] == [17, 18, 19, 20]


def test_unknown_names_rejected(vocabulary: Vocabulary) -> None:
    """Unknown task and special-token names raise KeyError listing the choices."""
    with pytest.raises(KeyError, match="unknown task 'qa'; choices: asr, tts"):
        vocabulary.task_id("qa")
    with pytest.raises(KeyError, match=r"unknown special token '<\|bos\|>'; choices: <\|task_asr\|>"):
        vocabulary.special_id("<|bos|>")


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"text_size": 0, "num_units": 8}, "text_size must be at least 1, got 0"),
        ({"text_size": 12, "num_units": 0}, "num_units must be at least 1, got 0"),
        ({"text_size": 12, "num_units": 8, "text_mask_id": 12}, r"text_mask_id=12 is outside the text range \[0, 12\)"),
        ({"text_size": 12, "num_units": 8, "text_pad_id": -1}, r"text_pad_id=-1 is outside the text range"),
    ],
)
def test_invalid_sizes(arguments: dict[str, int], message: str) -> None:
    """Invalid sizes and out-of-range reused ids raise ValueError naming the value."""
    with pytest.raises(ValueError, match=message):
        Vocabulary(**arguments)


def test_units_to_ids_offsets(vocabulary: Vocabulary) -> None:
    """Units in [0, num_units) map to unit_offset + unit as int64."""
    ids = vocabulary.units_to_ids(torch.tensor([0, 7, 3], dtype=torch.int32))

    assert ids.tolist() == [23, 30, 26]
    assert ids.dtype == torch.int64
    assert vocabulary.units_to_ids(torch.tensor([], dtype=torch.long)).tolist() == []


@pytest.mark.parametrize(("units", "shown"), [([0, 8], r"\[0, 8\]"), ([-1, 2], r"\[-1, 2\]")])
def test_units_to_ids_range_error(vocabulary: Vocabulary, units: list[int], shown: str) -> None:
    """Units outside [0, num_units) raise, showing the range found and the fix."""
    with pytest.raises(ValueError, match=rf"must lie in \[0, 8\), got range {shown}.*delete it"):
        vocabulary.units_to_ids(torch.tensor(units))


def test_ids_to_units_drops_other_ids(vocabulary: Vocabulary) -> None:
    """ids_to_units keeps unit ids only and removes the offset."""
    ids = torch.tensor([vocabulary.sos_id, 23, 5, 30, vocabulary.eos_id, vocabulary.mask_id, 25])

    assert vocabulary.ids_to_units(ids).tolist() == [0, 7, 2]


def test_ids_to_text_ids_drops_other_ids() -> None:
    """ids_to_text_ids keeps text ids only, without the reused mask and pad ids."""
    vocabulary = Vocabulary(text_size=12, num_units=8, text_mask_id=10, text_pad_id=11)
    ids = [1, 10, vocabulary.sot_id, 2, 11, vocabulary.unit_offset, 9, vocabulary.eot_id]

    assert vocabulary.ids_to_text_ids(ids) == [1, 2, 9]


@pytest.mark.parametrize("vocabulary", VOCABULARIES.values(), ids=VOCABULARIES.keys())
def test_allowed_text_ids(vocabulary: Vocabulary) -> None:
    """Text targets may take text ids and <|eot|>, never mask or padding."""
    allowed = vocabulary.allowed_ids(TEXT)

    expected = set(range(vocabulary.text_size)) - {vocabulary.mask_id, vocabulary.pad_id} | {vocabulary.eot_id}
    assert allowed.shape == (vocabulary.size,)
    assert allowed.dtype == torch.bool
    assert set(allowed.nonzero().flatten().tolist()) == expected


@pytest.mark.parametrize("vocabulary", VOCABULARIES.values(), ids=VOCABULARIES.keys())
def test_allowed_speech_ids(vocabulary: Vocabulary) -> None:
    """Speech targets may take units and <|eos|>, never mask or padding."""
    allowed = vocabulary.allowed_ids(SPEECH)

    expected = set(range(vocabulary.unit_offset, vocabulary.size)) | {vocabulary.eos_id}
    assert set(allowed.nonzero().flatten().tolist()) == expected
    assert not allowed[vocabulary.mask_id]
    assert not allowed[vocabulary.pad_id]


def test_allowed_unknown_modality(vocabulary: Vocabulary) -> None:
    """A modality code other than TEXT or SPEECH raises."""
    with pytest.raises(ValueError, match="unknown modality 2"):
        vocabulary.allowed_ids(2)
