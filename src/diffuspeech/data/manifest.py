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
from collections.abc import Iterable
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


def _check_row(raw: Any, line: int, path: Path) -> ManifestRow:
    where = f"{path}, row {line}"
    if not isinstance(raw, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(raw).__name__}")
    row_id = raw.get("id")
    if not isinstance(row_id, str) or not row_id:
        raise DataError(f"{where}: missing or empty 'id'")
    tasks = raw.get("tasks")
    if not isinstance(tasks, list) or not tasks or any(task not in TASKS for task in tasks):
        raise DataError(f"{where} (id {row_id}): 'tasks' must be a non-empty list drawn from {', '.join(TASKS)}")

    fields = {key: value for key, value in raw.items() if key not in ("id", "tasks")}
    for key in ("question", "thought", "answer", "transcript"):
        if key in fields and (not isinstance(fields[key], str) or not fields[key].strip()):
            raise DataError(f"{where} (id {row_id}): text field {key!r} must be a non-empty string")
    for key in ("audio", "reply_audio"):
        if key in fields:
            if not isinstance(fields[key], str) or not fields[key]:
                raise DataError(f"{where} (id {row_id}): {key!r} must be a file path")
            fields[key] = str((path.parent / fields[key]).resolve())
    for task in tasks:
        missing = [name for name in TASK_FIELDS[task] if name not in fields]
        if missing:
            raise DataError(f"{where} (id {row_id}): task {task} needs field(s) {', '.join(missing)}")
    return ManifestRow(id=row_id, tasks=tuple(tasks), fields=fields, line=line, manifest=path)


def read_manifest(path: Path) -> list[ManifestRow]:
    """Read and check a JSONL manifest; raises ``DataError`` naming the file and row."""
    if not path.is_file():
        raise DataError(f"manifest {path} not found; run `diffuspeech prepare` first or fix the path")
    rows: list[ManifestRow] = []
    seen: dict[str, int] = {}
    with path.open("rb") as handle:
        for line, raw_bytes in enumerate(handle, start=1):
            try:
                text = raw_bytes.decode("utf-8").strip()
            except UnicodeDecodeError as error:
                raise DataError(
                    f"{path}, row {line}: not valid UTF-8 ({error}); re-encode the file as UTF-8"
                ) from error
            if not text:
                continue
            try:
                raw = json.loads(text)
            except json.JSONDecodeError as error:
                raise DataError(f"{path}, row {line}: invalid JSON ({error.msg} at column {error.colno})") from error
            row = _check_row(raw, line, path)
            if row.id in seen:
                raise DataError(f"{path}, row {line}: duplicate id {row.id!r} (first at row {seen[row.id]})")
            seen[row.id] = line
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
