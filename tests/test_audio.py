"""Tests for diffuspeech.audio: reading, converting and writing audio files."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from diffuspeech.audio import AudioError, load_audio, read_audio, save_audio


def sine(frequency: float, sample_rate: int, seconds: float, amplitude: float = 0.5) -> np.ndarray:
    """Return a float32 sine wave (samples,)."""
    time = np.arange(int(sample_rate * seconds)) / sample_rate
    return (amplitude * np.sin(2 * math.pi * frequency * time)).astype(np.float32)


def peak_frequency(waveform: torch.Tensor, sample_rate: int) -> float:
    """Return the frequency in Hz of the largest FFT magnitude."""
    spectrum = torch.fft.rfft(waveform).abs()
    return float(torch.argmax(spectrum)) * sample_rate / waveform.numel()


def write_missing(path: Path) -> None:
    """Create nothing, so that ``path`` does not exist."""


def write_empty(path: Path) -> None:
    path.write_bytes(b"")


def write_garbage(path: Path) -> None:
    path.write_bytes(b"these bytes are not audio in any format " * 8)


def write_zero_samples(path: Path) -> None:
    soundfile.write(path, np.zeros(0, dtype=np.float32), 16000)


def write_nan_samples(path: Path) -> None:
    samples = sine(440, 16000, 0.1)
    samples[10] = np.nan
    soundfile.write(path, samples, 16000, subtype="FLOAT")


BAD_FILES: list[tuple[Callable[[Path], None], str]] = [
    (write_missing, "not found"),
    (write_empty, r"is empty \(0 bytes\)"),
    (write_garbage, "could not be decoded"),
    (write_zero_samples, "contains no samples"),
    (write_nan_samples, "NaN or infinite"),
]


def test_load_audio_mono_unchanged(tmp_path: Path) -> None:
    """A mono file at the requested rate comes back sample for sample."""
    samples = sine(440, 16000, 0.5)
    path = tmp_path / "mono.wav"
    soundfile.write(path, samples, 16000, subtype="FLOAT")

    waveform = load_audio(path, 16000)

    assert waveform.dtype == torch.float32
    assert waveform.shape == (8000,)
    assert torch.allclose(waveform, torch.from_numpy(samples))


def test_load_audio_downmixes_stereo(tmp_path: Path) -> None:
    """Stereo channels are averaged into one."""
    left = np.full(1600, 0.5, dtype=np.float32)
    right = np.full(1600, -0.1, dtype=np.float32)
    path = tmp_path / "stereo.wav"
    soundfile.write(path, np.stack([left, right], axis=1), 16000, subtype="FLOAT")

    waveform = load_audio(path, 16000)

    assert waveform.shape == (1600,)
    assert torch.allclose(waveform, torch.full((1600,), 0.2))


def test_load_audio_downmixes_six_channels(tmp_path: Path) -> None:
    """A 5.1 file is averaged over all six channels."""
    channels = np.stack([np.full(800, value, dtype=np.float32) for value in (0.6, 0.0, 0.0, 0.0, 0.0, 0.0)], 1)
    path = tmp_path / "surround.wav"
    soundfile.write(path, channels, 16000, subtype="FLOAT")

    waveform = load_audio(path, 16000)

    assert torch.allclose(waveform, torch.full((800,), 0.1))


def test_load_audio_resamples_44100(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A 44.1 kHz file is resampled to 16 kHz, keeps its pitch and logs a debug line."""
    path = tmp_path / "cd.wav"
    soundfile.write(path, sine(1000, 44100, 1.0), 44100)

    with caplog.at_level(logging.DEBUG, logger="diffuspeech.audio"):
        waveform = load_audio(path, 16000)

    assert waveform.shape == (16000,)
    assert waveform.dtype == torch.float32
    assert peak_frequency(waveform, 16000) == pytest.approx(1000, abs=2)
    assert "from 44100 Hz to 16000 Hz" in caplog.text


def test_read_audio_keeps_native_rate(tmp_path: Path) -> None:
    """read_audio returns the file's own sample rate without resampling."""
    path = tmp_path / "phone.wav"
    soundfile.write(path, sine(300, 8000, 0.25), 8000)

    waveform, sample_rate = read_audio(path)

    assert sample_rate == 8000
    assert waveform.shape == (2000,)


@pytest.mark.parametrize(("make_file", "reason"), BAD_FILES, ids=[case[0].__name__ for case in BAD_FILES])
def test_load_audio_bad_file_names_row(tmp_path: Path, make_file: Callable[[Path], None], reason: str) -> None:
    """Each kind of bad file raises AudioError naming the file, manifest and row."""
    path = tmp_path / "clip.wav"
    make_file(path)
    manifest = tmp_path / "train.jsonl"

    with pytest.raises(AudioError, match=reason) as caught:
        load_audio(path, 16000, row=7, manifest=manifest)

    message = str(caught.value)
    assert str(path) in message
    assert f"row 7 of manifest '{manifest}'" in message


