"""Speech recognition with CMU PocketSphinx 5 and the US English model that its PyPI package ships."""

from __future__ import annotations

import logging
import math
import re
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch

from diffuspeech.audio import resample
from diffuspeech.interfaces import Recognizer

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
# Decoder failures reach Python as exceptions, which this module rewraps with context. At log level
# ERROR, pocketsphinx's C code would also print a line for each utterance that matches no grammar sentence.
BASE_SETTINGS: dict[str, Any] = {"samprate": SAMPLE_RATE, "loglevel": "FATAL"}

# A word is a run of letters or digits, with apostrophes allowed inside ("what's").
WORD_PATTERN = re.compile(r"[^\W_]+(?:'[^\W_]+)*")
# Decoder output can name a word by its alternative pronunciation, as in "zero(2)".
ALTERNATIVE_SUFFIX = re.compile(r"\(\d+\)$")


def normalize_words(text: str) -> list[str]:
    """Split ``text`` into lower-case words, dropping punctuation ("Seven-plus, five!" gives 3 words)."""
    return WORD_PATTERN.findall(text.lower())


class PocketsphinxRecognizer(Recognizer):
    """Transcribes English speech with PocketSphinx's bundled acoustic model and CMUDict.

    Input of any sample rate is resampled to 16,000 Hz. There are three modes:

    - by default, the general US English language model shipped with
      pocketsphinx (``en-us.lm.bin``);
    - after ``set_vocabulary``, a unigram model that accepts any sequence of
      the corpus words, each equally likely;
    - with ``choices``, a grammar whose only sentences are the choices.

    Every word must be in the pronunciation dictionary. A word that is not
    raises ``ValueError`` naming it, rather than being dropped, because a
    dropped word would be counted as an error by every later WER. Spell out
    numbers ("seven", not "7"), or give pronunciations in ARPAbet through
    ``pronunciations`` ({"diffuspeech": "D IH F Y UW S P IY CH"}).

    Grammars for ``choices`` are compiled once and kept in a least recently
    used cache of ``max_cached_grammars`` entries. A lock serializes calls,
    because a decoder holds the state of one utterance.
    """

    description: ClassVar[str] = "CMU PocketSphinx 5 with its bundled US English model (16 kHz)"

    def __init__(
        self,
        acoustic_model: str | None = None,
        dictionary: str | None = None,
        language_model: str | None = None,
        pronunciations: dict[str, str] | None = None,
        max_cached_grammars: int = 256,
    ) -> None:
        """Load the decoder. Paths left as None select the models bundled with pocketsphinx."""
        try:
            import pocketsphinx
        except ImportError as error:
            raise ImportError(
                "PocketsphinxRecognizer needs the PyPI package pocketsphinx 5: run `pip install pocketsphinx`"
            ) from error
        if max_cached_grammars < 1:
            raise ValueError(f"max_cached_grammars must be at least 1, got {max_cached_grammars}")

        settings: dict[str, Any] = dict(BASE_SETTINGS)
        for key, path in (("hmm", acoustic_model), ("dict", dictionary), ("lm", language_model)):
            if path is not None:
                settings[key] = path
        self._decoder_class = pocketsphinx.Decoder
        self._decoder = self._load_decoder(settings)
        # The vocabulary decoder must use the same acoustic model, wherever the default points.
        self._acoustic_model = str(self._decoder.config["hmm"])

        self._lock = threading.Lock()
        self._grammar_searches: OrderedDict[tuple[str, ...], str] = OrderedDict()
        self._next_search_id = 0
        self._max_cached_grammars = max_cached_grammars
        self._vocabulary_decoder: Any = None
        for word, phones in (pronunciations or {}).items():
            self._add_pronunciation(word, phones)

    def set_vocabulary(self, texts: Iterable[str]) -> None:
        """Restrict open recognition to any sequence of the words in ``texts``.

        The words get a unigram language model in which each word and the end
        of the sentence are equally likely. Raises ``ValueError`` when
        ``texts`` hold no words or hold words that are not in the dictionary.
        """
        words = sorted({word for text in texts for word in normalize_words(text)})
        if not words:
            raise ValueError("set_vocabulary needs texts with at least one word; the texts given have none")
        self._check_in_dictionary(words, "the vocabulary texts")

        # Build a separate decoder whose dictionary has only these words, because pocketsphinx 5.1 spends
        # about 4.5 s preparing an n-gram search over the full 134,000-word dictionary and 0.2 s here.
        with tempfile.TemporaryDirectory(prefix="diffuspeech-pocketsphinx-") as folder:
            dictionary_path = Path(folder) / "vocabulary.dict"
            model_path = Path(folder) / "vocabulary.arpa"
            dictionary_path.write_text(self._dictionary_entries(words), encoding="utf-8")
            model_path.write_text(_uniform_unigram_arpa(words), encoding="utf-8")
            decoder = self._load_decoder(
                {
                    **BASE_SETTINGS,
                    "hmm": self._acoustic_model,
                    "dict": str(dictionary_path),
                    "lm": str(model_path),
                }
            )
        with self._lock:
            self._vocabulary_decoder = decoder
        log.debug("pocketsphinx vocabulary set to %d words", len(words))

    def transcribe(self, waveform: torch.Tensor, sample_rate: int, choices: Sequence[str] | None = None) -> str:
        """Return the words heard in ``waveform`` (samples,) at ``sample_rate`` Hz.

        The result is lower-case words separated by single spaces, or "" when
        nothing was recognized (also for an empty waveform). With ``choices``,
        it is one of the choices, normalized as ``normalize_words`` does, or "".
        """
        if waveform.dim() != 1:
            raise ValueError(f"transcribe expects a mono waveform of shape (samples,), got {tuple(waveform.shape)}")
        if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or sample_rate <= 0:
            raise ValueError(f"sample_rate must be a positive integer in Hz, got {sample_rate!r}")
        grammar_key = self._normalize_choices(choices) if choices is not None else None
        audio = _to_pcm16(waveform, sample_rate) if waveform.numel() > 0 else b""

        with self._lock:
            if grammar_key is not None:
                decoder = self._decoder
                decoder.activate_search(self._grammar_search(grammar_key))
            elif self._vocabulary_decoder is not None:
                decoder = self._vocabulary_decoder
            else:
                decoder = self._decoder
                decoder.activate_search()
            if not audio:
                return ""
            decoder.start_utt()
            decoder.process_raw(audio, full_utt=True)
            decoder.end_utt()
            hypothesis = decoder.hyp()

        if hypothesis is None:
            return ""
        return " ".join(_clean_word(word) for word in hypothesis.hypstr.split() if not _is_filler(word))

    def _normalize_choices(self, choices: Sequence[str]) -> tuple[str, ...]:
        """Return the choices as normalized sentences in a fixed order, for the grammar cache key."""
        if isinstance(choices, str):
            raise TypeError(f"choices must be a sequence of sentences, not one string: {choices!r}")
        sentences = []
        for choice in choices:
            words = normalize_words(choice)
            if not words:
                raise ValueError(f"choice {choice!r} contains no words; every choice needs at least one")
            sentences.append(" ".join(words))
        if not sentences:
            raise ValueError("choices is empty; pass at least one sentence, or None for open recognition")
        return tuple(sorted(set(sentences)))

    def _grammar_search(self, sentences: tuple[str, ...]) -> str:
        """Return the name of the search for a grammar of ``sentences``, compiling it on first use."""
        name = self._grammar_searches.get(sentences)
        if name is not None:
            self._grammar_searches.move_to_end(sentences)
            return name

        self._check_in_dictionary(sorted({w for s in sentences for w in s.split()}), "the choices")
        alternatives = " | ".join(sentences)
        grammar = f"#JSGF V1.0;\ngrammar choices;\npublic <choice> = {alternatives} ;\n"
        name = f"choices_{self._next_search_id}"
        self._next_search_id += 1
        self._decoder.add_jsgf_string(name, grammar)
        self._grammar_searches[sentences] = name

        if len(self._grammar_searches) > self._max_cached_grammars:
            _, oldest = self._grammar_searches.popitem(last=False)
            self._decoder.remove_search(oldest)
        return name

    def _check_in_dictionary(self, words: list[str], source: str) -> None:
        missing = [word for word in words if self._decoder.lookup_word(word) is None]
        if missing:
            listed = ", ".join(repr(word) for word in missing[:20])
            more = f" and {len(missing) - 20} more" if len(missing) > 20 else ""
            raise ValueError(
                f"words in {source} not found in the pocketsphinx dictionary: {listed}{more}. "
                "Spell numbers and symbols as words, or pass pronunciations={word: 'ARPAbet phones'}."
            )

    def _add_pronunciation(self, word: str, phones: str) -> None:
        words = normalize_words(word)
        if words != [word.lower()]:
            raise ValueError(f"pronunciation key {word!r} must be one word: letters, digits, apostrophes")
        try:
            # With update=False the word reaches only searches created later. Those are the grammars and
            # vocabulary decoders, the only ones that can use it, and an update would take 5 s.
            self._decoder.add_word(words[0], phones.upper(), False)
        except (RuntimeError, ValueError) as error:
            raise ValueError(
                f"could not add the pronunciation {phones!r} for {word!r}: {error}. "
                "Use space-separated ARPAbet phones of the acoustic model, as in 'HH AH L OW'."
            ) from error

    def _dictionary_entries(self, words: list[str]) -> str:
        """Return dictionary lines for ``words`` with every pronunciation ("zero", "zero(2)", ...)."""
        lines = []
        for word in words:
            variant, number = word, 1
            while (phones := self._decoder.lookup_word(variant)) is not None:
                lines.append(f"{variant} {phones}\n")
                number += 1
                variant = f"{word}({number})"
        return "".join(lines)

    def _load_decoder(self, settings: dict[str, Any]) -> Any:
        try:
            return self._decoder_class(**settings)
        except (RuntimeError, ValueError) as error:
            raise RuntimeError(
                f"pocketsphinx could not load its models ({settings}): {error}. "
                "Check the paths, or leave them unset to use the models bundled with pocketsphinx."
            ) from error


