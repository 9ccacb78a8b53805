"""A small prepared corpus of real wav files and the recipe overrides that train on it in seconds.

Each word is a tone of its own pitch, so the speech tokenizer has real
structure to learn, and no synthesizer is needed.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

SAMPLE_RATE = 16000
WORDS = ["zero", "one", "two", "three", "four", "five", "six"]


def write_tone(path: Path, words: list[str], seconds_per_word: float = 0.12) -> float:
    """Write a wav with one tone per word; return its duration in seconds."""
    samples = []
    for word in words:
        frequency = 220.0 * 2 ** (WORDS.index(word) / 4) if word in WORDS else 900.0
        t = np.arange(int(seconds_per_word * SAMPLE_RATE)) / SAMPLE_RATE
        samples.append(0.3 * np.sin(2 * math.pi * frequency * t))
    waveform = np.concatenate(samples).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, waveform, SAMPLE_RATE)
    return round(len(waveform) / SAMPLE_RATE, 3)


def qa_row(data_dir: Path, split: str, a: int, b: int) -> dict[str, Any]:
    """Return a manifest row for 'what is a plus b', writing its two wav files."""
    question = f"what is {WORDS[a]} plus {WORDS[b]}"
    answer = WORDS[min(a + b, len(WORDS) - 1)]
    audio = f"audio/{split}-q-{a}-{b}.wav"
    reply = f"audio/a-{answer}.wav"
    duration = write_tone(data_dir / audio, question.split())
    reply_duration = write_tone(data_dir / reply, [answer])
    return {
        "id": f"{split}-{a}-{b}",
        "tasks": ["asr", "s2t", "s2s", "t2t", "tts"],
        "question": question,
        "thought": f"{WORDS[a]} plus {WORDS[b]} is {answer}",
        "answer": answer,
        "transcript": question,
        "audio": f"../{audio}",
        "duration": duration,
        "reply_audio": f"../{reply}",
        "reply_duration": reply_duration,
    }


def write_corpus(data_dir: Path) -> Path:
    """Write train (12 rows) and valid (3 rows) manifests with their audio into ``data_dir``."""
    pairs = [(a, b) for a in range(4) for b in range(4)]
    splits = {"train": pairs[:12], "valid": pairs[12:15]}
    for split, split_pairs in splits.items():
        rows = [qa_row(data_dir, split, a, b) for a, b in split_pairs]
        write_rows(data_dir / "manifests" / f"{split}.jsonl", rows)
    return data_dir


def write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    """Write rows as a JSONL manifest."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")


def overrides(data_dir: Path, output_dir: Path, **training: Any) -> list[str]:
    """Return recipe overrides for a 2-layer, 32-wide model on this corpus; ``training`` keys win."""
    settings: dict[str, Any] = {
        "max_steps": 12,
        "batch_size": 4,
        "batches_per_epoch": 5,
        "validation_interval": 100,
        "validation_items_per_task": 2,
        "validation_samples": 0,
        "validation_audio_samples": 0,
        "log_every_n_steps": 1,
        "checkpoint_interval": 4,
        "warmup_steps": 2,
    }
    settings.update(training)
    return [
        f"data_dir={data_dir}",
        f"output_dir={output_dir}",
        "text_tokenizer.args.vocab_size=40",
        "speech_tokenizer.args.num_units=16",
        "backbone.args.d_model=32",
        "backbone.args.n_layers=2",
        "backbone.args.n_heads=2",
        "backbone.args.mlp_hidden_size=64",
        "layout.thought=20",
        "layout.transcript=20",
        "layout.answer=8",
        *(f"training.{key}={value}" for key, value in settings.items()),
    ]


def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run ``python -m diffuspeech.cli`` with one thread and return the finished process."""
    return subprocess.run(
        [sys.executable, "-m", "diffuspeech.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=cli_environment(),
    )


def cli_environment() -> dict[str, str]:
    """Return the environment for command-line subprocesses: one thread, this folder importable."""
    import os

    environment = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    environment["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(Path(__file__).parent), os.environ.get("PYTHONPATH")])
    )
    return environment
