"""Vocoder that renders k-means mel units with Griffin-Lim phase reconstruction."""

from __future__ import annotations

import logging
import math
from typing import ClassVar

import torch
import torchaudio

from diffuspeech.interfaces.speech_tokenizer import SpeechTokenizer
from diffuspeech.interfaces.vocoder import Vocoder
from diffuspeech_plugins.speech_tokenizers.mel_kmeans import MelSpec

log = logging.getLogger(__name__)


class GriffinLimVocoder(Vocoder):
    """Turns units into audio through each unit's centroid log-mels, without training.

    ``attach`` reads the table of log-mels per unit (num_units, stack, n_mels) and
    the :class:`MelSpec` of a tokenizer such as ``MelKMeansTokenizer``. ``decode``
    then, for units (frames,):

    1. looks up the log-mels, giving (frames * stack, n_mels) in dB;
    2. averages each mel bin over ``smoothing`` neighbouring 10 ms frames in dB
       (1 turns this off);
    3. converts dB to mel power and maps it to a linear power spectrum with a
       truncated pseudo-inverse of the mel filter matrix, clamped at 0;
    4. recovers phase with ``n_iter`` iterations of fast Griffin-Lim
       (``torchaudio.functional.griffinlim``) using the tokenizer's STFT settings.

    The waveform has ``frames * stack * hop_length`` samples, which is
    ``frames / frame_rate * sample_rate``, and is scaled to a peak of 0.9. The
    random initial phase comes from torch's global generator, seeded with ``seed``
    inside ``torch.random.fork_rng``. So decoding the same units twice gives the
    same waveform, and the caller's random state is left unchanged.

    The default of 16 iterations comes from ``benchmarks/codec_roundtrip.py`` with
    1024 units: pocketsphinx recognized the output as well as with 32 or 64
    iterations (slightly better for the flite voice slt), at half the decode time
    of 32. See ``docs/codec.md``.
    """

    description: ClassVar[str] = "Griffin-Lim over the centroid log-mels of a mel k-means tokenizer (no training)"

    PEAK = 0.9

    def __init__(
        self,
        num_units: int,
        frame_rate: float,
        sample_rate: int = 16000,
        n_iter: int = 16,
        momentum: float = 0.99,
        smoothing: int = 1,
        seed: int = 0,
    ) -> None:
        if num_units < 1:
            raise ValueError(f"num_units must be a positive integer, got {num_units}")
        if frame_rate <= 0:
            raise ValueError(f"frame_rate must be positive (units per second), got {frame_rate}")
        if sample_rate < 1:
            raise ValueError(f"sample_rate must be a positive integer in Hz, got {sample_rate}")
        if n_iter < 1:
            raise ValueError(f"n_iter must be a positive integer, got {n_iter}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        if smoothing < 1 or smoothing % 2 == 0:
            raise ValueError(f"smoothing must be an odd number of frames (1 turns it off), got {smoothing}")

        self.num_units = num_units
        self.frame_rate = frame_rate
        self.sample_rate = sample_rate
        self.n_iter = n_iter
        self.momentum = momentum
        self.smoothing = smoothing
        self.seed = seed

        self._unit_log_mels: torch.Tensor | None = None
        self._mel_spec: MelSpec | None = None
        self._mel_to_linear: torch.Tensor | None = None
        self._window: torch.Tensor | None = None

    def attach(self, speech_tokenizer: SpeechTokenizer) -> None:
        """Read the unit log-mel table and mel settings of a fitted ``speech_tokenizer``.

        Raises ``TypeError`` when the tokenizer has no ``unit_log_mels()`` or
        ``mel_spec``, and ``ValueError`` when its units, frame rate or sample rate
        differ from this vocoder's or when it is not fitted.
        """
        name = type(speech_tokenizer).__name__
        if not callable(getattr(speech_tokenizer, "unit_log_mels", None)) or not hasattr(speech_tokenizer, "mel_spec"):
            raise TypeError(
                f"{type(self).__name__} needs a speech tokenizer with unit_log_mels() and mel_spec, "
                f"such as MelKMeansTokenizer, but got {name}"
            )
        if speech_tokenizer.num_units != self.num_units:
            raise ValueError(
                f"num_units differ: vocoder has {self.num_units}, {name} has {speech_tokenizer.num_units}; "
                "set both to the same value"
            )
        if not math.isclose(speech_tokenizer.frame_rate, self.frame_rate, rel_tol=1e-6):
            raise ValueError(
                f"frame_rate differs: vocoder has {self.frame_rate} Hz, {name} has "
                f"{speech_tokenizer.frame_rate} Hz; set both to the same value"
            )
        if speech_tokenizer.sample_rate != self.sample_rate:
            raise ValueError(
                f"sample_rate differs: vocoder has {self.sample_rate} Hz, {name} has "
                f"{speech_tokenizer.sample_rate} Hz; set both to the same value"
            )
        if not speech_tokenizer.is_fitted():
            raise ValueError(f"{name} is not fitted; call its fit(waveforms) before attaching the vocoder")

        mel_spec: MelSpec = speech_tokenizer.mel_spec
        unit_log_mels: torch.Tensor = speech_tokenizer.unit_log_mels()  # type: ignore[attr-defined]
        if unit_log_mels.dim() != 3 or unit_log_mels.shape[0] != self.num_units:
            raise ValueError(
                f"{name}.unit_log_mels() has shape {tuple(unit_log_mels.shape)}, "
                f"expected ({self.num_units}, stack, {mel_spec.n_mels})"
            )
        if unit_log_mels.shape[2] != mel_spec.n_mels:
            raise ValueError(
                f"{name}.unit_log_mels() has {unit_log_mels.shape[2]} mel bins but its mel_spec "
                f"has n_mels={mel_spec.n_mels}"
            )

        self._unit_log_mels = unit_log_mels.detach().float().clone()
        self._mel_spec = mel_spec
        self._mel_to_linear = _mel_pseudo_inverse(mel_spec.filterbank())
        self._window = mel_spec.window_tensor()
        log.info("attached to %s: %d units of %d x %d log-mels", name, self.num_units, *unit_log_mels.shape[1:])

    def decode(self, units: torch.Tensor) -> torch.Tensor:
        """Return the float32 waveform (frames * stack * hop_length,) of int64 units (frames,)."""
        if self._unit_log_mels is None or self._mel_spec is None:
            raise RuntimeError(
                f"{type(self).__name__} has no unit table; call attach(speech_tokenizer) with a fitted tokenizer first"
            )
        assert self._mel_to_linear is not None and self._window is not None
        if units.dim() != 1:
            raise ValueError(f"units must have shape (frames,), got shape {tuple(units.shape)}")
        if units.dtype.is_floating_point or units.dtype.is_complex or units.dtype == torch.bool:
            raise ValueError(f"units must be an integer tensor, got dtype {units.dtype}")
        if units.numel() and (int(units.min()) < 0 or int(units.max()) >= self.num_units):
            raise ValueError(
                f"units must be in [0, {self.num_units}), got values from {int(units.min())} to {int(units.max())}"
            )

        spec = self._mel_spec
        length = units.numel() * self._unit_log_mels.shape[1] * spec.hop_length
        if units.numel() == 0:
            return torch.zeros(0)

        log_mels = self._unit_log_mels[units.long()].reshape(-1, spec.n_mels)
        if self.smoothing > 1:
            log_mels = _moving_average(log_mels, self.smoothing)

        mel_power = torch.pow(10.0, log_mels / spec.db_multiplier)
        linear_power = (mel_power @ self._mel_to_linear).clamp(min=0.0)
        magnitude = linear_power.pow(1.0 / spec.power)
        # A centred STFT of L samples has L // hop_length + 1 frames, so one extra copy of
        # the last frame makes the inverse exactly ``length`` samples long.
        magnitude = torch.cat([magnitude, magnitude[-1:]])

        # griffinlim draws its initial phase from the global generator, so fork it.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            waveform = torchaudio.functional.griffinlim(
                magnitude.T,
                window=self._window,
                n_fft=spec.n_fft,
                hop_length=spec.hop_length,
                win_length=spec.win_length,
                power=1.0,
                n_iter=self.n_iter,
                momentum=self.momentum,
                length=length,
                rand_init=True,
            )

        peak = waveform.abs().max()
        if peak > 0:
            waveform = waveform * (self.PEAK / peak)
        return waveform.float()


def _mel_pseudo_inverse(filterbank: torch.Tensor) -> torch.Tensor:
    """Return the (n_mels, n_stft) map from mel power to a minimum-norm linear power spectrum.

    With 80 mel bins at 16 kHz, the filters below about 600 Hz are narrower than
    one 40 Hz STFT bin, so the filter matrix is rank deficient. Its smallest singular values are 1e-7
    or less, and their inverses would reach millions. A quantized
    (inconsistent) mel vector would then turn into a loud narrow-band tone, so
    singular values below 1e-4 of the largest are dropped.
    """
    return torch.linalg.pinv(filterbank.double(), rtol=1e-4).float()


def _moving_average(values: torch.Tensor, width: int) -> torch.Tensor:
    """Average (frames, bins) over ``width`` centred frames, repeating the edge frames."""
    half = width // 2
    padded = torch.cat([values[:1].expand(half, -1), values, values[-1:].expand(half, -1)])
    return padded.unfold(0, width, 1).mean(dim=-1)
