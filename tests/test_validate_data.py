"""validate-data reports each bad manifest row with its reason, and training fails on them or skips them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from mlflow.tracking import MlflowClient
from safetensors.torch import save_file
from training_corpus import overrides, qa_row, write_corpus

from diffuspeech.cli import main
from diffuspeech.errors import DataError
from diffuspeech.recipe import load_recipe
from diffuspeech.training.run import train

# Each bad row appended to the training manifest: (kind reported, how the row is broken).
BAD_KINDS = {
    13: "missing audio",
    14: "unreadable audio",
    15: "empty audio",
    16: "duration mismatch",
    17: "empty text",
    18: "non-UTF-8 text",
    19: "duplicate id",
    20: "invalid JSON",
}


def add_bad_rows(data_dir: Path) -> Path:
    """Append one row of each bad kind to train.jsonl (rows 13 to 20); return the manifest."""
    manifest = data_dir / "manifests" / "train.jsonl"
    audio = data_dir / "audio"
    (audio / "notes.wav").write_text("these bytes are not audio\n")
    sf.write(audio / "empty.wav", np.zeros(0, dtype=np.float32), 16000)

    rows = []
    for index, change in enumerate(
        [
            {"audio": "../audio/absent.wav"},
            {"audio": "../audio/notes.wav"},
            {"audio": "../audio/empty.wav", "duration": 0.0},
            {"duration": 9.5},
            {"transcript": "   "},
        ]
    ):
        row = qa_row(data_dir, "train", 3, 3)
        row.update(change, id=f"bad-{index}")
        rows.append(json.dumps(row).encode())
    rows.append(b'{"id": "bad-latin1", "tasks": ["t2t"], "question": "caf\xe9"}')
    rows.append(json.dumps(qa_row(data_dir, "train", 0, 0)).encode())
    rows.append(b'{"id": "bad-json", ')
    with manifest.open("ab") as handle:
        handle.write(b"\n".join(rows) + b"\n")
    return manifest


@pytest.fixture
def bad_corpus(tmp_path: Path) -> Path:
    data_dir = write_corpus(tmp_path / "data")
    add_bad_rows(data_dir)
    return data_dir


def test_validate_data_reports_each_bad_row(bad_corpus: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Every bad row is printed with file, row number, id and reason; the counts follow; exit code 1."""
    manifest = bad_corpus / "manifests" / "train.jsonl"

    code = main(["validate-data", str(manifest)])

    out = capsys.readouterr().out.splitlines()
    assert code == 1
    reported = {int(line.split(":")[1]): line for line in out[:-1]}
    assert sorted(reported) == sorted(BAD_KINDS)
    for line, kind in BAD_KINDS.items():
        assert reported[line].startswith(f"{manifest}:{line}: id ")
        assert f": {kind}: " in reported[line]
    assert "absent.wav not found" in reported[13]
    assert "id bad-3: duration mismatch: field 'duration' is 9.500 s" in reported[16]
    assert "id train-0-0: duplicate id: duplicate id 'train-0-0' (first at row 1)" in reported[19]
    assert out[-1].startswith("20 rows checked, 8 bad (")
    assert "missing audio 1" in out[-1]


def test_validate_data_checks_cached_units(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Units outside [0, num_units) in a unit cache mark the rows that use that audio."""
    data_dir = write_corpus(tmp_path / "data")
    manifest = data_dir / "manifests" / "valid.jsonl"
    first = json.loads(manifest.read_text().splitlines()[0])
    audio = str((manifest.parent / first["audio"]).resolve())
    (data_dir / "cache").mkdir()
    save_file(
        {audio: torch.tensor([1, 2, 99])}, str(data_dir / "cache" / "units-test.safetensors"), {"num_units": "16"}
    )

    code = main(["validate-data", str(manifest)])

    out = capsys.readouterr().out
    assert code == 1
    assert f"{manifest}:1: id {first['id']}: units out of range: " in out
    assert "holds units in [1, 99]" in out
    assert "expected [0, 16)" in out


def test_validate_data_clean_manifest(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A clean manifest gives exit code 0 and only the count line."""
    data_dir = write_corpus(tmp_path / "data")

    code = main(["validate-data", str(data_dir / "manifests" / "train.jsonl")])

    assert code == 0
    assert capsys.readouterr().out == "12 rows checked, 0 bad\n"


def test_validate_data_missing_manifest(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A manifest that does not exist is an error, exit code 2."""
    assert main(["validate-data", str(tmp_path / "none.jsonl")]) == 2
    assert "not found" in capsys.readouterr().err


@pytest.mark.slow
def test_training_fails_on_bad_rows(bad_corpus: Path, tmp_path: Path) -> None:
    """With bad_rows=fail, training stops before any step, naming the bad rows and the way out."""
    recipe = load_recipe("tiny", overrides(bad_corpus, tmp_path / "run", max_steps=2))

    with pytest.raises(
        DataError, match=r"8 bad row\(s\) in .*train\.jsonl: .*row 13 \(id bad-0\): missing audio"
    ) as caught:
        train(recipe)

    assert "training.bad_rows=skip" in str(caught.value)
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.slow
def test_training_skips_and_reports_bad_rows(bad_corpus: Path, tmp_path: Path) -> None:
    """With bad_rows=skip, training runs on the good rows and logs the count and the list to MLflow."""
    output_dir = tmp_path / "run"
    recipe = load_recipe("tiny", overrides(bad_corpus, output_dir, max_steps=2, bad_rows="skip"))

    train(recipe)

    listed = [json.loads(line) for line in (output_dir / "bad_rows.jsonl").read_text().splitlines()]
    assert sorted(row["row"] for row in listed) == sorted(BAD_KINDS)
    assert {row["kind"] for row in listed} == set(BAD_KINDS.values())
    client = MlflowClient(f"sqlite:///{output_dir / 'mlflow.db'}")
    run_id = (output_dir / "mlflow_run_id").read_text().strip()
    assert client.get_run(run_id).data.metrics["data/bad_rows_train"] == len(BAD_KINDS)
    assert "bad_rows.jsonl" in {Path(item.path).name for item in client.list_artifacts(run_id, "data")}
