"""One real run of the tiny recipe, shrunk: prepare, train, evaluate, ask, transcribe, speak.

The run is made once per session by the ``tiny_run`` fixture and shared by
the tests below, which read its outputs and its MLflow database.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import soundfile as sf
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.slow

OVERRIDES = [
    "corpus.voices=[awb,rms]",
    "corpus.arithmetic.max_operand=2",
    "corpus.arithmetic.test_fraction=0.3",
    "corpus.arithmetic.valid_fraction=0.1",
    "speech_tokenizer.args.num_units=32",
    "backbone.args.d_model=64",
    "backbone.args.n_layers=2",
    "backbone.args.n_heads=2",
    "backbone.args.mlp_hidden_size=128",
    "training.max_steps=8",
    "training.batch_size=8",
    "training.batches_per_epoch=5",
    "training.validation_interval=4",
    "training.validation_samples=4",
    "training.log_every_n_steps=2",
    "sampler.args.steps=4",
    "evaluation.max_items=6",
]


@dataclass
class TinyRun:
    """Paths of the shared run."""

    data_dir: Path
    output_dir: Path
    overrides: list[str]
    stdout: str


def diffuspeech(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the command line in a subprocess and return the finished process."""
    return subprocess.run(
        [sys.executable, "-m", "diffuspeech.cli", *args], capture_output=True, text=True, timeout=900, check=False
    )


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> TinyRun:
    root = tmp_path_factory.mktemp("tiny")
    overrides = [f"data_dir={root / 'data'}", f"output_dir={root / 'run'}", *OVERRIDES]
    result = diffuspeech("demo", "tiny", *overrides)
    assert result.returncode == 0, result.stderr[-3000:]
    return TinyRun(root / "data", root / "run", overrides, result.stdout)


def test_demo_writes_corpus_splits(tiny_run: TinyRun) -> None:
    """The corpus has every split, and held-out questions never occur in training."""
    manifests = tiny_run.data_dir / "manifests"
    rows = {
        split: [json.loads(line) for line in (manifests / f"{split}.jsonl").read_text().splitlines()]
        for split in ("train", "valid", "test", "test_unseen_voice")
    }
    train_questions = {row["question"] for row in rows["train"] if "question" in row}
    test_questions = {row["question"] for row in rows["test"]}
    assert test_questions
    assert not test_questions & train_questions
    assert {row["speaker"] for row in rows["test_unseen_voice"]} == {"kal"}
    assert "kal" not in {row.get("speaker") for row in rows["train"]}


def test_demo_prints_report_and_answer(tiny_run: TinyRun) -> None:
    """The demo prints the metric table, a thought, and writes the spoken answer."""
    assert "s2s_accuracy" in tiny_run.stdout
    assert "thought:" in tiny_run.stdout
    report = json.loads((tiny_run.output_dir / "report.json").read_text())
    for split in ("test", "test_unseen_voice"):
        metrics = report["splits"][split]
        assert metrics["rows"] > 0
        for key in ("s2t_accuracy", "s2s_accuracy"):
            assert 0 <= metrics[key] <= 100
        # WER can exceed 100 when the hypothesis has more words than the reference.
        for key in ("asr_wer", "tts_wer", "codec_round_trip_wer_questions", "recognizer_wer_original_questions"):
            assert metrics[key] >= 0
        assert metrics["recognizer_wer_original_questions"] < 50
    waveform, rate = sf.read(tiny_run.output_dir / "answer.wav")
    assert rate == 16000
    assert len(waveform) > 0


def test_mlflow_run_readable_from_sqlite(tiny_run: TinyRun) -> None:
    """Parameters, metrics by step, the recipe and audio samples are in the SQLite database."""
    client = MlflowClient(tracking_uri=f"sqlite:///{tiny_run.output_dir / 'mlflow.db'}")
    run_id = (tiny_run.output_dir / "mlflow_run_id").read_text().strip()
    run = client.get_run(run_id)

    assert run.data.params["training.max_steps"] == "8"
    assert run.data.params["backbone.name"] == "llada"
    history = client.get_metric_history(run_id, "train/loss")
    assert len(history) >= 2
    assert len({point.step for point in history}) == len(history)
    assert client.get_metric_history(run_id, "valid/loss")

    assert run.info.artifact_uri.startswith((tiny_run.output_dir / "mlartifacts").as_uri())
    artifacts = {item.path for item in client.list_artifacts(run_id)}
    assert "recipe.yaml" in artifacts
    audio_steps = client.list_artifacts(run_id, "audio")
    assert audio_steps
    files = client.list_artifacts(run_id, audio_steps[0].path)
    assert any(item.path.endswith(".wav") for item in files)