@pytest.mark.parametrize(("make_file", "reason"), BAD_FILES, ids=[case[0].__name__ for case in BAD_FILES])
def test_load_audio_bad_file_without_manifest(tmp_path: Path, make_file: Callable[[Path], None], reason: str) -> None:
    """Without a manifest the message names the file and no row."""
    path = tmp_path / "clip.wav"
    make_file(path)

    with pytest.raises(AudioError, match=reason) as caught:
        load_audio(path, 16000)

    assert str(path) in str(caught.value)
    assert "row" not in str(caught.value)


def test_audio_error_is_value_error() -> None:
    """AudioError can be caught as ValueError."""
    assert issubclass(AudioError, ValueError)


def test_garbage_error_chains_soundfile(tmp_path: Path) -> None:
    """The libsndfile error stays attached as the cause."""
    path = tmp_path / "garbage.wav"
    write_garbage(path)

    with pytest.raises(AudioError) as caught:
        load_audio(path, 16000)

    assert isinstance(caught.value.__cause__, soundfile.SoundFileError)


def test_load_audio_directory_rejected(tmp_path: Path) -> None:
    """A directory path raises AudioError."""
    with pytest.raises(AudioError, match="is a directory"):
        load_audio(tmp_path, 16000, row=2)


@pytest.mark.parametrize("sample_rate", [0, -16000, 16000.0, True])
def test_load_audio_invalid_sample_rate(tmp_path: Path, sample_rate: object) -> None:
    """A sample rate that is not a positive int raises ValueError naming it."""
    path = tmp_path / "ok.wav"
    soundfile.write(path, sine(440, 16000, 0.1), 16000)

    with pytest.raises(ValueError, match="sample_rate must be a positive integer"):
        load_audio(path, sample_rate)  # type: ignore[arg-type]


def test_save_audio_round_trip(tmp_path: Path) -> None:
    """save_audio writes 16-bit PCM WAV that loads back within one quantization step."""
    waveform = torch.from_numpy(sine(440, 16000, 0.5))
    path = tmp_path / "nested" / "folders" / "clip.wav"

    save_audio(path, waveform, 16000)

    info = soundfile.info(path)
    assert info.format == "WAV"
    assert info.subtype == "PCM_16"
    assert info.samplerate == 16000
    assert info.channels == 1
    assert torch.allclose(load_audio(path, 16000), waveform, atol=1 / 32767)


def test_save_audio_clips_out_of_range(tmp_path: Path) -> None:
    """Values beyond [-1, 1] are clipped instead of wrapping around."""
    path = tmp_path / "loud.wav"

    save_audio(path, torch.tensor([2.0, -3.0, 0.5]), 16000)

    samples, _ = soundfile.read(path, dtype="int16")
    assert samples.tolist() == [32767, -32767, 16384]


def test_save_audio_replaces_without_leftovers(tmp_path: Path) -> None:
    """Saving over a file replaces it and leaves no temporary file behind."""
    path = tmp_path / "clip.wav"
    save_audio(path, torch.zeros(100), 16000)

    save_audio(path, torch.full((50,), 0.25), 8000)

    assert [entry.name for entry in tmp_path.iterdir()] == ["clip.wav"]
    waveform, sample_rate = read_audio(path)
    assert sample_rate == 8000
    assert waveform.shape == (50,)


@pytest.mark.parametrize(
    ("name", "waveform", "sample_rate", "message"),
    [
        ("clip.flac", torch.zeros(10), 16000, r"must end in \.wav"),
        ("clip.wav", torch.zeros(2, 10), 16000, r"shape \(samples,\)"),
        ("clip.wav", torch.tensor([0.0, float("nan")]), 16000, "NaN or infinite"),
        ("clip.wav", torch.zeros(10), 0, "sample_rate must be a positive integer"),
    ],
)
def test_save_audio_rejects_invalid(
    tmp_path: Path, name: str, waveform: torch.Tensor, sample_rate: int, message: str
) -> None:
    """Invalid paths, shapes, values and rates raise ValueError and write nothing."""
    with pytest.raises(ValueError, match=message):
        save_audio(tmp_path / name, waveform, sample_rate)

    assert list(tmp_path.iterdir()) == []


def test_error_without_manifest_omits_it(tmp_path: Path) -> None:
    path = tmp_path / "empty.wav"
    path.write_bytes(b"")
    with pytest.raises(AudioError) as alone:
        read_audio(path)
    assert "drop it from the manifest" not in str(alone.value)
    with pytest.raises(AudioError) as listed:
        read_audio(path, row=3, manifest=tmp_path / "train.jsonl")
    assert "drop it from the manifest" in str(listed.value)
