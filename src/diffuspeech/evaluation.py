"""``diffuspeech evaluate``: a JSON report on the test splits.

Metrics per split (rows chosen by ``evaluation.max_items``):

- ``asr_wer``: the model's transcripts of the questions;
- ``s2t_accuracy``: exact-match text answers (and ``s2t_thought_accuracy``);
- ``s2s_accuracy``: spoken answers, vocoded and transcribed by the
  recognizer with a closed set of the corpus's answers as its grammar;
- ``tts_wer``: the model speaking each distinct answer, judged the same way;
- codec round trip: the recognizer's WER on the original question audio
  against the same audio passed through units and the vocoder (open
  recognition over the corpus vocabulary), and likewise for reply audio
  with the closed answer set.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any

import torch
from torchmetrics.functional.text import word_error_rate
from tqdm import tqdm

from diffuspeech.data.features import UnitCache, load_row_audio
from diffuspeech.data.manifest import ManifestRow, read_manifest
from diffuspeech.inference import LoadedModel
from diffuspeech.interfaces import Recognizer
from diffuspeech.threads import limited_threads

log = logging.getLogger(__name__)


def wer(predictions: list[str], references: list[str]) -> float:
    """Return the corpus word error rate in percent."""
    if not references:
        return float("nan")
    return round(100 * float(word_error_rate(predictions, references)), 2)


def accuracy(predictions: list[str], references: list[str]) -> float:
    """Return exact-match accuracy in percent."""
    if not references:
        return float("nan")
    return round(100 * sum(p == r for p, r in zip(predictions, references, strict=True)) / len(references), 2)


class Evaluator:
    """Computes the report's metrics for one loaded model and one recognizer."""

    def __init__(self, model: LoadedModel, recognizer: Recognizer, data_dir: Path, seed: int) -> None:
        self.model = model
        self.recognizer = recognizer
        self.data_dir = data_dir
        self.seed = seed
        self.units = UnitCache(model.system.speech_tokenizer, data_dir / "cache")
        train_rows = read_manifest(data_dir / "manifests" / "train.jsonl")
        corpus_texts = [row.get(name) for row in train_rows for name in ("transcript", "question", "answer")]
        self.recognizer.set_vocabulary(text for text in corpus_texts if text)
        self.answer_choices = sorted({row.get("answer") for row in train_rows if row.get("answer")})

    def judge(self, waveforms: list[torch.Tensor], choices: list[str] | None) -> list[str]:
        """Transcribe waveforms at the vocoder's rate with the recognizer."""
        rate = self.model.system.vocoder.sample_rate
        with limited_threads(1):
            return [
                self.recognizer.transcribe(waveform, rate, choices)
                for waveform in tqdm(waveforms, desc="recognizing", unit="utt", leave=False)
            ]

    def _question_conditions(self, rows: list[ManifestRow]) -> list[dict[str, list[int]]]:
        vocabulary = self.model.system.vocabulary
        return [{"question_units": vocabulary.units_to_ids(self.units[row.get("audio")]).tolist()} for row in rows]

    def evaluate_split(self, rows: list[ManifestRow]) -> dict[str, Any]:
        """Return the metrics of one split."""
        self.units.ensure(rows)
        system = self.model.system
        conditions = self._question_conditions(rows)
        metrics: dict[str, Any] = {"rows": len(rows), "speakers": sorted({str(row.get("speaker")) for row in rows})}

        asr = self.model.run("asr", conditions, self.seed)
        metrics["asr_wer"] = wer([out.texts["transcript"] for out in asr], [row.get("transcript") for row in rows])

        s2t = self.model.run("s2t", conditions, self.seed)
        answers = [row.get("answer") for row in rows]
        metrics["s2t_accuracy"] = accuracy([out.texts["answer"] for out in s2t], answers)
        metrics["s2t_thought_accuracy"] = accuracy(
            [out.texts["thought"] for out in s2t], [row.get("thought") for row in rows]
        )

        s2s = self.model.run("s2s", conditions, self.seed)
        recognized = self.judge([self.model.vocode(out.units["reply_units"]) for out in s2s], self.answer_choices)
        metrics["s2s_accuracy"] = accuracy(recognized, answers)
        metrics["s2s_thought_accuracy"] = accuracy(
            [out.texts["thought"] for out in s2s], [row.get("thought") for row in rows]
        )

        distinct = sorted(set(answers))
        tts = self.model.run(
            "tts", [{"transcript": system.text_tokenizer.encode(text)} for text in distinct], self.seed
        )
        metrics["tts_wer"] = wer(
            self.judge([self.model.vocode(out.units["reply_units"]) for out in tts], self.answer_choices), distinct
        )

        metrics.update(self.codec_round_trip(rows))
        examples = []
        for row, a, b, c in list(zip(rows, asr, s2t, recognized, strict=True))[:5]:
            examples.append(
                {
                    "id": row.id,
                    "question": row.get("question"),
                    "transcript": a.texts["transcript"],
                    "thought": b.texts["thought"],
                    "answer": b.texts["answer"],
                    "spoken_answer_recognized": c,
                }
            )
        metrics["examples"] = examples
        return metrics

    def codec_round_trip(self, rows: list[ManifestRow]) -> dict[str, float]:
        """Compare the recognizer on original audio with the same audio through units and the vocoder."""
        system = self.model.system
        rate = system.vocoder.sample_rate
        originals, decoded, references = [], [], []
        for row in rows:
            originals.append(load_row_audio(row.get("audio"), row, "audio", rate))
            decoded.append(self.model.vocode(self.units[row.get("audio")]))
            references.append(row.get("transcript"))

        reply_rows = {row.get("reply_audio"): row for row in rows}
        reply_originals = [load_row_audio(path, row, "reply_audio", rate) for path, row in reply_rows.items()]
        reply_decoded = [self.model.vocode(self.units[path]) for path in reply_rows]
        reply_references = [row.get("answer") for row in reply_rows.values()]
        return {
            "recognizer_wer_original_questions": wer(self.judge(originals, None), references),
            "codec_round_trip_wer_questions": wer(self.judge(decoded, None), references),
            "recognizer_wer_original_answers": wer(self.judge(reply_originals, self.answer_choices), reply_references),
            "codec_round_trip_wer_answers": wer(self.judge(reply_decoded, self.answer_choices), reply_references),
        }


def evaluate(
    model: LoadedModel, recognizer: Recognizer, data_dir: Path, splits: list[str], max_items: int | None, seed: int
) -> dict[str, Any]:
    """Evaluate ``splits`` and return the report."""
    evaluator = Evaluator(model, recognizer, data_dir, seed)
    report: dict[str, Any] = {"data_dir": str(data_dir), "splits": {}}
    for split in splits:
        rows = [row for row in read_manifest(data_dir / "manifests" / f"{split}.jsonl") if "s2s" in row.tasks]
        if max_items is not None and len(rows) > max_items:
            rows = sorted(random.Random(seed).sample(rows, max_items), key=lambda row: row.line)
        log.info("Evaluating %s (%d rows)", split, len(rows))
        report["splits"][split] = evaluator.evaluate_split(rows)
    return report
