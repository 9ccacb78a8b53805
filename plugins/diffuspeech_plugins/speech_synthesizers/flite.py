"""Speech synthesis with the CMU Flite command-line program."""

from __future__ import annotations

import logging
import math
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch

from diffuspeech.audio import AudioError, read_audio, resample
from diffuspeech.interfaces import SpeechSynthesizer

log = logging.getLogger(__name__)

DEFAULT_VOICES = ("awb", "kal16", "rms", "slt")


@dataclass(frozen=True)
class VoiceSettings:
    """Per-voice defaults that rate and pitch changes start from.

    ``duration_stretch`` is the voice's own value of flite's ``duration_stretch``
    feature, which ``--setf duration_stretch`` would otherwise replace.
    ``pitch_by_resampling`` marks voices whose F0 ignores flite's ``f0_shift``.
    """

    duration_stretch: float = 1.0
    pitch_by_resampling: bool = False


# Measured with Debian flite 2.2-5: for each voice, synthesis with
# `--setf duration_stretch=<value>` gives a byte-identical WAV file to synthesis
# without the option. With `--setf f0_shift=1.25`, the median F0 rose by a factor
# of 1.25 (awb, slt) to 1.30 (kal, kal16) but stayed the same for rms. The reason
# is that rms takes its F0 from flite's SPAM accent model, which runs after the
# step that applies f0_shift and int_f0_target_mean (src/cg/cst_cg.c).
VOICE_SETTINGS: dict[str, VoiceSettings] = {
    "awb": VoiceSettings(),
    "kal": VoiceSettings(duration_stretch=1.1),
    "kal16": VoiceSettings(duration_stretch=1.1),
    "rms": VoiceSettings(pitch_by_resampling=True),
    "slt": VoiceSettings(),
}

INSTALL_HINT = (
    "run `apt-get install flite` (Debian/Ubuntu) or `brew install flite` (macOS), or pass binary='/path/to/flite'"
)


