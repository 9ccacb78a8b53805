"""Row-by-row checks of a manifest, its audio files and its cached speech units.

``check_manifest`` never stops at the first bad row: it returns the rows that
pass and a ``BadRow`` for each one that fails, with a short kind (for counts)
and a reason. ``diffuspeech validate-data`` prints them; training fails on
them or skips them, as ``training.bad_rows`` selects.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import soundfile as sf
import torch
from safetensors import safe_open

from diffuspeech.data.manifest import ManifestRow, RowError, parse_manifest

log = logging.getLogger(__name__)

AUDIO_DURATIONS = (("audio", "duration"), ("reply_audio", "reply_duration"))
"""Each audio field with the field that states its duration in seconds."""

DURATION_TOLERANCE = 0.05
"""Largest accepted difference, in seconds, between a duration field and the file's duration."""


@dataclass(frozen=True)
class BadRow:
    """One manifest row that failed a check."""

    manifest: Path
    line: int
    id: str | None
    kind: str
    reason: str

    def __str__(self) -> str:
        return f"{self.manifest}, row {self.line} (id {self.id or '?'}): {self.kind}: {self.reason}"

    def to_dict(self) -> dict[str, object]:
        """Return the row as plain values, for JSON reports."""
        return {
            "manifest": str(self.manifest),
            "row": self.line,
            "id": self.id,
            "kind": self.kind,
            "reason": self.reason,
        }


@dataclass
class ManifestCheck:
    """The result of checking one manifest: the rows that passed and the bad ones."""

    path: Path
    rows: list[ManifestRow] = field(default_factory=list)
    bad: list[BadRow] = field(default_factory=list)

    @property
    def checked(self) -> int:
        """Number of non-empty lines checked."""
        return len(self.rows) + len(self.bad)

    def counts(self) -> dict[str, int]:
        """Return the number of bad rows of each kind."""
        return dict(Counter(row.kind for row in self.bad))

    def drop(self, bad: list[BadRow]) -> None:
        """Move the rows named in ``bad`` from ``rows`` to ``bad``."""
        lines = {row.line for row in bad}
        self.rows = [row for row in self.rows if row.line not in lines]
        self.bad = sorted([*self.bad, *bad], key=lambda row: row.line)


def _bad(row: ManifestRow, kind: str, reason: str) -> BadRow:
    return BadRow(row.manifest, row.line, row.id, kind, reason)


class AudioChecker:
    """Checks audio files once each: they exist, decode, are not empty, and match the stated duration."""

    def __init__(self, read_samples: bool) -> None:
        self.read_samples = read_samples
        self.durations: dict[str, tuple[str, str] | float] = {}

    def duration(self, path: str) -> tuple[str, str] | float:
        """Return the file's duration in seconds, or (kind, reason) when the file is bad."""
        if path not in self.durations:
            self.durations[path] = self._measure(path)
        return self.durations[path]

    def _measure(self, path: str) -> tuple[str, str] | float:
        if not Path(path).is_file():
            return "missing audio", f"{path} not found"
        try:
            info = sf.info(path)
            frames = info.frames
            if self.read_samples:
                frames = len(sf.read(path, dtype="float32", always_2d=True)[0])
        except (sf.LibsndfileError, RuntimeError, ValueError) as error:
            return "unreadable audio", f"{path} could not be decoded: {error}"
        if frames == 0:
            return "empty audio", f"{path} has no samples"
        return frames / info.samplerate

    def check(self, row: ManifestRow) -> BadRow | None:
        """Return the first audio problem of ``row``, or None."""
        for name, duration_name in AUDIO_DURATIONS:
            path = row.get(name)
            if not path:
                continue
            measured = self.duration(path)
            if isinstance(measured, tuple):
                kind, reason = measured
                return _bad(row, kind, f"field {name!r}: {reason}")
            stated = row.get(duration_name)
            if isinstance(stated, int | float) and not isinstance(stated, bool):
                if abs(stated - measured) > DURATION_TOLERANCE:
                    reason = (
                        f"field {duration_name!r} is {stated:.3f} s but {path} lasts {measured:.3f} s "
                        f"(tolerance {DURATION_TOLERANCE} s)"
                    )
                    return _bad(row, "duration mismatch", reason)
            elif stated is not None:
                return _bad(row, "invalid row", f"field {duration_name!r} must be a number of seconds, got {stated!r}")
        return None


def check_units(rows: list[ManifestRow], units: dict[str, torch.Tensor], num_units: int, source: str) -> list[BadRow]:
    """Return a bad row for each row whose cached units are empty or outside [0, num_units)."""
    bad: list[BadRow] = []
    for row in rows:
        for name, _ in AUDIO_DURATIONS:
            path = row.get(name)
            if not path or path not in units:
                continue
            values = units[path]
            if values.numel() == 0:
                bad.append(_bad(row, "units out of range", f"{source} holds no units for {name!r} ({path})"))
                break
            low, high = int(values.min()), int(values.max())
            if low < 0 or high >= num_units:
                reason = f"{source} holds units in [{low}, {high}] for {name!r} ({path}); expected [0, {num_units})"
                bad.append(_bad(row, "units out of range", reason))
                break
    return bad


def read_unit_caches(cache_dir: Path) -> list[tuple[Path, dict[str, torch.Tensor], int | None]]:
    """Return (file, units by audio path, unit count or None) for each unit cache in ``cache_dir``.

    The unit count comes from the file's ``num_units`` metadata, which caches
    written before that field existed lack.
    """
    caches = []
    for path in sorted(cache_dir.glob("units-*.safetensors")):
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            units = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
        count = metadata.get("num_units")
        caches.append((path, units, int(count) if count and count.isdigit() else None))
    return caches


def check_manifest(path: Path, read_samples: bool = True, cache_dir: Path | None = None) -> ManifestCheck:
    """Check every row of the manifest at ``path``.

    Rows must parse and have unique ids and non-empty UTF-8 text. Audio files
    must exist, decode (fully when ``read_samples``, else the header only),
    be non-empty and last as long as a ``duration``/``reply_duration`` field
    states. Units in each cache file of ``cache_dir`` must be in range.
    Raises ``DataError`` only when the manifest does not exist.
    """
    result = ManifestCheck(path)
    audio = AudioChecker(read_samples)
    for row in parse_manifest(path):
        if isinstance(row, RowError):
            result.bad.append(BadRow(row.manifest, row.line, row.row_id, row.kind, row.reason))
            continue
        problem = audio.check(row)
        if problem is None:
            result.rows.append(row)
        else:
            result.bad.append(problem)

    if cache_dir is not None and cache_dir.is_dir():
        for cache_path, units, num_units in read_unit_caches(cache_dir):
            if num_units is None:
                log.warning("%s has no num_units metadata; checking its units for negative values only", cache_path)
            result.drop(check_units(result.rows, units, num_units or 2**62, str(cache_path)))
    result.bad.sort(key=lambda row: row.line)
    return result
