"""Tests for the SentencePiece text tokenizer: fitting, round trips and saved state."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from diffuspeech_plugins.text_tokenizers.sentencepiece import SentencePieceTokenizer

CORPUS = [
    "what is three plus four",
    "three plus four is seven",
    "what is two plus two",
    "two plus two is four",
    "what is five plus one",
    "five plus one is six",
    "the answer is nine",
]


@pytest.fixture
def fitted(tmp_path: Path) -> SentencePieceTokenizer:
    """A BPE tokenizer of at most 40 pieces fitted on the arithmetic corpus."""
    tokenizer = SentencePieceTokenizer(vocab_size=40)
    tokenizer.fit(CORPUS, tmp_path / "model")
    return tokenizer


def test_fit_writes_model(fitted: SentencePieceTokenizer, tmp_path: Path) -> None:
    """fit trains the tokenizer and writes text_tokenizer.model into the folder."""
    assert fitted.is_fitted()
    assert (tmp_path / "model" / "text_tokenizer.model").is_file()
    assert 8 <= fitted.vocab_size <= 40


@pytest.mark.parametrize("text", [*CORPUS, "four plus three is seven", "nine is the answer"])
def test_round_trip(text: str, fitted: SentencePieceTokenizer) -> None:
    """decode(encode(text)) returns the text, and ids lie in [0, vocab_size)."""
    ids = fitted.encode(text)

    assert ids
    assert all(isinstance(i, int) and 0 <= i < fitted.vocab_size for i in ids)
    assert fitted.decode(ids) == text


def test_state_dict_round_trip(fitted: SentencePieceTokenizer) -> None:
    """A fresh tokenizer loaded from state_dict encodes and decodes like the fitted one."""
    restored = SentencePieceTokenizer(vocab_size=40)
    assert not restored.is_fitted()

    restored.load_state_dict(fitted.state_dict())

    assert restored.is_fitted()
    assert restored.vocab_size == fitted.vocab_size
    assert restored.state_dict() == fitted.state_dict()
    for text in CORPUS:
        assert restored.encode(text) == fitted.encode(text)
        assert restored.decode(fitted.encode(text)) == text


def test_model_file_loads(fitted: SentencePieceTokenizer, tmp_path: Path) -> None:
    """A tokenizer built with model_file set to a trained model needs no fit."""
    loaded = SentencePieceTokenizer(model_file=str(tmp_path / "model" / "text_tokenizer.model"))

    assert loaded.is_fitted()
    assert loaded.encode(CORPUS[0]) == fitted.encode(CORPUS[0])


def test_missing_model_file_waits_for_fit(tmp_path: Path) -> None:
    """A model_file that does not exist yet leaves the tokenizer unfitted."""
    tokenizer = SentencePieceTokenizer(vocab_size=40, model_file=str(tmp_path / "later.model"))

    assert not tokenizer.is_fitted()
    assert tokenizer.vocab_size == 40


def test_unfitted_tokenizer() -> None:
    """Before fit, encode raises with the fix, state_dict is empty and an empty state changes nothing."""
    tokenizer = SentencePieceTokenizer(vocab_size=40)
    tokenizer.load_state_dict({})

    assert tokenizer.state_dict() == {}
    assert not tokenizer.is_fitted()
    with pytest.raises(RuntimeError, match=r"not trained yet: call fit\(\) or set model_file"):
        tokenizer.encode("two")


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"vocab_size": 4}, "vocab_size must be at least 8, got 4"),
        ({"model_type": "wordpiece"}, "model_type 'wordpiece' is invalid; choices: bpe, unigram, char, word"),
    ],
)
def test_invalid_arguments(arguments: dict[str, Any], message: str) -> None:
    """Invalid settings raise ValueError naming the value and the choices."""
    with pytest.raises(ValueError, match=message):
        SentencePieceTokenizer(**arguments)


def test_empty_corpus(tmp_path: Path) -> None:
    """Fitting on blank texts only raises ValueError."""
    with pytest.raises(ValueError, match="cannot train SentencePiece on an empty corpus"):
        SentencePieceTokenizer(vocab_size=40).fit(["", "   "], tmp_path)


def test_corrupt_model_file(tmp_path: Path) -> None:
    """A model file that is not a SentencePiece model raises ValueError naming the file."""
    path = tmp_path / "broken.model"
    path.write_bytes(b"this is not a protobuf")

    with pytest.raises(ValueError, match=r"cannot read SentencePiece model from .*broken\.model"):
        SentencePieceTokenizer(model_file=str(path))