def test_cli_transcribe_and_speak(tiny_run: TinyRun, tmp_path: Path) -> None:
    """transcribe prints text and speak writes a wav from the same checkpoint."""
    checkpoint = tiny_run.output_dir / "checkpoints" / "last.ckpt"
    question = json.loads((tiny_run.data_dir / "manifests" / "test.jsonl").read_text().splitlines()[0])
    audio = (tiny_run.data_dir / "manifests" / question["audio"]).resolve()

    transcribed = diffuspeech("transcribe", str(checkpoint), str(audio))
    assert transcribed.returncode == 0, transcribed.stderr[-2000:]

    output = tmp_path / "spoken.wav"
    spoken = diffuspeech("speak", str(checkpoint), "two", "-o", str(output))
    assert spoken.returncode == 0, spoken.stderr[-2000:]
    assert sf.info(output).samplerate == 16000
    assert "does not cover" not in spoken.stderr

    uncovered = diffuspeech("speak", str(checkpoint), "two ß", "-o", str(tmp_path / "uncovered.wav"))
    assert uncovered.returncode == 0, uncovered.stderr[-2000:]
    assert "does not cover 'ß'" in uncovered.stderr


def test_ask_missing_checkpoint_fails_cleanly(tmp_path: Path) -> None:
    """A missing checkpoint gives one error line, not a traceback."""
    result = diffuspeech("ask", str(tmp_path / "none.ckpt"), str(tmp_path / "q.wav"))
    assert result.returncode == 2
    assert "checkpoint" in result.stderr
    assert "Traceback" not in result.stderr


def test_evaluate_uses_stored_recipe(tiny_run: TinyRun, tmp_path: Path) -> None:
    """evaluate reads the checkpoint's own recipe and creates a new output folder."""
    checkpoint = tiny_run.output_dir / "checkpoints" / "last.ckpt"
    output_dir = tmp_path / "new" / "folder"

    result = diffuspeech(
        "evaluate", str(checkpoint), f"output_dir={output_dir}", "evaluation.max_items=2", "sampler.args.steps=3"
    )

    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((output_dir / "report.json").read_text())
    assert report["splits"]["test"]["rows"] == 2
    assert report["sampler"]["args"]["steps"] == 3


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("backbone.args.n_layers=4", "evaluate cannot change backbone.args.n_layers=4"),
        ("sampler.args.steps=0", "steps must be at least 1"),
        ("evaluation.max_items=abc", "evaluation.max_items: invalid value"),
    ],
)
def test_evaluate_rejects_bad_overrides(tiny_run: TinyRun, override: str, message: str) -> None:
    """Overrides of the model, invalid sampler values and invalid types fail before evaluation."""
    checkpoint = tiny_run.output_dir / "checkpoints" / "last.ckpt"

    result = diffuspeech("evaluate", str(checkpoint), override)

    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("command", "message"),
    [
        (["ask", "{checkpoint}", "{missing}", "-o", "{output}"], "not found"),
        (["transcribe", "{checkpoint}", "{text_file}"], "could not be decoded"),
        (["speak", "{checkpoint}", "  ", "-o", "{output}"], "text to speak is empty"),
        (["ask", "{text_file}", "{missing}", "-o", "{output}"], "cannot load checkpoint|not a diffuspeech checkpoint"),
    ],
)
def test_inference_bad_input_fails_cleanly(tiny_run: TinyRun, tmp_path: Path, command: list[str], message: str) -> None:
    """Bad files and empty text give one error line and exit code 2."""
    text_file = tmp_path / "notes.wav"
    text_file.write_text("these bytes are not audio\n")
    values = {
        "checkpoint": str(tiny_run.output_dir / "checkpoints" / "last.ckpt"),
        "missing": str(tmp_path / "missing.wav"),
        "text_file": str(text_file),
        "output": str(tmp_path / "out.wav"),
    }

    result = diffuspeech(*[part.format(**values) for part in command])

    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert re.search(message, result.stderr), result.stderr[-2000:]
