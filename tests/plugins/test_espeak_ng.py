"""Tests for the espeak-ng speech synthesizer plugin, run against the library in espeakng-loader."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from diffuspeech.interfaces import SpeechSynthesizer
from diffuspeech_plugins.speech_synthesizers.espeak_ng import EspeakNGSynthesizer, get_engine

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
def espeak() -> EspeakNGSynthesizer:
    return EspeakNGSynthesizer()


def test_espeak_is_speech_synthesizer(espeak: EspeakNGSynthesizer) -> None:
    """EspeakNGSynthesizer implements the plugin contract with English default voices."""
    assert isinstance(espeak, SpeechSynthesizer)
    assert EspeakNGSynthesizer.description
    assert espeak.voices == ["en-us", "en-us+f3", "en-us+m3", "en"]


@pytest.mark.parametrize("voice", ["en-us", "en-us+f3", "en-us+m3", "en"])
def test_synthesize_22050_float(espeak: EspeakNGSynthesizer, voice: str) -> None:
    """Each default voice returns float32 mono audio in [-1, 1] at 22,050 Hz."""
    waveform, sample_rate = espeak.synthesize("hello there", voice)

    assert sample_rate == 22050
    assert waveform.dtype == torch.float32
    assert waveform.dim() == 1
    assert waveform.numel() > 0.3 * sample_rate
    assert float(waveform.abs().max()) <= 1.0
    assert float(waveform.abs().max()) > 0.05


def test_engine_initialized_once() -> None:
    """All synthesizers in a process share one espeak-ng engine."""
    first = EspeakNGSynthesizer(voices=["en-us"])
    second = EspeakNGSynthesizer(voices=["en-us+f3"])

    assert get_engine() is get_engine()
    assert first.sample_rate == second.sample_rate == 22050


@pytest.mark.parametrize(
    ("voice", "message"),
    [
        ("xx-nowhere", r"unknown espeak-ng voice 'xx-nowhere'; available voices: .*en-us"),
        ("en-us+nobody", r"unknown espeak-ng voice variant 'nobody'.*available variants: .*f3"),
        ("en-us+", r"unknown espeak-ng voice variant ''"),
        ("+f3", r"unknown espeak-ng voice '\+f3'"),
    ],
)
def test_constructor_rejects_unknown_voice(voice: str, message: str) -> None:
    """Unknown voices and variants raise ValueError naming the available ones."""
    with pytest.raises(ValueError, match=message):
        EspeakNGSynthesizer(voices=[voice])


def test_synthesize_rejects_unlisted_voice(espeak: EspeakNGSynthesizer) -> None:
    """A real espeak-ng voice outside this synthesizer's list is rejected."""
    with pytest.raises(ValueError, match=r"unknown espeak-ng voice 'de'; available voices: en-us, en-us\+f3"):
        espeak.synthesize("hallo", "de")


@pytest.mark.parametrize(
    ("text", "rate", "pitch", "message"),
    [
        ("", 1.0, 1.0, "empty or only whitespace"),
        ("hello", 0.3, 1.0, r"rate 0.3 gives 52 words per minute"),
        ("hello", 6.0, 1.0, r"rate 6.0 gives 1050 words per minute"),
        ("hello", float("nan"), 1.0, "rate must be a positive finite number"),
        ("hello", 1.0, 0.4, "pitch must be a number from 0.5 to 2.0"),
        ("hello", 1.0, 2.5, "pitch must be a number from 0.5 to 2.0"),
    ],
)
def test_synthesize_rejects_invalid(
    espeak: EspeakNGSynthesizer, text: str, rate: float, pitch: float, message: str
) -> None:
    """Empty text and out-of-range rate or pitch raise ValueError."""
    with pytest.raises(ValueError, match=message):
        espeak.synthesize(text, "en-us", rate=rate, pitch=pitch)


@pytest.mark.parametrize("rate", [0.8, 2.0])
def test_rate_scales_duration(espeak: EspeakNGSynthesizer, rate: float) -> None:
    """rate r makes speech about r times shorter."""
    normal, _ = espeak.synthesize(SENTENCE, "en-us")
    scaled, _ = espeak.synthesize(SENTENCE, "en-us", rate=rate)

    assert scaled.numel() / normal.numel() == pytest.approx(1 / rate, rel=0.06)


@pytest.mark.parametrize("voice", ["en-us", "en-us+f3"])
def test_pitch_moves_f0(espeak: EspeakNGSynthesizer, voice: str) -> None:
    """pitch 1.25 raises and 0.8 lowers the median F0, by at least 12%."""
    normal, sample_rate = espeak.synthesize(SENTENCE, voice)
    higher, _ = espeak.synthesize(SENTENCE, voice, pitch=1.25)
    lower, _ = espeak.synthesize(SENTENCE, voice, pitch=0.8)

    base = median_f0(normal, sample_rate)
    assert median_f0(higher, sample_rate) / base > 1.12
    assert median_f0(lower, sample_rate) / base < 0.88


def test_threads_take_turns(espeak: EspeakNGSynthesizer) -> None:
    """Calls from several threads each get their own complete utterance."""
    texts = ["one", "two three four", "five six seven eight nine ten"] * 2
    expected = [espeak.synthesize(text, "en-us")[0].numel() for text in texts]

    with ThreadPoolExecutor(max_workers=3) as pool:
        lengths = list(pool.map(lambda text: espeak.synthesize(text, "en-us")[0].numel(), texts))

    # The wave generator keeps a little state between utterances, so lengths may differ by a few samples.
    assert lengths == pytest.approx(expected, abs=50)