class FliteSynthesizer(SpeechSynthesizer):
    """Speaks English text with the voices built into the ``flite`` program.

    Each call runs ``flite`` once and returns its output at the voice's own
    sample rate: 16,000 Hz for awb, kal16, rms and slt, 8,000 Hz for kal.

    ``rate`` divides the voice's ``duration_stretch`` feature. ``pitch`` sets
    flite's ``f0_shift`` feature, which multiplies the mean of the F0 contour
    and leaves its spread unchanged. rms ignores ``f0_shift``, so for rms the
    speech is synthesized ``pitch`` times slower and resampled to play
    ``pitch`` times faster: duration comes out as requested, but the formants
    move with the pitch, like a different speaker.

    ``binary`` is the flite executable, looked up on PATH, and ``timeout_s``
    limits each run of it in seconds. Raises ``FileNotFoundError`` at
    construction when ``binary`` is not found, and ``ValueError`` for a voice
    that this flite build does not have.
    """

    description: ClassVar[str] = "CMU Flite text-to-speech program (English voices awb, kal16, rms, slt)"

    def __init__(
        self,
        binary: str = "flite",
        voices: list[str] | None = None,
        timeout_s: float = 60.0,
    ) -> None:
        resolved = shutil.which(binary)
        if resolved is None:
            raise FileNotFoundError(
                f"flite is not installed: {INSTALL_HINT} (no executable {binary!r} was found on PATH)"
            )
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive seconds, got {timeout_s!r}")
        self.binary = resolved
        self.timeout_s = timeout_s

        available = self._list_installed_voices()
        requested = list(DEFAULT_VOICES) if voices is None else list(voices)
        missing = [name for name in requested if name not in available]
        if missing:
            raise ValueError(
                f"flite at '{self.binary}' has no voice {', '.join(map(repr, missing))}; "
                f"available voices: {', '.join(available)}. Pass voices= with names from that list."
            )
        if not requested:
            raise ValueError(f"voices must name at least one flite voice; available: {', '.join(available)}")
        for name in requested:
            if name not in VOICE_SETTINGS:
                # NOTE: these defaults are unverified for voices outside VOICE_SETTINGS.
                log.warning(
                    "flite voice %r has no measured settings; assuming duration_stretch 1.0 and that "
                    "f0_shift changes its pitch",
                    name,
                )
        self._voices = requested

    @property
    def voices(self) -> list[str]:
        """Names of the flite voices this synthesizer speaks with."""
        return list(self._voices)

    def synthesize(self, text: str, voice: str, rate: float = 1.0, pitch: float = 1.0) -> tuple[torch.Tensor, int]:
        """Speak ``text`` and return (float32 waveform (samples,) in [-1, 1], sample rate in Hz).

        Raises ``ValueError`` for an unknown voice, empty text, or a rate or
        pitch that is not a positive finite number, and ``RuntimeError`` when
        flite fails, times out or writes no usable audio.
        """
        if voice not in self._voices:
            raise ValueError(f"unknown flite voice {voice!r}; available voices: {', '.join(self._voices)}")
        if not text.strip():
            raise ValueError(f"text to synthesize is empty or only whitespace: {text!r}")
        for name, value in (("rate", rate), ("pitch", pitch)):
            if not math.isfinite(value) or value <= 0:
                raise ValueError(f"{name} must be a positive finite number, got {value!r}")

        settings = VOICE_SETTINGS.get(voice, VoiceSettings())
        features: dict[str, float] = {}
        resample_pitch = settings.pitch_by_resampling and pitch != 1.0
        stretch = settings.duration_stretch / rate
        if resample_pitch:
            # Slow the speech down by the pitch factor here, because the resampling below speeds it up again.
            pitch = _quantize_resampling_factor(pitch)
            stretch *= pitch
        elif pitch != 1.0:
            features["f0_shift"] = pitch
        if rate != 1.0 or resample_pitch:
            features["duration_stretch"] = stretch

        waveform, sample_rate = self._run_flite(text, voice, features)
        if resample_pitch:
            waveform = _raise_pitch_by_resampling(waveform, sample_rate, pitch)
        return waveform, sample_rate

    def _list_installed_voices(self) -> list[str]:
        """Return the voice names that ``flite -lv`` prints."""
        try:
            completed = subprocess.run(
                [self.binary, "-lv"], capture_output=True, text=True, timeout=self.timeout_s, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as error:
            raise RuntimeError(f"could not list voices with '{self.binary} -lv': {error}") from error
        output = completed.stdout + completed.stderr
        _, separator, names = output.partition("Voices available:")
        if completed.returncode != 0 or not separator:
            raise RuntimeError(
                f"'{self.binary} -lv' exited with status {completed.returncode} and printed no voice list: "
                f"{output.strip()!r}. Check that '{self.binary}' is CMU Flite 2.x; if not, {INSTALL_HINT}."
            )
        return names.split()

    def _run_flite(self, text: str, voice: str, features: dict[str, float]) -> tuple[torch.Tensor, int]:
        """Run flite on ``text`` with ``--setf`` features and return its waveform and sample rate."""
        with tempfile.TemporaryDirectory(prefix="diffuspeech-flite-") as folder:
            text_path = Path(folder) / "input.txt"
            wav_path = Path(folder) / "output.wav"
            # Passing the text in a file keeps leading dashes and long texts out of the argument list.
            text_path.write_text(text, encoding="utf-8")

            command = [self.binary, "-voice", voice]
            for name, value in features.items():
                command += ["--setf", f"{name}={value:.6g}"]
            command += ["-f", str(text_path), "-o", str(wav_path)]
            log.debug("running %s", " ".join(command))

            try:
                completed = subprocess.run(command, capture_output=True, text=True, timeout=self.timeout_s, check=False)
            except subprocess.TimeoutExpired as error:
                raise RuntimeError(
                    f"flite timed out after {self.timeout_s} s with voice {voice!r} on text {text[:80]!r}; "
                    "split long texts or raise timeout_s"
                ) from error
            if completed.returncode != 0:
                raise RuntimeError(
                    f"flite exited with status {completed.returncode} for voice {voice!r} on text "
                    f"{text[:80]!r}: {completed.stderr.strip()!r}"
                )

            try:
                return read_audio(wav_path)
            except AudioError as error:
                raise RuntimeError(
                    f"flite wrote no usable audio for voice {voice!r} on text {text[:80]!r}: {error}"
                ) from error


def _quantize_resampling_factor(pitch: float) -> float:
    """Round ``pitch`` to a multiple of 1/160, so that resampling uses a short kernel.

    ``torchaudio.functional.resample`` builds one filter per output phase, and
    the phase count is the output rate divided by the greatest common divisor
    of both rates. At 16,000 or 8,000 Hz, a factor of k/160 keeps that count at
    160 or fewer.
    """
    return max(1, round(pitch * 160)) / 160


def _raise_pitch_by_resampling(waveform: torch.Tensor, sample_rate: int, factor: float) -> torch.Tensor:
    """Play ``waveform`` ``factor`` times faster, so pitch and formants scale by ``factor``."""
    source_rate = round(sample_rate * factor)
    # The sinc filter can overshoot full scale slightly near clipped peaks.
    return resample(waveform, source_rate, sample_rate).clamp(-1.0, 1.0)
