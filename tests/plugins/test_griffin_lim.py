"""Tests for the Griffin-Lim vocoder over a fitted mel k-means tokenizer."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import soundfile as sf
import torch
import torchaudio

from diffuspeech.interfaces.speech_tokenizer import SpeechTokenizer
from diffuspeech_plugins.speech_tokenizers.mel_kmeans import MelKMeansTokenizer
from diffuspeech_plugins.vocoders.griffin_lim import GriffinLimVocoder

SAMPLE_RATE = 16000
NUM_UNITS = 16
SENTENCES = [
    ("awb", "what is seven plus five"),
    ("awb", "seven plus five is twelve"),
    ("slt", "what is three plus nine"),
]


class FrameEnergyTokenizer(SpeechTokenizer):
    """A tokenizer with no centroid log-mels: unit 1 for loud 20 ms frames, 0 otherwise."""

    sample_rate = SAMPLE_RATE
    frame_rate = 50.0
    num_units = NUM_UNITS

    def encode(self, waveform: torch.Tensor) -> torch.Tensor:
        """Return 1 where a 320-sample frame's RMS exceeds 0.01, else 0."""
        frames = waveform[: waveform.numel() // 320 * 320].reshape(-1, 320)
        return (frames.pow(2).mean(dim=1).sqrt() > 0.01).long()


def speak(text: str, voice: str, path: Path) -> torch.Tensor:
    """Synthesize ``text`` with flite and return a float32 (samples,) waveform at 16 kHz."""
    subprocess.run(["flite", "-voice", voice, "-t", text, "-o", str(path)], check=True)
    samples, rate = sf.read(path, dtype="float32")
    waveform = torch.from_numpy(samples)
    if rate != SAMPLE_RATE:
        waveform = torchaudio.functional.resample(waveform, rate, SAMPLE_RATE)
    return waveform


@pytest.fixture(scope="module")
def waveforms(tmp_path_factory: pytest.TempPathFactory) -> list[torch.Tensor]:
    """Three short flite utterances at 16 kHz."""
    directory = tmp_path_factory.mktemp("flite")
    return [speak(text, voice, directory / f"{index}.wav") for index, (voice, text) in enumerate(SENTENCES)]


@pytest.fixture(scope="module")
def tokenizer(waveforms: list[torch.Tensor]) -> MelKMeansTokenizer:
    """A 16-unit tokenizer fitted on the flite utterances."""
    fitted = MelKMeansTokenizer(num_units=NUM_UNITS)
    fitted.fit(waveforms)
    return fitted


@pytest.fixture
def vocoder(tokenizer: MelKMeansTokenizer) -> GriffinLimVocoder:
    """A vocoder attached to the fitted tokenizer."""
    attached = GriffinLimVocoder(num_units=NUM_UNITS, frame_rate=tokenizer.frame_rate, n_iter=8)
    attached.attach(tokenizer)
    return attached


@pytest.mark.parametrize("frames", [1, 7, 50])
def test_decode_length_dtype_peak(vocoder: GriffinLimVocoder, frames: int) -> None:
    """Decode returns frames / frame_rate seconds of float32 audio peaking at 0.9."""
    units = torch.arange(frames) % NUM_UNITS
    waveform = vocoder.decode(units)
    assert waveform.dtype == torch.float32
    assert waveform.shape == (round(frames / vocoder.frame_rate * SAMPLE_RATE),)
    assert float(waveform.abs().max()) == pytest.approx(0.9, abs=1e-4)


def test_round_trip_keeps_duration(
    tokenizer: MelKMeansTokenizer, vocoder: GriffinLimVocoder, waveforms: list[torch.Tensor]
) -> None:
    """Encode then decode keeps the duration to within one unit."""
    waveform = waveforms[1]
    decoded = vocoder.decode(tokenizer.encode(waveform))
    assert abs(decoded.numel() - waveform.numel()) <= SAMPLE_RATE / tokenizer.frame_rate


def test_round_trip_re_encodes_to_same_units(
    tokenizer: MelKMeansTokenizer, vocoder: GriffinLimVocoder, waveforms: list[torch.Tensor]
) -> None:
    """Re-encoding the decoded audio recovers most units."""
    units = tokenizer.encode(waveforms[0])
    again = tokenizer.encode(vocoder.decode(units))
    agreement = (again[: units.numel()] == units[: again.numel()]).float().mean()
    assert agreement >= 0.6


def test_round_trip_with_utterance_normalization(waveforms: list[torch.Tensor]) -> None:
    """Utterance-normalized units decode to audio that re-encodes consistently."""
    tokenizer = MelKMeansTokenizer(num_units=NUM_UNITS, normalization="utterance")
    tokenizer.fit(waveforms)
    vocoder = GriffinLimVocoder(num_units=NUM_UNITS, frame_rate=tokenizer.frame_rate, n_iter=8)
    vocoder.attach(tokenizer)
    units = tokenizer.encode(waveforms[2])
    again = tokenizer.encode(vocoder.decode(units))
    assert (again[: units.numel()] == units[: again.numel()]).float().mean() >= 0.6


def test_decode_is_deterministic(vocoder: GriffinLimVocoder) -> None:
    """Decoding the same units twice gives the same waveform."""
    units = torch.tensor([3, 3, 5, 8, 8, 1])
    assert torch.equal(vocoder.decode(units), vocoder.decode(units))


def test_decode_keeps_global_random_state(vocoder: GriffinLimVocoder) -> None:
    """Decoding leaves torch's global random state unchanged."""
    state = torch.get_rng_state()
    vocoder.decode(torch.tensor([2, 4, 6]))
    assert torch.equal(torch.get_rng_state(), state)


def test_decode_empty_units(vocoder: GriffinLimVocoder) -> None:
    """No units decode to an empty float32 waveform."""
    waveform = vocoder.decode(torch.zeros(0, dtype=torch.int64))
    assert waveform.shape == (0,)
    assert waveform.dtype == torch.float32


def test_decode_before_attach_raises() -> None:
    """Decoding before attach raises an error that names attach."""
    vocoder = GriffinLimVocoder(num_units=NUM_UNITS, frame_rate=50.0)
    with pytest.raises(RuntimeError, match=r"call attach\(speech_tokenizer\)"):
        vocoder.decode(torch.tensor([1, 2, 3]))


@pytest.mark.parametrize(
    ("units", "message"),
    [
        (torch.tensor([0, NUM_UNITS]), rf"in \[0, {NUM_UNITS}\), got values from 0 to {NUM_UNITS}"),
        (torch.tensor([-1, 2]), "got values from -1 to 2"),
        (torch.tensor([0.0, 1.0]), "integer tensor"),
        (torch.zeros(2, 3, dtype=torch.int64), r"shape \(frames,\), got shape \(2, 3\)"),
    ],
)
def test_decode_rejects_invalid_units(vocoder: GriffinLimVocoder, units: torch.Tensor, message: str) -> None:
    """Out-of-range, float and batched units are rejected."""
    with pytest.raises(ValueError, match=message):
        vocoder.decode(units)


def test_attach_rejects_mismatched_num_units(tokenizer: MelKMeansTokenizer) -> None:
    """Attaching a tokenizer with other num_units names both values."""
    vocoder = GriffinLimVocoder(num_units=32, frame_rate=50.0)
    with pytest.raises(ValueError, match="num_units differ: vocoder has 32, MelKMeansTokenizer has 16"):
        vocoder.attach(tokenizer)


def test_attach_rejects_mismatched_frame_rate(tokenizer: MelKMeansTokenizer) -> None:
    """Attaching a tokenizer with another frame rate names both values."""
    vocoder = GriffinLimVocoder(num_units=NUM_UNITS, frame_rate=100.0)
    with pytest.raises(ValueError, match=r"vocoder has 100\.0 Hz, MelKMeansTokenizer has 50\.0 Hz"):
        vocoder.attach(tokenizer)


def test_attach_rejects_mismatched_sample_rate(tokenizer: MelKMeansTokenizer) -> None:
    """Attaching a tokenizer with another sample rate names both values."""
    vocoder = GriffinLimVocoder(num_units=NUM_UNITS, frame_rate=50.0, sample_rate=22050)
    with pytest.raises(ValueError, match="vocoder has 22050 Hz, MelKMeansTokenizer has 16000 Hz"):
        vocoder.attach(tokenizer)


def test_attach_rejects_unfitted_tokenizer() -> None:
    """Attaching an unfitted tokenizer raises an error that names fit."""
    vocoder = GriffinLimVocoder(num_units=NUM_UNITS, frame_rate=50.0)
    with pytest.raises(ValueError, match="not fitted"):
        vocoder.attach(MelKMeansTokenizer(num_units=NUM_UNITS))


def test_attach_rejects_tokenizer_without_log_mels() -> None:
    """Attaching a tokenizer without unit_log_mels names its class."""
    vocoder = GriffinLimVocoder(num_units=NUM_UNITS, frame_rate=50.0)
    with pytest.raises(TypeError, match="got FrameEnergyTokenizer"):
        vocoder.attach(FrameEnergyTokenizer())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"smoothing": 2}, "smoothing must be an odd number"),
        ({"momentum": 1.0}, r"momentum must be in \[0, 1\)"),
        ({"n_iter": 0}, "n_iter must be a positive integer"),
        ({"frame_rate": 0.0}, "frame_rate must be positive"),
    ],
)
def test_constructor_rejects_invalid_settings(kwargs: dict[str, float], message: str) -> None:
    """Invalid settings are rejected with the value named."""
    settings: dict[str, float] = {"num_units": NUM_UNITS, "frame_rate": 50.0, **kwargs}
    with pytest.raises(ValueError, match=message):
        GriffinLimVocoder(**settings)  # type: ignore[arg-type]


def test_smoothing_keeps_length(tokenizer: MelKMeansTokenizer, waveforms: list[torch.Tensor]) -> None:
    """Smoothing over three frames keeps the output length."""
    vocoder = GriffinLimVocoder(num_units=NUM_UNITS, frame_rate=tokenizer.frame_rate, n_iter=8, smoothing=3)
    vocoder.attach(tokenizer)
    units = tokenizer.encode(waveforms[0])
    assert vocoder.decode(units).numel() == units.numel() * 320
