"""Fitting the tokenizers on a corpus and caching speech units.

Units are computed once per (speech tokenizer, audio file) and stored in a
safetensors file under ``data_dir/cache``, named by a fingerprint of the
tokenizer's class, arguments and fitted state, so a changed tokenizer never
reads stale units.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
from collections.abc import Iterable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from diffuspeech.audio import AudioError, load_audio
from diffuspeech.data.manifest import ManifestRow
from diffuspeech.errors import DataError
from diffuspeech.interfaces import SpeechTokenizer, TextTokenizer
from diffuspeech.threads import limited_threads

log = logging.getLogger(__name__)

TEXT_FIELDS = ("question", "thought", "answer", "transcript")
AUDIO_FIELDS = ("audio", "reply_audio")


def audio_references(rows: Iterable[ManifestRow]) -> dict[str, tuple[ManifestRow, str]]:
    """Map each distinct audio path to the first row (and field) that names it."""
    found: dict[str, tuple[ManifestRow, str]] = {}
    for row in rows:
        for name in AUDIO_FIELDS:
            path = row.get(name)
            if path and path not in found:
                found[path] = (row, name)
    return found


def load_row_audio(path: str, row: ManifestRow, name: str, sample_rate: int) -> torch.Tensor:
    """Load one manifest audio file, turning audio errors into ``DataError`` naming file and row."""
    try:
        return load_audio(path, sample_rate, row=row.line, manifest=str(row.manifest))
    except AudioError as error:
        raise DataError(f"{error} (field {name!r} of id {row.id})") from error


def fit_text_tokenizer(tokenizer: TextTokenizer, rows: list[ManifestRow], directory: Path) -> None:
    """Fit ``tokenizer`` on every text field of ``rows`` unless it is already fitted."""
    if tokenizer.is_fitted():
        return
    texts = [row.get(name) for row in rows for name in TEXT_FIELDS if row.get(name)]
    log.info("Fitting %s on %d texts", type(tokenizer).__name__, len(texts))
    tokenizer.fit(texts, directory)


def fit_speech_tokenizer(tokenizer: SpeechTokenizer, rows: list[ManifestRow], max_files: int, seed: int) -> None:
    """Fit ``tokenizer`` on up to ``max_files`` audio files of ``rows`` unless it is already fitted."""
    if tokenizer.is_fitted():
        return
    references = list(audio_references(rows).items())
    random.Random(seed).shuffle(references)
    chosen = references[:max_files]
    log.info("Fitting %s on %d audio files", type(tokenizer).__name__, len(chosen))
    with limited_threads(1):
        waveforms = [
            load_row_audio(path, row, name, tokenizer.sample_rate)
            for path, (row, name) in tqdm(chosen, desc="loading audio for the speech tokenizer", unit="file")
        ]
        tokenizer.fit(waveforms)


def tokenizer_fingerprint(tokenizer: SpeechTokenizer) -> str:
    """Return a short hash of the tokenizer's class, settings and fitted state."""
    digest = hashlib.sha256(type(tokenizer).__qualname__.encode())
    digest.update(json.dumps([tokenizer.sample_rate, tokenizer.frame_rate, tokenizer.num_units]).encode())
    for key, value in sorted(tokenizer.state_dict().items()):
        digest.update(key.encode())
        if isinstance(value, torch.Tensor):
            digest.update(value.detach().cpu().contiguous().numpy().tobytes())
        else:
            digest.update(repr(value).encode())
    return digest.hexdigest()[:16]


class UnitCache:
    """Speech units of audio files, computed on first use and stored in ``cache_dir``."""

    def __init__(self, tokenizer: SpeechTokenizer, cache_dir: Path) -> None:
        self.tokenizer = tokenizer
        self.path = cache_dir / f"units-{tokenizer_fingerprint(tokenizer)}.safetensors"
        self.units: dict[str, torch.Tensor] = load_file(str(self.path)) if self.path.is_file() else {}

    def ensure(self, rows: list[ManifestRow], skip_bad: bool = False) -> dict[str, str]:
        """Compute the units of every audio file of ``rows`` that the cache lacks, then save.

        A file that cannot be decoded or gives no unit raises ``DataError``
        naming the file and row, unless ``skip_bad``: then it is left out of
        the cache and returned as {audio path: reason}.
        """
        failed: dict[str, str] = {}
        missing = [(path, ref) for path, ref in audio_references(rows).items() if path not in self.units]
        if not missing:
            return failed
        with limited_threads(1):
            for path, (row, name) in tqdm(missing, desc="computing speech units", unit="file"):
                try:
                    self.units[path] = self._encode(path, row, name)
                except DataError as error:
                    if not skip_bad:
                        raise
                    failed[path] = str(error)
        self.save()
        return failed

    def _encode(self, path: str, row: ManifestRow, name: str) -> torch.Tensor:
        waveform = load_row_audio(path, row, name, self.tokenizer.sample_rate)
        units = self.tokenizer.encode(waveform)
        if units.numel() == 0:
            raise DataError(
                f"{row.manifest}, row {row.line} (id {row.id}): {path} is too short to give one speech unit"
            )
        return units.to(torch.int64).contiguous()

    def save(self) -> None:
        """Write the cache atomically, with the unit count as metadata for ``validate-data``."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(".tmp")
        metadata = {"num_units": str(self.tokenizer.num_units), "tokenizer": type(self.tokenizer).__qualname__}
        save_file(self.units, str(temporary), metadata=metadata)
        os.replace(temporary, self.path)

    def __getitem__(self, path: str) -> torch.Tensor:
        return self.units[path]
