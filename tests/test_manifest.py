"""Tests for JSONL manifests and for bad audio met while caching speech units."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile
import torch

from diffuspeech.data.features import UnitCache, load_row_audio
from diffuspeech.data.manifest import ManifestRow, read_manifest, write_manifest
from diffuspeech.errors import DataError
from diffuspeech_plugins.speech_tokenizers.mel_kmeans import MelKMeansTokenizer

SAMPLE_RATE = 16000


def sine(frequency: float, sample_rate: int, seconds: float) -> np.ndarray:
    """Return a float32 sine wave (samples,) of amplitude 0.4."""
    time = np.arange(int(sample_rate * seconds)) / sample_rate
    return (0.4 * np.sin(2 * math.pi * frequency * time)).astype(np.float32)


def write_rows(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def asr_row(row_id: str, audio: str) -> dict[str, Any]:
    return {"id": row_id, "tasks": ["asr"], "audio": audio, "transcript": "two plus two"}


@pytest.fixture(scope="module")
def tokenizer() -> MelKMeansTokenizer:
    """A mel k-means tokenizer with 8 units (50 units per second), fitted on three tones."""
    fitted = MelKMeansTokenizer(num_units=8, n_mels=20, stack=2, max_fit_frames=1000, iterations=5)
    fitted.fit([torch.from_numpy(sine(frequency, SAMPLE_RATE, 1.0)) for frequency in (220, 440, 880)])
    return fitted


def test_read_valid_manifest(tmp_path: Path) -> None:
    """Rows are read with their line numbers, and audio paths resolve against the manifest's folder."""
    manifest = tmp_path / "manifests" / "train.jsonl"
    manifest.parent.mkdir()
    manifest.write_text(
        json.dumps(asr_row("a", "../audio/a.wav"))
        + "\n\n"
        + json.dumps({"id": "b", "tasks": ["t2t"], "question": "q", "thought": "t", "answer": "a", "note": 1})
        + "\n"
    )

    rows = read_manifest(manifest)

    assert [row.id for row in rows] == ["a", "b"]
    assert [row.line for row in rows] == [1, 3]
    assert rows[0].get("audio") == str((tmp_path / "audio" / "a.wav").resolve())
    assert rows[0].tasks == ("asr",)
    assert rows[1].get("note") == 1
    assert rows[1].get("audio") is None


def test_write_then_read(tmp_path: Path) -> None:
    """write_manifest writes rows that read_manifest reads back, and leaves no temporary file."""
    rows = [asr_row("a", "a.wav"), {"id": "b", "tasks": ["t2t"], "question": "où", "thought": "t", "answer": "a"}]
    path = tmp_path / "out" / "rows.jsonl"

    write_manifest(path, rows)

    assert [row.id for row in read_manifest(path)] == ["a", "b"]
    assert read_manifest(path)[1].get("question") == "où"
    assert [p.name for p in path.parent.iterdir()] == ["rows.jsonl"]


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (["{not json"], r"row 1: invalid JSON"),
        (["[1, 2]"], r"row 1: expected a JSON object, got list"),
        ([{"tasks": ["asr"]}], r"row 1: missing or empty 'id'"),
        ([{"id": "", "tasks": ["asr"]}], r"row 1: missing or empty 'id'"),
        ([{"id": "a", "tasks": ["asr", "fly"]}], r"row 1 \(id a\): 'tasks' must be a non-empty list"),
        ([{"id": "a", "tasks": []}], r"row 1 \(id a\): 'tasks' must be a non-empty list"),
        (
            [{"id": "a", "tasks": ["t2t"], "question": "q", "thought": " ", "answer": "a"}],
            r"row 1 \(id a\): text field 'thought' must be a non-empty string",
        ),
        (
            [{"id": "a", "tasks": ["asr"], "audio": 3, "transcript": "t"}],
            r"row 1 \(id a\): 'audio' must be a file path",
        ),
        ([{"id": "a", "tasks": ["asr"], "audio": "a.wav"}], r"row 1 \(id a\): task asr needs field\(s\) transcript"),
        ([asr_row("a", "a.wav"), asr_row("a", "b.wav")], r"row 2: duplicate id 'a' \(first at row 1\)"),
        (["", "  "], r"has no rows"),
    ],
)
def test_manifest_errors(lines: list[Any], message: str, tmp_path: Path) -> None:
    """Invalid rows raise DataError naming the manifest file and the row."""
    path = tmp_path / "bad.jsonl"
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))

    with pytest.raises(DataError, match=message) as info:
        read_manifest(path)

    assert str(path) in str(info.value)


def test_manifest_not_utf8(tmp_path: Path) -> None:
    """Bytes that are not UTF-8 raise DataError naming the row and the fix."""
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(json.dumps(asr_row("a", "a.wav")).encode() + b"\n" + '{"id": "é"}\n'.encode("latin-1"))

    with pytest.raises(DataError, match=r"row 2: not valid UTF-8 .*re-encode the file as UTF-8"):
        read_manifest(path)


def test_manifest_missing(tmp_path: Path) -> None:
    """A manifest path that does not exist raises DataError naming it."""
    with pytest.raises(DataError, match=r"manifest .*nothing\.jsonl not found"):
        read_manifest(tmp_path / "nothing.jsonl")


def write_missing(path: Path) -> None:
    """Create nothing, so that ``path`` does not exist."""


def write_empty(path: Path) -> None:
    path.write_bytes(b"")


def write_garbage(path: Path) -> None:
    path.write_bytes(b"RIFF but not really a wave file, just text " * 10)


