"""Tests for the flite speech synthesizer plugin, run against the installed flite program."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from diffuspeech.interfaces import SpeechSynthesizer
from diffuspeech_plugins.speech_synthesizers.flite import FliteSynthesizer

needs_flite = pytest.mark.skipif(
    shutil.which("flite") is None, reason="the flite program is not installed (apt-get install flite)"
)

SENTENCE = "what is seven plus five. the quick brown fox jumps over the lazy dog"


def median_f0(waveform: torch.Tensor, sample_rate: int) -> float:
    """Estimate the median F0 in Hz of the voiced 40 ms frames, by autocorrelation (60 to 400 Hz)."""
    samples = waveform.double().numpy()
    frame, hop = int(0.04 * sample_rate), int(0.01 * sample_rate)
    shortest_lag, longest_lag = sample_rate // 400, sample_rate // 60
    loud = 1e-4 * frame * float(np.max(samples**2))
    estimates = []
    for start in range(0, len(samples) - frame, hop):
        window = samples[start : start + frame] - samples[start : start + frame].mean()
        if float((window**2).sum()) < loud:
            continue
        correlation = np.correlate(window, window, "full")[frame - 1 :]
        lag = shortest_lag + int(np.argmax(correlation[shortest_lag:longest_lag]))
        if correlation[lag] > 0.5 * correlation[0]:
            estimates.append(sample_rate / lag)
    return float(np.median(estimates))


@pytest.fixture(scope="module")
def flite() -> FliteSynthesizer:
    return FliteSynthesizer(voices=["awb", "kal16", "rms", "slt", "kal"])


def test_missing_binary_names_install_command() -> None:
    """A flite binary that cannot be found raises with the apt-get command."""
    with pytest.raises(FileNotFoundError, match=r"flite is not installed: run `apt-get install flite`"):
        FliteSynthesizer(binary="/nonexistent/bin/flite")


@needs_flite
def test_flite_is_speech_synthesizer() -> None:
    """FliteSynthesizer implements the plugin contract with a description."""
    synthesizer = FliteSynthesizer()

    assert isinstance(synthesizer, SpeechSynthesizer)
    assert FliteSynthesizer.description
    assert synthesizer.voices == ["awb", "kal16", "rms", "slt"]


@needs_flite
@pytest.mark.parametrize(
    ("voice", "sample_rate"),
    [("awb", 16000), ("kal16", 16000), ("rms", 16000), ("slt", 16000), ("kal", 8000)],
)
def test_synthesize_native_rate(flite: FliteSynthesizer, voice: str, sample_rate: int) -> None:
    """Each voice returns float32 mono audio in [-1, 1] at its own rate."""
    waveform, rate = flite.synthesize("hello there", voice)

    assert rate == sample_rate
    assert waveform.dtype == torch.float32
    assert waveform.dim() == 1
    assert waveform.numel() > 0.3 * sample_rate
    assert float(waveform.abs().max()) <= 1.0
    assert float(waveform.abs().max()) > 0.05


@needs_flite
def test_unknown_voice_lists_available(flite: FliteSynthesizer) -> None:
    """synthesize with an unknown voice names the available ones."""
    with pytest.raises(ValueError, match=r"unknown flite voice 'nobody'.*awb, kal16, rms, slt, kal"):
        flite.synthesize("hello", "nobody")


@needs_flite
def test_constructor_rejects_uninstalled_voice() -> None:
    """Asking for a voice flite lacks raises naming the voices flite has."""
    with pytest.raises(ValueError, match=r"no voice 'nobody'.*available voices: .*slt"):
        FliteSynthesizer(voices=["awb", "nobody"])


@needs_flite
@pytest.mark.parametrize(
    ("text", "rate", "pitch", "message"),
    [
        ("  ", 1.0, 1.0, "empty or only whitespace"),
        ("hello", 0.0, 1.0, "rate must be a positive finite number"),
        ("hello", float("inf"), 1.0, "rate must be a positive finite number"),
        ("hello", 1.0, -1.0, "pitch must be a positive finite number"),
    ],
)
def test_synthesize_rejects_invalid(
    flite: FliteSynthesizer, text: str, rate: float, pitch: float, message: str
) -> None:
    """Empty text and non-positive rate or pitch raise ValueError."""
    with pytest.raises(ValueError, match=message):
        flite.synthesize(text, "awb", rate=rate, pitch=pitch)


@needs_flite
@pytest.mark.parametrize("voice", ["awb", "kal16", "rms"])
def test_rate_scales_duration(flite: FliteSynthesizer, voice: str) -> None:
    """rate 1.25 makes speech 1.25 times shorter, relative to the voice's own speed."""
    normal, _ = flite.synthesize(SENTENCE, voice)
    fast, _ = flite.synthesize(SENTENCE, voice, rate=1.25)

    assert fast.numel() / normal.numel() == pytest.approx(0.8, abs=0.03)


@needs_flite
@pytest.mark.parametrize("voice", ["awb", "slt", "rms"])
@pytest.mark.parametrize("pitch", [0.8, 1.25])
def test_pitch_scales_f0(flite: FliteSynthesizer, voice: str, pitch: float) -> None:
    """pitch scales the median F0 and leaves the duration alone, for rms too."""
    normal, sample_rate = flite.synthesize(SENTENCE, voice)
    shifted, _ = flite.synthesize(SENTENCE, voice, pitch=pitch)

    ratio = median_f0(shifted, sample_rate) / median_f0(normal, sample_rate)
    assert ratio == pytest.approx(pitch, rel=0.05)
    assert shifted.numel() / normal.numel() == pytest.approx(1.0, abs=0.02)


@needs_flite
def test_text_with_leading_dash(flite: FliteSynthesizer) -> None:
    """Text that looks like a command-line option is spoken, not parsed."""
    waveform, _ = flite.synthesize("-voice slt minus five", "awb")

    assert waveform.numel() > 8000
