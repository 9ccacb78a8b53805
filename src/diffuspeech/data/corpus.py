"""``diffuspeech prepare``: build a spoken QA corpus with reasoning traces.

Sources: the built-in arithmetic generator, or a JSONL file of text items
with ``question``, ``thought`` and ``answer``. Questions are spoken by the
training voices (plus pitch and rate variants in the training split). Each
distinct answer is spoken once by the reply voice. Output, in ``data_dir``:

- ``audio/``: wav files;
- ``manifests/{train,valid,test,test_unseen_voice}.jsonl``;
- ``corpus.json``: the settings and row counts.

``test`` holds question texts that never occur in training, spoken by the
training voices; ``test_unseen_voice`` holds the same questions spoken by a
voice never heard in training. The result is deterministic for a seed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import soundfile as sf
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from diffuspeech.audio import save_audio
from diffuspeech.data.arithmetic import NUMBER_WORDS, generate_items, split_items
from diffuspeech.data.manifest import write_manifest
from diffuspeech.errors import DataError, RecipeError
from diffuspeech.interfaces import SpeechSynthesizer
from diffuspeech.settings import check_core_settings

log = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test", "test_unseen_voice")


@dataclass(frozen=True)
class TextItem:
    """A question with its reasoning trace and answer."""

    question: str
    thought: str
    answer: str


@dataclass(frozen=True)
class Variant:
    """A prosody variant: speaking rate and pitch factors (1.0 is the voice's own)."""

    rate: float = 1.0
    pitch: float = 1.0

    @property
    def tag(self) -> str:
        return f"r{self.rate:g}p{self.pitch:g}"


def read_text_items(path: Path) -> list[TextItem]:
    """Read a JSONL of {question, thought, answer}; raises ``DataError`` naming the row."""
    if not path.is_file():
        raise DataError(f"text items file {path} not found")
    items = []
    for line, text in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not text.strip():
            continue
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as error:
            raise DataError(f"{path}, row {line}: invalid JSON ({error.msg})") from error
        values = {}
        for key in ("question", "thought", "answer"):
            value = raw.get(key) if isinstance(raw, dict) else None
            if not isinstance(value, str) or not value.strip():
                raise DataError(f"{path}, row {line}: {key!r} must be a non-empty string")
            values[key] = " ".join(value.split())
        items.append(TextItem(**values))
    if not items:
        raise DataError(f"text items file {path} has no rows")
    return items


def split_text_items(
    items: list[TextItem], valid_fraction: float, test_fraction: float, seed: int
) -> dict[str, list[TextItem]]:
    """Split by distinct question text, so no held-out question text occurs in training.

    Each split gets at least one question text, so a small file still gives
    a validation split. Raises ``DataError`` for fewer than 3 distinct questions.
    """
    questions = sorted({item.question for item in items})
    if len(questions) < 3:
        raise DataError(
            f"corpus.jsonl.path: {len(questions)} distinct question(s); at least 3 are needed, "
            "one each for the train, valid and test splits"
        )
    random.Random(seed).shuffle(questions)
    n_test = min(len(questions) - 2, max(1, round(test_fraction * len(questions))))
    n_valid = min(len(questions) - 1 - n_test, max(1, round(valid_fraction * len(questions))))
    test = set(questions[:n_test])
    valid = set(questions[n_test : n_test + n_valid])
    return {
        "train": [i for i in items if i.question not in test and i.question not in valid],
        "valid": [i for i in items if i.question in valid],
        "test": [i for i in items if i.question in test],
    }


def arithmetic_splits(settings: DictConfig, seed: int) -> dict[str, list[TextItem]]:
    """Generate arithmetic items and split them by question text.

    Raises ``RecipeError`` naming ``corpus.arithmetic`` when a split would be empty.
    """
    try:
        generated = generate_items(int(settings.max_operand), tuple(settings.operations))
    except ValueError as error:
        raise RecipeError(f"corpus.arithmetic: {error}; lower corpus.arithmetic.max_operand") from error
    rest, test = split_items(generated, float(settings.test_fraction), seed)
    train, valid = split_items(rest, float(settings.valid_fraction), seed + 1)
    convert = lambda group: [TextItem(i.question, i.thought, i.answer) for i in group]  # noqa: E731
    splits = {"train": convert(train), "valid": convert(valid), "test": convert(test)}
    empty = [split for split, items in splits.items() if not items]
    if empty:
        raise RecipeError(
            f"corpus.arithmetic: the {', '.join(empty)} split(s) would be empty ({len(generated)} questions with "
            f"max_operand={settings.max_operand}); raise corpus.arithmetic.max_operand or the split's fraction"
        )
    return splits


def _audio_name(text: str, voice: str, variant: Variant) -> str:
    digest = hashlib.sha1(f"{voice}|{variant.tag}|{text}".encode()).hexdigest()[:12]
    return f"{voice}/{variant.tag}/{digest}.wav"


class CorpusWriter:
    """Synthesizes each distinct (text, voice, variant) once into ``data_dir/audio``."""

    def __init__(self, synthesizer: SpeechSynthesizer, data_dir: Path) -> None:
        self.synthesizer = synthesizer
        self.data_dir = data_dir
        self.durations: dict[str, float] = {}

    def speak(self, text: str, voice: str, variant: Variant) -> tuple[str, float]:
        """Return the path (relative to ``manifests/``) and duration of ``text`` spoken by ``voice``.

        A wav file left by an earlier run with the same text, voice and variant is reused.
        """
        relative = f"audio/{_audio_name(text, voice, variant)}"
        if relative not in self.durations:
            path = self.data_dir / relative
            if path.is_file() and path.stat().st_size > 44:
                self.durations[relative] = round(sf.info(str(path)).duration, 3)
            else:
                waveform, sample_rate = self.synthesizer.synthesize(text, voice, rate=variant.rate, pitch=variant.pitch)
                if waveform.numel() == 0:
                    raise DataError(f"synthesizer returned no audio for {text!r} with voice {voice}")
                save_audio(path, waveform, sample_rate)
                self.durations[relative] = round(waveform.numel() / sample_rate, 3)
        return f"../{relative}", self.durations[relative]

    def speak_all(self, jobs: list[tuple[str, str, Variant]], workers: int) -> None:
        """Synthesize ``jobs`` of (text, voice, variant) with ``workers`` threads, showing progress."""
        distinct = list(dict.fromkeys(jobs))
        with (
            ThreadPoolExecutor(max_workers=max(1, workers)) as pool,
            tqdm(total=len(distinct), desc="synthesizing", unit="utt") as progress,
        ):
            for _ in pool.map(lambda job: self.speak(*job), distinct):
                progress.update(1)


def _variants(settings: DictConfig) -> list[Variant]:
    variants = [Variant(float(v.get("rate", 1.0)), float(v.get("pitch", 1.0))) for v in settings.variants]
    return variants or [Variant()]


def _check_voices(synthesizer: SpeechSynthesizer, voices: Sequence[str], key: str) -> None:
    unknown = [voice for voice in voices if voice not in synthesizer.voices]
    if unknown:
        raise RecipeError(
            f"{key}: unknown voice(s) {', '.join(unknown)} for {type(synthesizer).__name__}; "
            f"choices: {', '.join(synthesizer.voices)}"
        )


def _qa_rows(
    split: str,
    items: list[TextItem],
    voices: Sequence[str],
    variants: list[Variant],
    reply_voice: str,
    writer: CorpusWriter,
) -> list[dict[str, Any]]:
    rows = []
    for index, item in enumerate(items):
        reply_audio, reply_duration = writer.speak(item.answer, reply_voice, Variant())
        for voice in voices:
            for variant in variants:
                audio, duration = writer.speak(item.question, voice, variant)
                rows.append(
                    {
                        "id": f"{split}-{index:05d}-{voice}-{variant.tag}",
                        # Not TTS: the reply speaks the answer, not the question text.
                        "tasks": ["asr", "s2t", "s2s", "t2t"],
                        "question": item.question,
                        "thought": item.thought,
                        "answer": item.answer,
                        "transcript": item.question,
                        "audio": audio,
                        "duration": duration,
                        "speaker": voice,
                        "reply_audio": reply_audio,
                        "reply_duration": reply_duration,
                        "reply_speaker": reply_voice,
                    }
                )
    return rows


def _word_rows(
    words: Sequence[str], voices: Sequence[str], variants: list[Variant], writer: CorpusWriter
) -> list[dict[str, Any]]:
    """ASR rows of single words spoken by every training voice."""
    rows = []
    for word in words:
        for voice in voices:
            for variant in variants:
                audio, duration = writer.speak(word, voice, variant)
                rows.append(
                    {
                        "id": f"train-word-{word}-{voice}-{variant.tag}",
                        "tasks": ["asr"],
                        "transcript": word,
                        "audio": audio,
                        "duration": duration,
                        "speaker": voice,
                    }
                )
    return rows


def _tts_rows(texts: Sequence[str], reply_voice: str, writer: CorpusWriter) -> list[dict[str, Any]]:
    """TTS rows: each text with its recording by the reply voice."""
    rows = []
    for index, text in enumerate(texts):
        reply_audio, reply_duration = writer.speak(text, reply_voice, Variant())
        rows.append(
            {
                "id": f"train-tts-{index:05d}",
                "tasks": ["tts"],
                "transcript": text,
                "reply_audio": reply_audio,
                "reply_duration": reply_duration,
                "reply_speaker": reply_voice,
            }
        )
    return rows


def prepare_corpus(recipe: DictConfig, synthesizer: SpeechSynthesizer) -> Path:
    """Build the corpus that ``recipe.corpus`` describes; return the data folder."""
    check_core_settings(recipe)
    settings = recipe.corpus
    data_dir = Path(str(recipe.data_dir))
    seed = int(recipe.seed)
    voices = list(settings.voices)
    unseen_voice = str(settings.unseen_voice)
    reply_voice = str(settings.reply_voice)
    _check_voices(synthesizer, [*voices, unseen_voice, reply_voice], "corpus.voices/unseen_voice/reply_voice")
    if unseen_voice in voices:
        raise RecipeError(f"corpus.unseen_voice: {unseen_voice!r} is also a training voice; pick another")

    if settings.source == "arithmetic":
        splits = arithmetic_splits(settings.arithmetic, seed)
    elif settings.source == "jsonl":
        if not settings.jsonl.path:
            raise RecipeError("corpus.jsonl.path: not set; give the JSONL file of question/thought/answer items")
        splits = split_text_items(
            read_text_items(Path(str(settings.jsonl.path))),
            float(settings.jsonl.valid_fraction),
            float(settings.jsonl.test_fraction),
            seed,
        )
    else:
        raise RecipeError(f"corpus.source: {settings.source!r} is invalid; choices: arithmetic, jsonl")

    variants = _variants(settings)
    writer = CorpusWriter(synthesizer, data_dir)
    plan = {
        "train": (voices, variants),
        "valid": (voices, [Variant()]),
        "test": (voices, [Variant()]),
        "test_unseen_voice": ([unseen_voice], [Variant()]),
    }
    items_of = {**splits, "test_unseen_voice": splits["test"]}
    words = NUMBER_WORDS if settings.source == "arithmetic" and settings.arithmetic.word_utterances else []

    # Synthesize every distinct utterance in parallel first; building the rows then only reads the results.
    jobs = [
        (item.question, voice, variant)
        for split, (split_voices, split_variants) in plan.items()
        for item in items_of[split]
        for voice in split_voices
        for variant in split_variants
    ]
    jobs += [(item.answer, reply_voice, Variant()) for group in splits.values() for item in group]
    jobs += [(word, voice, variant) for word in words for voice in voices for variant in variants]
    jobs += [(word, reply_voice, Variant()) for word in words]
    log.info("Synthesizing %d distinct utterances into %s", len(set(jobs)), data_dir / "audio")
    writer.speak_all(jobs, int(settings.workers))

    manifests = {
        split: _qa_rows(split, items_of[split], split_voices, split_variants, reply_voice, writer)
        for split, (split_voices, split_variants) in plan.items()
    }
    manifests["train"] += _word_rows(words, voices, variants, writer)
    # TTS learns to speak every answer and every single word with the reply voice.
    spoken_texts = sorted({item.answer for item in splits["train"]} | set(words))
    manifests["train"] += _tts_rows(spoken_texts, reply_voice, writer)

    for split, rows in manifests.items():
        write_manifest(data_dir / "manifests" / f"{split}.jsonl", rows)
    summary = {
        "seed": seed,
        "corpus": OmegaConf.to_container(settings, resolve=True),
        "rows": {split: len(rows) for split, rows in manifests.items()},
        "audio_files": len(writer.durations),
        "audio_hours": round(sum(writer.durations.values()) / 3600, 3),
    }
    (data_dir / "corpus.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return data_dir