@pytest.mark.parametrize(
    ("write_bad", "problem"),
    [(write_missing, "not found"), (write_empty, r"is empty \(0 bytes\)"), (write_garbage, "could not be decoded")],
    ids=["missing", "empty", "not audio"],
)
def test_bad_audio_names_file_and_row(
    write_bad: Callable[[Path], None], problem: str, tokenizer: MelKMeansTokenizer, tmp_path: Path
) -> None:
    """UnitCache.ensure raises DataError naming the audio file, the manifest, its row and the id."""
    soundfile.write(tmp_path / "good.wav", sine(440, SAMPLE_RATE, 0.5), SAMPLE_RATE)
    write_bad(tmp_path / "bad.wav")
    manifest = write_rows(tmp_path / "train.jsonl", [asr_row("good", "good.wav"), asr_row("utt-2", "bad.wav")])
    cache = UnitCache(tokenizer, tmp_path / "cache")

    with pytest.raises(DataError, match=problem) as info:
        cache.ensure(read_manifest(manifest))

    message = str(info.value)
    assert str(tmp_path / "bad.wav") in message
    assert f"row 2 of manifest '{manifest}'" in message
    assert "id utt-2" in message
    assert not cache.path.exists()


def test_too_short_audio(tokenizer: MelKMeansTokenizer, tmp_path: Path) -> None:
    """Audio too short for one unit raises DataError naming the row and the file."""
    soundfile.write(tmp_path / "short.wav", sine(440, SAMPLE_RATE, 0.005), SAMPLE_RATE)
    manifest = write_rows(tmp_path / "train.jsonl", [asr_row("short", "short.wav")])

    with pytest.raises(DataError, match=r"row 1 \(id short\): .*short\.wav is too short to give one speech unit"):
        UnitCache(tokenizer, tmp_path / "cache").ensure(read_manifest(manifest))


def test_stereo_downmixed(tokenizer: MelKMeansTokenizer, tmp_path: Path) -> None:
    """A stereo file is averaged to mono: its units equal those of the averaged mono file."""
    tone = sine(440, SAMPLE_RATE, 0.5)
    soundfile.write(
        tmp_path / "stereo.wav", np.stack([tone, np.zeros_like(tone)], axis=1), SAMPLE_RATE, subtype="FLOAT"
    )
    soundfile.write(tmp_path / "mono.wav", tone / 2, SAMPLE_RATE, subtype="FLOAT")
    manifest = write_rows(tmp_path / "train.jsonl", [asr_row("stereo", "stereo.wav"), asr_row("mono", "mono.wav")])
    rows = read_manifest(manifest)
    cache = UnitCache(tokenizer, tmp_path / "cache")

    cache.ensure(rows)

    waveform = load_row_audio(rows[0].get("audio"), rows[0], "audio", SAMPLE_RATE)
    assert waveform.shape == (tone.size,)
    torch.testing.assert_close(waveform, torch.from_numpy(tone / 2))
    assert torch.equal(cache[rows[0].get("audio")], cache[rows[1].get("audio")])


def test_resampled_to_tokenizer_rate(tokenizer: MelKMeansTokenizer, tmp_path: Path) -> None:
    """A 44.1 kHz file is resampled to 16 kHz, keeping its duration, pitch and unit count."""
    soundfile.write(tmp_path / "cd.wav", sine(440, 44100, 1.0), 44100, subtype="FLOAT")
    manifest = write_rows(tmp_path / "train.jsonl", [asr_row("cd", "cd.wav")])
    rows = read_manifest(manifest)
    cache = UnitCache(tokenizer, tmp_path / "cache")

    cache.ensure(rows)

    waveform = load_row_audio(rows[0].get("audio"), rows[0], "audio", SAMPLE_RATE)
    spectrum = torch.fft.rfft(waveform).abs()
    assert waveform.shape == (SAMPLE_RATE,)
    assert float(torch.argmax(spectrum)) * SAMPLE_RATE / waveform.numel() == pytest.approx(440, abs=2)
    expected_units = tokenizer.encode(torch.from_numpy(sine(440, SAMPLE_RATE, 1.0)))
    assert cache[rows[0].get("audio")].shape == expected_units.shape


def test_load_row_audio_error(tmp_path: Path) -> None:
    """load_row_audio turns an audio error into DataError with the field and the id."""
    manifest = write_rows(tmp_path / "train.jsonl", [asr_row("x", "missing.wav")])
    row: ManifestRow = read_manifest(manifest)[0]

    with pytest.raises(DataError, match=r"not found.*\(field 'audio' of id x\)") as info:
        load_row_audio(row.get("audio"), row, "audio", SAMPLE_RATE)

    assert f"row 1 of manifest '{manifest}'" in str(info.value)


def test_cache_reloads(tokenizer: MelKMeansTokenizer, tmp_path: Path) -> None:
    """Units saved by one UnitCache are read back by the next one for the same tokenizer."""
    soundfile.write(tmp_path / "a.wav", sine(220, SAMPLE_RATE, 0.5), SAMPLE_RATE)
    rows = read_manifest(write_rows(tmp_path / "train.jsonl", [asr_row("a", "a.wav")]))
    first = UnitCache(tokenizer, tmp_path / "cache")
    first.ensure(rows)

    second = UnitCache(tokenizer, tmp_path / "cache")

    assert second.path == first.path
    assert torch.equal(second[rows[0].get("audio")], first[rows[0].get("audio")])
    assert second[rows[0].get("audio")].dtype == torch.int64
