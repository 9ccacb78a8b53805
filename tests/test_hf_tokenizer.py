"""Tests for the hf_tokenizers text tokenizer: a tokenizer.json built here with the tokenizers library."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from diffuspeech.errors import RecipeError
from diffuspeech.recipe import build_component
from diffuspeech.vocabulary import Vocabulary
from diffuspeech_plugins.text_tokenizers.hf_tokenizers import HFTokenizersTokenizer

TEXTS = ["what is two plus three", "the answer is five", "think first, then speak"] * 10


@pytest.fixture
def tokenizer_folder(tmp_path: Path) -> Path:
    """A checkpoint-like folder with a byte-level BPE tokenizer.json (eos id 0, mask id 1)."""
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<|endoftext|>", "<|mdm_mask|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(TEXTS, trainer)
    folder = tmp_path / "checkpoint"
    folder.mkdir()
    tokenizer.save(str(folder / "tokenizer.json"))
    return folder


def test_round_trip(tokenizer_folder: Path) -> None:
    """Text encodes to ids inside the tokenizer's range and decodes back unchanged."""
    tokenizer = HFTokenizersTokenizer(str(tokenizer_folder))
    ids = tokenizer.encode("what is two plus three")

    assert tokenizer.is_fitted()
    assert ids
    assert all(0 <= i < tokenizer.vocab_size for i in ids)
    assert tokenizer.decode(ids) == "what is two plus three"


def test_vocab_size_defaults_to_tokenizer(tokenizer_folder: Path) -> None:
    """Without vocab_size the text ids are the tokenizer's own entries, special tokens included."""
    own = Tokenizer.from_file(str(tokenizer_folder / "tokenizer.json")).get_vocab_size(with_added_tokens=True)

    assert HFTokenizersTokenizer(str(tokenizer_folder)).vocab_size == own


def test_reserved_rows_and_reused_ids(tokenizer_folder: Path) -> None:
    """vocab_size reserves padded embedding rows; mask and pad ids come from the tokenizer, so 9 specials are added."""
    tokenizer = HFTokenizersTokenizer(str(tokenizer_folder), vocab_size=384, mask_id=1, pad_id=0)
    vocabulary = Vocabulary(text_size=tokenizer.vocab_size, num_units=20, text_mask_id=1, text_pad_id=0)

    assert tokenizer.vocab_size == 384
    assert vocabulary.mask_id == 1
    assert vocabulary.pad_id == 0
    assert len(vocabulary.special_tokens) == 9
    assert vocabulary.size == 384 + 9 + 20


def test_decode_skips_padded_rows(tokenizer_folder: Path) -> None:
    """Ids past the tokenizer's entries (embedding padding) and special tokens decode to nothing."""
    tokenizer = HFTokenizersTokenizer(str(tokenizer_folder), vocab_size=384)
    ids = tokenizer.encode("the answer")

    assert tokenizer.decode([*ids, 350, 383, 0, 1]) == "the answer"


def test_tokenizer_json_path(tokenizer_folder: Path) -> None:
    """path may name tokenizer.json itself instead of its folder."""
    tokenizer = HFTokenizersTokenizer(str(tokenizer_folder / "tokenizer.json"))

    assert tokenizer.decode(tokenizer.encode("five")) == "five"


def test_state_dict_carries_tokenizer(tokenizer_folder: Path, tmp_path: Path) -> None:
    """A checkpoint's state rebuilds the tokenizer where tokenizer.json no longer exists."""
    original = HFTokenizersTokenizer(str(tokenizer_folder), vocab_size=384, mask_id=1)
    restored = HFTokenizersTokenizer(str(tmp_path / "gone"), vocab_size=384, mask_id=1)

    assert not restored.is_fitted()
    restored.load_state_dict(original.state_dict())

    assert restored.is_fitted()
    assert restored.encode("think first") == original.encode("think first")


def test_missing_file_reports_size_only(tmp_path: Path) -> None:
    """Without tokenizer.json the size is known from vocab_size, and encoding or fitting names the file."""
    tokenizer = HFTokenizersTokenizer(str(tmp_path / "weights" / "LLaDA"), vocab_size=126464, mask_id=126336)

    assert tokenizer.vocab_size == 126464
    assert not tokenizer.is_fitted()
    with pytest.raises(RecipeError, match=r"text_tokenizer\.args\.path: .*LLaDA/tokenizer\.json not found"):
        tokenizer.encode("hello")
    with pytest.raises(
        RecipeError, match=r"LLaDA/tokenizer\.json not found; the pretrained tokenizer cannot be trained"
    ):
        tokenizer.fit(["hello"], tmp_path)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"vocab_size": 10}, r"has \d+ tokens, more than vocab_size=10; set text_tokenizer\.args\.vocab_size"),
        ({"vocab_size": 384, "mask_id": 350}, r"has no token with mask_id=350"),
        ({"vocab_size": 384, "pad_id": 400}, r"pad_id=400 is outside the text ids \[0, 384\)"),
    ],
)
def test_invalid_arguments(tokenizer_folder: Path, arguments: dict[str, int], message: str) -> None:
    """Sizes and ids that do not fit the tokenizer raise ValueError naming the value."""
    with pytest.raises(ValueError, match=message):
        HFTokenizersTokenizer(str(tokenizer_folder), **arguments)


def test_invalid_json(tmp_path: Path) -> None:
    """A tokenizer.json that is not a tokenizer raises ValueError naming the file."""
    (tmp_path / "tokenizer.json").write_text('{"not": "a tokenizer"}', encoding="utf-8")

    with pytest.raises(ValueError, match=r"cannot read tokenizer from .*tokenizer\.json"):
        HFTokenizersTokenizer(str(tmp_path))


def test_built_from_recipe(tokenizer_folder: Path) -> None:
    """The registry builds the plugin by its name hf_tokenizers."""
    recipe = OmegaConf.create({"text_tokenizer": {"name": "hf_tokenizers", "args": {"path": str(tokenizer_folder)}}})

    tokenizer = build_component(recipe, "text_tokenizer", "text_tokenizer")

    assert isinstance(tokenizer, HFTokenizersTokenizer)
    assert tokenizer.encode("five") == HFTokenizersTokenizer(str(tokenizer_folder)).encode("five")
