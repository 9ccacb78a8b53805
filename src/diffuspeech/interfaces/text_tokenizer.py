"""Text tokenizer plugin kind."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterable
from pathlib import Path

from diffuspeech.interfaces.plugin import Plugin


class TextTokenizer(Plugin):
    """Maps text to ids in ``[0, vocab_size)`` and back.

    The ids are local to the tokenizer: the core's ``Vocabulary`` offsets them
    into the unified vocabulary. A tokenizer that must be trained on corpus
    text reports ``is_fitted() == False`` until ``fit`` has run.
    """

    @property
    @abstractmethod
    def vocab_size(self) -> int:
        """Number of text ids."""

    @abstractmethod
    def encode(self, text: str) -> list[int]:
        """Return the ids of ``text``, each in ``[0, vocab_size)``."""

    @abstractmethod
    def decode(self, ids: list[int]) -> str:
        """Return the text for ``ids``."""

    def is_fitted(self) -> bool:
        """Return True when the tokenizer can encode without ``fit``."""
        return True

    def fit(self, texts: Iterable[str], directory: Path) -> None:
        """Train on ``texts``, writing any files into ``directory``."""
        raise NotImplementedError(f"{type(self).__name__} is pretrained and cannot be fitted on a corpus")
