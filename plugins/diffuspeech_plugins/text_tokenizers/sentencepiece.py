"""A SentencePiece text tokenizer trained on the corpus text."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import sentencepiece as spm

from diffuspeech.interfaces import TextTokenizer

log = logging.getLogger(__name__)


class SentencePieceTokenizer(TextTokenizer):
    """SentencePiece (BPE by default) trained on the corpus, or loaded from a ``.model`` file.

    With ``model_file`` set and present, the tokenizer is pretrained and
    ``fit`` is not needed. Otherwise ``fit`` trains on the corpus text and
    writes ``text_tokenizer.model`` into the given folder. ``vocab_size`` is an
    upper bound: a small corpus may give fewer pieces. The trained model is
    carried in ``state_dict`` so checkpoints need no side file.
    """

    description = "SentencePiece BPE or unigram model trained on the corpus text"

    def __init__(
        self,
        vocab_size: int = 128,
        model_type: str = "bpe",
        model_file: str | None = None,
        character_coverage: float = 1.0,
        repeat_corpus: int = 5,
    ) -> None:
        if vocab_size < 8:
            raise ValueError(f"vocab_size must be at least 8, got {vocab_size}")
        if model_type not in ("bpe", "unigram", "char", "word"):
            raise ValueError(f"model_type {model_type!r} is invalid; choices: bpe, unigram, char, word")
        self.requested_vocab_size = vocab_size
        self.model_type = model_type
        self.character_coverage = character_coverage
        self.repeat_corpus = repeat_corpus
        self._processor: spm.SentencePieceProcessor | None = None
        if model_file:
            path = Path(model_file)
            if path.is_file():
                self._load(path.read_bytes(), str(path))
            else:
                log.info("SentencePiece model %s does not exist yet; it will be trained on the corpus", path)

    def _load(self, proto: bytes, source: str) -> None:
        try:
            self._processor = spm.SentencePieceProcessor(model_proto=proto)
        except (RuntimeError, OSError) as error:
            raise ValueError(f"cannot read SentencePiece model from {source}: {error}") from error

    @property
    def processor(self) -> spm.SentencePieceProcessor:
        if self._processor is None:
            raise RuntimeError("the SentencePiece tokenizer is not trained yet: call fit() or set model_file")
        return self._processor

    @property
    def vocab_size(self) -> int:
        if self._processor is None:
            return self.requested_vocab_size
        return int(self._processor.get_piece_size())

    def is_fitted(self) -> bool:
        return self._processor is not None

    def fit(self, texts: Iterable[str], directory: Path) -> None:
        # Distinct texts repeated a few times give BPE enough counts to merge whole words on small corpora.
        distinct = sorted({" ".join(text.split()) for text in texts if text.strip()})
        if not distinct:
            raise ValueError("cannot train SentencePiece on an empty corpus")
        model = io.BytesIO()
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(distinct * self.repeat_corpus),
            model_writer=model,
            vocab_size=self.requested_vocab_size,
            hard_vocab_limit=False,
            model_type=self.model_type,
            character_coverage=self.character_coverage,
            bos_id=-1,
            eos_id=-1,
            minloglevel=2,
        )
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "text_tokenizer.model").write_bytes(model.getvalue())
        self._load(model.getvalue(), "training")

    def encode(self, text: str) -> list[int]:
        return [int(i) for i in self.processor.encode(text)]

    def decode(self, ids: list[int]) -> str:
        return str(self.processor.decode(ids))

    def state_dict(self) -> dict[str, Any]:
        return {"model_proto": self.processor.serialized_model_proto()} if self._processor else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "model_proto" in state:
            self._load(bytes(state["model_proto"]), "checkpoint")
