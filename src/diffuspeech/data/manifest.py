"""JSONL manifests: one row per utterance or QA item.

Row fields (paths are relative to the manifest's folder):

- ``id``: unique string;
- ``tasks``: the tasks this row serves, a subset of asr, tts, s2t, s2s, t2t;
- ``question``, ``thought``, ``answer``: text fields of QA rows;
- ``transcript``: the text spoken in ``audio`` (ASR) or to speak (TTS);
- ``audio``, ``duration``, ``speaker``: the user's speech;
- ``reply_audio``, ``reply_duration``, ``reply_speaker``: the spoken reply.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from diffuspeech.errors import DataError
from diffuspeech.vocabulary import TASKS

# Fields each task reads from a row.
TASK_FIELDS: dict[str, tuple[str, ...]] = {
    "asr": ("audio", "transcript"),
    "tts": ("transcript", "reply_audio"),
    "s2t": ("audio", "thought", "answer"),
    "s2s": ("audio", "thought", "reply_audio"),
    "t2t": ("question", "thought", "answer"),
}


@dataclass
class ManifestRow:
    """One validated manifest row; ``audio`` paths are absolute."""

    id: str
    tasks: tuple[str, ...]
    fields: dict[str, Any]
    line: int
    manifest: Path
    extra: dict[str, Any] = field(default_factory=dict)

    def get(self, name: str) -> Any:
        """Return field ``name`` or None."""
        return self.fields.get(name)


class RowError(DataError):
    """An invalid manifest row: ``kind`` is a short category used to count bad rows, ``reason`` the detail."""

    def __init__(self, manifest: Path, line: int, row_id: str | None, kind: str, reason: str) -> None:
        where = f"{manifest}, row {line}" + (f" (id {row_id})" if row_id else "")
        super().__init__(f"{where}: {reason}")
        self.manifest = manifest
        self.line = line
        self.row_id = row_id
        self.kind = kind
        self.reason = reason


def _check_row(raw: Any, line: int, path: Path) -> ManifestRow:
    if not isinstance(raw, dict):
        raise RowError(path, line, None, "invalid row", f"expected a JSON object, got {type(raw).__name__}")
    row_id = raw.get("id")
    if not isinstance(row_id, str) or not row_id:
        raise RowError(path, line, None, "invalid row", "missing or empty 'id'")
    tasks = raw.get("tasks")
    if not isinstance(tasks, list) or not tasks or any(task not in TASKS for task in tasks):
        reason = f"'tasks' must be a non-empty list drawn from {', '.join(TASKS)}"
        raise RowError(path, line, row_id, "invalid row", reason)

    fields = {key: value for key, value in raw.items() if key not in ("id", "tasks")}
    for key in ("question", "thought", "answer", "transcript"):
        if key in fields and (not isinstance(fields[key], str) or not fields[key].strip()):
            raise RowError(path, line, row_id, "empty text", f"text field {key!r} must be a non-empty string")
    for key in ("audio", "reply_audio"):
        if key in fields:
            if not isinstance(fields[key], str) or not fields[key]:
                raise RowError(path, line, row_id, "invalid row", f"{key!r} must be a file path")
            fields[key] = str((path.parent / fields[key]).resolve())
    for task in tasks:
        missing = [name for name in TASK_FIELDS[task] if name not in fields]
        if missing:
            raise RowError(path, line, row_id, "invalid row", f"task {task} needs field(s) {', '.join(missing)}")
    return ManifestRow(id=row_id, tasks=tuple(tasks), fields=fields, line=line, manifest=path)


def parse_manifest(path: Path) -> Iterator[ManifestRow | RowError]:
    """Yield each non-empty line as a checked row, or as a ``RowError`` when the line is invalid.

    Duplicate ids are reported at their second occurrence. Raises
    ``DataError`` when the file does not exist.
    """
    if not path.is_file():
        raise DataError(f"manifest {path} not found; run `diffuspeech prepare` first or fix the path")
    seen: dict[str, int] = {}
    with path.open("rb") as handle:
        for line, raw_bytes in enumerate(handle, start=1):
            try:
                text = raw_bytes.decode("utf-8").strip()
            except UnicodeDecodeError as error:
                reason = f"not valid UTF-8 ({error}); re-encode the file as UTF-8"
                yield RowError(path, line, None, "non-UTF-8 text", reason)
                continue
            if not text:
                continue
            try:
                row = _check_row(json.loads(text), line, path)
            except json.JSONDecodeError as error:
                yield RowError(path, line, None, "invalid JSON", f"invalid JSON ({error.msg} at column {error.colno})")
                continue
            except RowError as error:
                yield error
                continue
            if row.id in seen:
                reason = f"duplicate id {row.id!r} (first at row {seen[row.id]})"
                duplicate = RowError(path, line, None, "duplicate id", reason)
                duplicate.row_id = row.id
                yield duplicate
                continue
            seen[row.id] = line
            yield row


def read_manifest(path: Path) -> list[ManifestRow]:
    """Read and check a JSONL manifest; raises ``DataError`` naming the file and row of the first invalid row."""
    rows: list[ManifestRow] = []
    for row in parse_manifest(path):
        if isinstance(row, RowError):
            raise row
        rows.append(row)
    if not rows:
        raise DataError(f"manifest {path} has no rows")
    return rows


def write_manifest(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    """Write rows as JSONL atomically: a reader never sees a half-written manifest."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=path.parent, suffix=".tmp", delete=False) as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(handle.name, path)


def check_splits(manifests_dir: Path, splits: Iterable[str], key: str) -> None:
    """Raise ``DataError`` naming ``key`` when a split has no manifest, listing the splits that exist."""
    existing = sorted(path.stem for path in manifests_dir.glob("*.jsonl"))
    if not existing:
        raise DataError(f"no manifests in {manifests_dir}; run `diffuspeech prepare` first or fix data_dir")
    unknown = [split for split in splits if split not in existing]
    if unknown:
        names = ", ".join(map(repr, unknown))
        raise DataError(f"{key}: no split {names} in {manifests_dir}; existing splits: {', '.join(existing)}")
