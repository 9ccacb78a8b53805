"""A pretrained text tokenizer read from a Hugging Face ``tokenizer.json`` file."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

from diffuspeech.errors import RecipeError
from diffuspeech.interfaces import TextTokenizer

log = logging.getLogger(__name__)

TOKENIZER_FILE = "tokenizer.json"


class HFTokenizersTokenizer(TextTokenizer):
    """The text tokenizer of a pretrained checkpoint, through the ``tokenizers`` package.

    ``path`` is a folder holding ``tokenizer.json`` (a Hugging Face checkpoint
    folder such as LLaDA-8B-Instruct) or the file itself. Only the JSON file is
    read: no ``trust_remote_code``, nothing downloaded.

    ``vocab_size`` is the number of text ids the backbone reserves, which may
    exceed the tokenizer's own count: LLaDA-8B's embedding has 126,464 rows
    for fewer tokenizer entries, and the unified vocabulary places the special
    tokens after all 126,464. It defaults to the tokenizer's count (added tokens
    included). ``mask_id`` and ``pad_id`` name ids the checkpoint already uses
    for masking and padding (LLaDA: 126336 and 126081), so the unified
    vocabulary adds no mask or pad token of its own.

    The tokenizer is pretrained: when ``tokenizer.json`` is missing the
    plugin still builds (so ``diffuspeech train --dry-run`` works without
    files, given ``vocab_size``), but ``fit`` raises ``RecipeError`` naming
    the file. The JSON is carried in ``state_dict`` so checkpoints need no
    side file.
    """

    description = "pretrained Hugging Face tokenizer.json (e.g. LLaDA's), read with the tokenizers package"

    def __init__(
        self,
        path: str,
        vocab_size: int | None = None,
        mask_id: int | None = None,
        pad_id: int | None = None,
        add_special_tokens: bool = False,
    ) -> None:
        location = Path(path).expanduser()
        self.file = location if location.suffix == ".json" else location / TOKENIZER_FILE
        self.requested_vocab_size = vocab_size
        self.mask_id = mask_id
        self.pad_id = pad_id
        self.add_special_tokens = add_special_tokens
        self._tokenizer: Tokenizer | None = None

        if vocab_size is not None and vocab_size < 1:
            raise ValueError(f"vocab_size must be at least 1, got {vocab_size}")
        for name, value in (("mask_id", mask_id), ("pad_id", pad_id)):
            if value is not None and vocab_size is not None and not 0 <= value < vocab_size:
                raise ValueError(f"{name}={value} is outside the text ids [0, {vocab_size})")
        if self.file.is_file():
            self._load(self.file.read_text(encoding="utf-8"), str(self.file))
        else:
            log.info("%s not found; the text tokenizer can report its size but not encode", self.file)

    def _load(self, serialized: str, source: str) -> None:
        try:
            tokenizer = Tokenizer.from_str(serialized)
        except Exception as error:  # the Rust library raises plain Exception for any parse failure
            raise ValueError(f"cannot read tokenizer from {source}: {error}") from error

        own_size = tokenizer.get_vocab_size(with_added_tokens=True)
        if self.requested_vocab_size is not None and own_size > self.requested_vocab_size:
            raise ValueError(
                f"{source} has {own_size} tokens, more than vocab_size={self.requested_vocab_size}; "
                f"set text_tokenizer.args.vocab_size to at least {own_size}"
            )
        for name, value in (("mask_id", self.mask_id), ("pad_id", self.pad_id)):
            if value is not None and tokenizer.id_to_token(value) is None:
                raise ValueError(f"{source} has no token with {name}={value}; give an id the tokenizer defines")
        self._tokenizer = tokenizer

    @property
    def tokenizer(self) -> Tokenizer:
        if self._tokenizer is None:
            raise RecipeError(
                f"text_tokenizer.args.path: {self.file} not found; point it at the folder of a pretrained "
                "checkpoint that has tokenizer.json"
            )
        return self._tokenizer

    @property
    def vocab_size(self) -> int:
        if self.requested_vocab_size is not None:
            return self.requested_vocab_size
        return int(self.tokenizer.get_vocab_size(with_added_tokens=True))

    def is_fitted(self) -> bool:
        return self._tokenizer is not None

    def fit(self, texts: Iterable[str], directory: Path) -> None:
        # A pretrained tokenizer is never trained on the corpus; reaching here means its file is missing.
        raise RecipeError(
            f"text_tokenizer.args.path: {self.file} not found; the pretrained tokenizer cannot be trained "
            "on the corpus, so point the path at a folder with tokenizer.json"
        )

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=self.add_special_tokens).ids)

    def decode(self, ids: list[int]) -> str:
        # Ids past the tokenizer's own entries (padding rows of the embedding) have no text.
        own_size = self.tokenizer.get_vocab_size(with_added_tokens=True)
        return str(self.tokenizer.decode([i for i in ids if 0 <= i < own_size], skip_special_tokens=True))

    def state_dict(self) -> dict[str, Any]:
        return {"tokenizer_json": self._tokenizer.to_str()} if self._tokenizer is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "tokenizer_json" in state:
            self._load(str(state["tokenizer_json"]), "checkpoint")
