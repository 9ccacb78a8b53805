"""Reading and writing audio files as float32 mono waveforms.

Reading goes through ``soundfile`` (libsndfile), which handles WAV, FLAC, OGG
and, from libsndfile 1.1, MP3. torchaudio 2.11 is not used for reading because
its ``load`` needs the separate ``torchcodec`` package. Every problem with a
file raises ``AudioError``, whose message names the file (and the manifest row
that points at it) and states the fix.
"""

from __future__ import annotations

import functools
import logging
import os
import tempfile
from pathlib import Path

import numpy as np
import soundfile
import torch
import torchaudio.functional
import torchaudio.transforms

from diffuspeech.errors import DataError

log = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]


class AudioError(DataError, ValueError):
    """An audio file that is missing, empty, unreadable or contains invalid samples."""


def _describe_location(path: PathLike, *, row: int | None = None, manifest: PathLike | None = None) -> str:
    """Return ``path`` quoted, followed by the manifest and row that reference it when they are known."""
    if manifest is None and row is None:
        return f"'{path}'"
    if manifest is None:
        return f"'{path}' (row {row})"
    if row is None:
        return f"'{path}' (listed in manifest '{manifest}')"
    return f"'{path}' (row {row} of manifest '{manifest}')"


def _read_umask() -> int:
    """Return the process umask without changing it (Linux ``/proc``), or 0o022 where that is unavailable."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return 0o022
    for line in status.splitlines():
        if line.startswith("Umask:"):
            return int(line.split()[1], 8)
    return 0o022


def read_audio(path: PathLike, *, row: int | None = None, manifest: PathLike | None = None) -> tuple[torch.Tensor, int]:
    """Read ``path`` as a float32 mono waveform at the file's own sample rate.

    Returns ``(waveform, sample_rate)``, where ``waveform`` has shape (samples,),
    values nominally in [-1, 1] and sample_rate is in Hz. Files with several
    channels are downmixed by averaging them. ``row`` and ``manifest`` only
    serve the error message, where they identify the manifest row that named the file.

    Raises ``AudioError`` when the file is missing, is a directory, is empty,
    is not audio that libsndfile can decode, has no samples, or contains NaN or
    infinite samples.
    """
    location = _describe_location(path, row=row, manifest=manifest)
    # Only a file named by a manifest row can be dropped from it.
    drop_advice = ", or drop it from the manifest" if manifest is not None or row is not None else ""
    file_path = Path(path)

    if not file_path.exists():
        raise AudioError(
            f"audio file {location} not found (resolved to '{file_path.resolve()}'). Fix the path or restore the file."
        )
    if file_path.is_dir():
        raise AudioError(f"audio path {location} is a directory, not a file. Point it at an audio file.")
    if file_path.stat().st_size == 0:
        raise AudioError(f"audio file {location} is empty (0 bytes). Re-create it{drop_advice}.")

    try:
        samples, sample_rate = soundfile.read(file_path, dtype="float32", always_2d=True)
    except soundfile.SoundFileError as error:
        raise AudioError(
            f"audio file {location} could not be decoded by libsndfile {soundfile.__libsndfile_version__} "
            f"({error}). Convert it to WAV or FLAC (for example with ffmpeg){drop_advice}."
        ) from error

    # samples: (frames, channels)
    if samples.shape[0] == 0:
        raise AudioError(f"audio file {location} contains no samples. Re-create it{drop_advice}.")
    if not np.isfinite(samples).all():
        bad = int((~np.isfinite(samples)).sum())
        raise AudioError(
            f"audio file {location} contains {bad} NaN or infinite samples. Re-create it from its source{drop_advice}."
        )

    channels = samples.shape[1]
    if channels > 1:
        log.debug("downmixing %d channels to mono: %s", channels, location)
        mono = samples.mean(axis=1)
    else:
        mono = samples[:, 0]

    waveform = torch.from_numpy(np.ascontiguousarray(mono, dtype=np.float32))
    return waveform, int(sample_rate)


def load_audio(
    path: PathLike,
    sample_rate: int,
    *,
    row: int | None = None,
    manifest: PathLike | None = None,
) -> torch.Tensor:
    """Read ``path`` as a float32 mono waveform (samples,) resampled to ``sample_rate`` Hz.

    Multichannel files are averaged to mono. Files at another rate are
    resampled with ``resample``. ``row`` and ``manifest`` name the manifest row that referenced
    the file, for error messages. Raises ``AudioError`` as ``read_audio`` does,
    and ``ValueError`` when ``sample_rate`` is not a positive integer.
    """
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive integer in Hz, got {sample_rate!r}")

    waveform, file_rate = read_audio(path, row=row, manifest=manifest)
    if file_rate != sample_rate:
        log.debug(
            "resampling %s from %d Hz to %d Hz",
            _describe_location(path, row=row, manifest=manifest),
            file_rate,
            sample_rate,
        )
        waveform = resample(waveform, file_rate, sample_rate)
    return waveform


def resample(waveform: torch.Tensor, orig_freq: int, new_freq: int) -> torch.Tensor:
    """Resample a float waveform (..., samples) from ``orig_freq`` to ``new_freq`` Hz.

    This is ``torchaudio.functional.resample`` with its defaults (windowed
    sinc, 6 zero crossings). For float32 waveforms on the CPU it reuses the
    filter bank of each pair of rates, because building the bank takes about
    0.18 s for 22,050 to 16,000 Hz on a 2-core CPU, longer than filtering a
    short clip.
    """
    if orig_freq == new_freq:
        return waveform
    if waveform.device.type != "cpu" or waveform.dtype != torch.float32:
        return torchaudio.functional.resample(waveform, orig_freq, new_freq)
    return _resampler(orig_freq, new_freq)(waveform)


@functools.lru_cache(maxsize=32)
def _resampler(orig_freq: int, new_freq: int) -> torchaudio.transforms.Resample:
    return torchaudio.transforms.Resample(orig_freq, new_freq)


def save_audio(path: PathLike, waveform: torch.Tensor, sample_rate: int) -> None:
    """Write a mono waveform (samples,) to ``path`` as a 16-bit PCM WAV file.

    Values outside [-1, 1] are clipped. Parent folders are created. The file
    is written under a temporary name in the same folder and then renamed
    with ``os.replace``, so readers never see a half-written file. Raises
    ``ValueError`` when ``path`` does not end in ``.wav``, when ``waveform``
    is not 1-D or contains NaN or infinite values, or when ``sample_rate`` is
    not a positive integer.
    """
    target = Path(path)
    if target.suffix.lower() != ".wav":
        raise ValueError(f"save_audio writes WAV files, so the path must end in .wav, got '{target}'")
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive integer in Hz, got {sample_rate!r}")
    if waveform.dim() != 1:
        raise ValueError(
            f"save_audio expects a mono waveform of shape (samples,), got shape {tuple(waveform.shape)} "
            f"for '{target}'. Downmix or select one channel first."
        )

    samples = waveform.detach().to(device="cpu", dtype=torch.float64).numpy()
    if not np.isfinite(samples).all():
        raise ValueError(f"waveform for '{target}' contains NaN or infinite values; nothing was written")
    clipped = int((np.abs(samples) > 1.0).sum())
    if clipped:
        log.debug("clipping %d samples outside [-1, 1] while writing '%s'", clipped, target)
    pcm = np.round(np.clip(samples, -1.0, 1.0) * 32767.0).astype(np.int16)

    target.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(descriptor)
    try:
        # mkstemp creates the file with mode 0o600, so give it the mode that a plain open() would.
        os.chmod(temporary_name, 0o666 & ~_read_umask())
        soundfile.write(temporary_name, pcm, sample_rate, subtype="PCM_16", format="WAV")
        os.replace(temporary_name, target)
    except BaseException:
        Path(temporary_name).unlink(missing_ok=True)
        raise
