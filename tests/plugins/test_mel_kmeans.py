"""Tests for the mel k-means speech tokenizer on flite speech."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio

from diffuspeech_plugins.speech_tokenizers.mel_kmeans import MelKMeansTokenizer, _reservoir_add

SAMPLE_RATE = 16000
NUM_UNITS = 16
SENTENCES = [
    ("awb", "what is seven plus five"),
    ("awb", "seven plus five is twelve"),
    ("slt", "what is three plus nine"),
    ("rms", "nine plus three is twelve"),
]


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
    """Four short flite utterances at 16 kHz."""
    directory = tmp_path_factory.mktemp("flite")
    return [speak(text, voice, directory / f"{index}.wav") for index, (voice, text) in enumerate(SENTENCES)]


@pytest.fixture(scope="module")
def tokenizer(waveforms: list[torch.Tensor]) -> MelKMeansTokenizer:
    """A 16-unit tokenizer fitted on the flite utterances."""
    fitted = MelKMeansTokenizer(num_units=NUM_UNITS)
    fitted.fit(waveforms)
    return fitted


def test_encode_dtype_shape_range(tokenizer: MelKMeansTokenizer, waveforms: list[torch.Tensor]) -> None:
    """Encode returns int64 (frames,) units below num_units."""
    units = tokenizer.encode(waveforms[0])
    assert units.dtype == torch.int64
    assert units.dim() == 1
    assert int(units.min()) >= 0
    assert int(units.max()) < NUM_UNITS


@pytest.mark.parametrize("stack", [1, 2, 3])
def test_frame_count_matches_duration(waveforms: list[torch.Tensor], stack: int) -> None:
    """Unit count follows the documented formula and the duration."""
    tokenizer = MelKMeansTokenizer(num_units=NUM_UNITS, stack=stack)
    tokenizer.fit(waveforms)
    waveform = waveforms[1]
    units = tokenizer.encode(waveform)
    assert tokenizer.frame_rate == pytest.approx(100.0 / stack)
    assert units.numel() == (waveform.numel() // 160 + 1) // stack
    duration = waveform.numel() / SAMPLE_RATE
    # Centred frames add one frame at the end, so the count may exceed the duration by one unit.
    assert abs(units.numel() / tokenizer.frame_rate - duration) <= 1.0 / tokenizer.frame_rate + 1e-9


def test_encode_equals_nearest_centroid(tokenizer: MelKMeansTokenizer, waveforms: list[torch.Tensor]) -> None:
    """Each unit is the centroid nearest to its stacked log-mel vector."""
    log_mels = tokenizer.log_mels(waveforms[2]).double()
    count = log_mels.shape[0] // 2
    vectors = log_mels[: count * 2].reshape(count, 2 * 80)
    centroids = tokenizer.state_dict()["centroids"].double()
    distances = ((vectors[:, None, :] - centroids[None, :, :]) ** 2).sum(dim=-1)
    assert torch.equal(tokenizer.encode(waveforms[2]), distances.argmin(dim=1))


def test_mel_spec_reproduces_fbank(tokenizer: MelKMeansTokenizer, waveforms: list[torch.Tensor]) -> None:
    """MelSpec rebuilds the Fbank log-mels from a plain STFT."""
    spec = tokenizer.mel_spec
    waveform = waveforms[0]
    stft = torch.stft(
        waveform,
        spec.n_fft,
        spec.hop_length,
        spec.win_length,
        spec.window_tensor(),
        center=True,
        pad_mode="constant",
        return_complex=True,
    )
    mel_power = stft.abs().pow(spec.power).T @ spec.filterbank()
    log_mels = spec.db_multiplier * torch.log10(mel_power.clamp(min=spec.amin))
    log_mels = torch.maximum(log_mels, log_mels.max() - spec.top_db)
    torch.testing.assert_close(log_mels, tokenizer.log_mels(waveform), atol=1e-3, rtol=0.0)


def test_unit_log_mels_shape_and_mean(waveforms: list[torch.Tensor]) -> None:
    """Unit log-mels reshape the centroids and add back the corpus mean."""
    plain = MelKMeansTokenizer(num_units=NUM_UNITS, stack=2)
    plain.fit(waveforms)
    normalized = MelKMeansTokenizer(num_units=NUM_UNITS, stack=2, normalization="utterance")
    normalized.fit(waveforms)
    for fitted in (plain, normalized):
        assert fitted.unit_log_mels().shape == (NUM_UNITS, 2, 80)
    torch.testing.assert_close(plain.unit_log_mels().reshape(NUM_UNITS, -1), plain.state_dict()["centroids"])
    state = normalized.state_dict()
    expected = state["centroids"].reshape(NUM_UNITS, 2, 80) + state["global_mean"]
    torch.testing.assert_close(normalized.unit_log_mels(), expected)
    corpus_mean = torch.cat([plain.log_mels(waveform) for waveform in waveforms]).mean(dim=0)
    torch.testing.assert_close(state["global_mean"], corpus_mean, atol=1e-3, rtol=0.0)


def test_utterance_normalization_ignores_gain(waveforms: list[torch.Tensor]) -> None:
    """Utterance normalization gives the same units at half the gain."""
    tokenizer = MelKMeansTokenizer(num_units=NUM_UNITS, normalization="utterance")
    tokenizer.fit(waveforms)
    units = tokenizer.encode(waveforms[3])
    quieter = tokenizer.encode(0.5 * waveforms[3])
    assert (units == quieter).float().mean() >= 0.95


def test_state_dict_round_trip(tokenizer: MelKMeansTokenizer, waveforms: list[torch.Tensor]) -> None:
    """A tokenizer loaded from state_dict encodes identically."""
    restored = MelKMeansTokenizer(num_units=NUM_UNITS)
    assert not restored.is_fitted()
    restored.load_state_dict(tokenizer.state_dict())
    assert restored.is_fitted()
    assert torch.equal(restored.encode(waveforms[0]), tokenizer.encode(waveforms[0]))
    assert torch.equal(restored.unit_log_mels(), tokenizer.unit_log_mels())


@pytest.mark.parametrize("shape", [(NUM_UNITS + 1, 160), (NUM_UNITS, 80), (NUM_UNITS * 160,)])
def test_load_rejects_wrong_centroid_shape(tokenizer: MelKMeansTokenizer, shape: tuple[int, ...]) -> None:
    """Loading centroids of the wrong shape names both shapes."""
    state = tokenizer.state_dict()
    state["centroids"] = torch.zeros(shape)
    restored = MelKMeansTokenizer(num_units=NUM_UNITS)
    with pytest.raises(ValueError, match=rf"shape \({shape[0]},.*expected \({NUM_UNITS}, 160\)"):
        restored.load_state_dict(state)
    assert not restored.is_fitted()


def test_load_rejects_missing_key(tokenizer: MelKMeansTokenizer) -> None:
    """Loading a state without global_mean names the missing key."""
    state = tokenizer.state_dict()
    del state["global_mean"]
    with pytest.raises(ValueError, match="missing keys \\['global_mean'\\]"):
        MelKMeansTokenizer(num_units=NUM_UNITS).load_state_dict(state)


def test_unfitted_state_dict_is_empty() -> None:
    """An unfitted tokenizer saves and restores an empty state."""
    tokenizer = MelKMeansTokenizer(num_units=NUM_UNITS)
    assert tokenizer.state_dict() == {}
    tokenizer.load_state_dict({})
    assert not tokenizer.is_fitted()


def test_encode_before_fit_raises(waveforms: list[torch.Tensor]) -> None:
    """Encoding before fit raises an error that names fit."""
    tokenizer = MelKMeansTokenizer(num_units=NUM_UNITS)
    with pytest.raises(RuntimeError, match="call fit"):
        tokenizer.encode(waveforms[0])
    with pytest.raises(RuntimeError, match="call fit"):
        tokenizer.unit_log_mels()


def test_fit_with_too_little_audio(waveforms: list[torch.Tensor]) -> None:
    """Fitting more units than stacked frames is rejected."""
    tokenizer = MelKMeansTokenizer(num_units=4096)
    with pytest.raises(ValueError, match="fewer than num_units=4096"):
        tokenizer.fit(waveforms[:1])


def test_fit_subsamples_to_max_fit_frames(waveforms: list[torch.Tensor]) -> None:
    """Fitting with a small max_fit_frames still yields a full codebook."""
    tokenizer = MelKMeansTokenizer(num_units=NUM_UNITS, max_fit_frames=NUM_UNITS * 3)
    tokenizer.fit(waveforms)
    assert tokenizer.state_dict()["centroids"].shape == (NUM_UNITS, 160)


def test_reservoir_keeps_distinct_rows() -> None:
    """The reservoir contains distinct stream rows and is seeded."""
    stream = torch.arange(1000, dtype=torch.float32).unsqueeze(1)
    samples = []
    for _ in range(2):
        sample = torch.full((50, 1), -1.0)
        generator = torch.Generator().manual_seed(3)
        seen = 0
        for chunk in stream.split(77):
            seen = _reservoir_add(sample, seen, chunk, generator)
        samples.append(sample)
    assert seen == 1000
    values = samples[0].squeeze(1).long()
    assert values.unique().numel() == 50
    assert int(values.min()) >= 0
    assert int(values.max()) >= 50
    assert torch.equal(samples[0], samples[1])


def test_reservoir_is_roughly_uniform() -> None:
    """Each stream row is kept with probability close to capacity / count."""
    generator = torch.Generator().manual_seed(0)
    keep_counts = np.zeros(200)
    for _ in range(300):
        sample = torch.empty(20, 1)
        seen = 0
        for chunk in torch.arange(200, dtype=torch.float32).unsqueeze(1).split(30):
            seen = _reservoir_add(sample, seen, chunk, generator)
        keep_counts[sample.squeeze(1).long().numpy()] += 1
    first_half, second_half = keep_counts[:100].mean() / 300, keep_counts[100:].mean() / 300
    assert first_half == pytest.approx(0.1, abs=0.02)
    assert second_half == pytest.approx(0.1, abs=0.02)


@pytest.mark.parametrize("samples", [0, 100, 320])
def test_encode_short_waveform(tokenizer: MelKMeansTokenizer, samples: int) -> None:
    """Very short waveforms drop their partial stack (0, 100 and 320 samples give 0, 0 and 1 unit)."""
    units = tokenizer.encode(torch.zeros(samples))
    assert units.dtype == torch.int64
    assert units.shape == ((samples // 160 + 1) // 2,)


def test_encode_rejects_batched_input(tokenizer: MelKMeansTokenizer) -> None:
    """A 2-D waveform is rejected with its shape."""
    with pytest.raises(ValueError, match=r"shape \(2, 1600\)"):
        tokenizer.encode(torch.zeros(2, 1600))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"normalization": "global"}, "normalization must be one of"),
        ({"stack": 0}, "stack must be a positive integer"),
        (
            {"num_units": 64, "max_fit_frames": 10},
            "max_fit_frames \\(10\\) must be at least num_units \\(64\\)",
        ),
    ],
)
def test_constructor_rejects_invalid_settings(kwargs: dict[str, object], message: str) -> None:
    """Invalid settings are rejected with the value named."""
    with pytest.raises(ValueError, match=message):
        MelKMeansTokenizer(**kwargs)  # type: ignore[arg-type]