def _uniform_unigram_arpa(words: list[str]) -> str:
    """Return an ARPA language model in which ``words`` and the sentence end share probability equally."""
    log_probability = -math.log10(len(words) + 1)
    lines = ["\\data\\", f"ngram 1={len(words) + 2}", "", "\\1-grams:"]
    # The sentence start is never predicted, so it gets ARPA's conventional -99.
    lines.append("-99.0000 <s>")
    lines += [f"{log_probability:.4f} {word}" for word in [*words, "</s>"]]
    lines += ["", "\\end\\", ""]
    return "\n".join(lines)


def _to_pcm16(waveform: torch.Tensor, sample_rate: int) -> bytes:
    """Return ``waveform`` resampled to 16,000 Hz as little-endian 16-bit PCM bytes."""
    samples = waveform.detach().to(device="cpu", dtype=torch.float32)
    if not torch.isfinite(samples).all():
        raise ValueError("waveform contains NaN or infinite values; pocketsphinx needs finite samples")
    if sample_rate != SAMPLE_RATE:
        samples = resample(samples, sample_rate, SAMPLE_RATE)
    pcm = (samples.clamp(-1.0, 1.0) * 32767.0).round().to(torch.int16)
    return pcm.numpy().astype("<i2").tobytes()


def _is_filler(word: str) -> bool:
    return word.startswith(("<", "[", "++"))


def _clean_word(word: str) -> str:
    return ALTERNATIVE_SUFFIX.sub("", word).lower()
