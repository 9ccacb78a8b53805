"""Measure sampling speed and accuracy of each sampler on the trained tiny model.

For speech-to-text QA on the test split it measures, per sampler setting:
sampling tokens per second (target positions filled per second of
generation), network function evaluations (NFE) per answer and exact-match
answer accuracy, as ``diffuspeech evaluate`` judges it. Timings are medians
of ``--repeats`` runs; the speed-up is the ratio of two medians from the same
run. It also measures accuracy against the step budget for each sampler (a
plot), answers with doubled length budgets (premature end markers), and for
speech-to-speech the real-time factor and the time to first audio with
block-wise streaming.

Run from the repository root after ``diffuspeech demo`` (about 5 minutes on
2 CPU cores; ``--device cuda`` on a GPU):

    python benchmarks/sampling.py

It writes ``benchmarks/results/sampling.json``, ``docs/benchmarks_accuracy_vs_steps.png``
and the sampling tables of ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import statistics
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    DEFAULT_CHECKPOINT,
    DEFAULT_DATA_DIR,
    machine,
    machine_line,
    median_seconds,
    replace_section,
    require_inputs,
)

from diffuspeech.data.features import UnitCache
from diffuspeech.data.manifest import read_manifest
from diffuspeech.evaluation import accuracy
from diffuspeech.generation import generate_batched
from diffuspeech.inference import LoadedModel, load_checkpoint
from diffuspeech.interfaces import SamplingStats

log = logging.getLogger("benchmarks.sampling")

# Sampler settings compared at the recipe's step budget; each is a list of recipe overrides.
SPEED_SETTINGS: dict[str, list[str]] = {
    "plain (recipe)": [],
    "condition cache": ["sampler.args.cache=condition"],
    "threshold 0.9": ["sampler.args.threshold=0.9"],
    "threshold 0.9 + condition cache": ["sampler.args.threshold=0.9", "sampler.args.cache=condition"],
    "threshold 0.9 + blocks of 4 + block cache": [
        "sampler.args.threshold=0.9",
        "sampler.args.block_length=4",
        "sampler.args.cache=block",
    ],
}

# Samplers of the accuracy-against-steps plot.
FAMILY: dict[str, list[str]] = {
    "confidence (probability)": [],
    "margin": ["sampler.args.confidence=margin"],
    "entropy": ["sampler.args.confidence=entropy"],
    "random remasking": ["sampler.name=random_remasking"],
    "semi-AR blocks of 4": ["sampler.name=semi_ar", "sampler.args.block_length=4"],
    "parallel (threshold 0.9, cache)": ["sampler.name=parallel", "sampler.args.block_length=4"],
    "ancestral (MDLM)": ["sampler.name=ancestral"],
}
STEP_BUDGETS = (1, 2, 4, 8, 16)


def s2t_run(model: LoadedModel, conditions: list[dict[str, list[int]]], answers: list[str]) -> dict[str, Any]:
    """Answer every condition once; return accuracy, NFE per answer and the target positions filled."""
    stats: list[SamplingStats] = []
    batch_size = int(model.system.recipe.training.batch_size)
    results = generate_batched(model.system, model.backbone, "s2t", conditions, batch_size, 0, stats)
    evaluations = sum(item.sequence_evaluations for item in stats)
    targets = len(conditions) * (model.system.budgets.thought + model.system.budgets.answer)
    predicted = [result.texts["answer"] for result in results]
    return {
        "accuracy": accuracy(predicted, answers),
        "nfe_per_answer": round(evaluations / len(conditions), 2),
        "targets": targets,
        "empty_answers": sum(not text for text in predicted),
        "thought_words": statistics.mean(len(result.texts["thought"].split()) for result in results),
    }


def measure_speed(
    model: LoadedModel, conditions: list[dict[str, list[int]]], answers: list[str], repeats: int
) -> list[dict[str, Any]]:
    """Time each speed setting at the recipe's step budget."""
    rows = []
    for label, overrides in SPEED_SETTINGS.items():
        variant = model.with_sampler(overrides) if overrides else model
        seconds, result = median_seconds(lambda variant=variant: s2t_run(variant, conditions, answers), repeats)
        rows.append({"setting": label, "overrides": overrides, "seconds": round(seconds, 3), **result})
        rows[-1]["tokens_per_second"] = round(result["targets"] / seconds, 1)
        log.info("%s: %s", label, rows[-1])
    plain = rows[0]["tokens_per_second"]
    for row in rows:
        row["speedup"] = round(row["tokens_per_second"] / plain, 2)
    return rows


def measure_steps(
    model: LoadedModel, conditions: list[dict[str, list[int]]], answers: list[str]
) -> dict[str, list[dict[str, Any]]]:
    """Accuracy and NFE per answer for each sampler of the family at each step budget."""
    curves: dict[str, list[dict[str, Any]]] = {}
    for label, overrides in FAMILY.items():
        curves[label] = []
        for steps in STEP_BUDGETS:
            order = "joint" if steps < 2 else model.system.recipe.sampler.args.get("order", "joint")
            variant = model.with_sampler([*overrides, f"sampler.args.steps={steps}", f"sampler.args.order={order}"])
            result = s2t_run(variant, conditions, answers)
            curves[label].append({"steps": steps, "accuracy": result["accuracy"], "nfe": result["nfe_per_answer"]})
        log.info("%s: %s", label, curves[label])
    return curves


def measure_budgets(
    model: LoadedModel, conditions: list[dict[str, list[int]]], answers: list[str]
) -> list[dict[str, Any]]:
    """Answers with the trained length budgets and with doubled ones, with and without min_content."""
    budgets = model.system.budgets
    doubled = dataclasses.replace(budgets, thought=2 * budgets.thought, answer=2 * budgets.answer)
    rows = []
    for label, chosen, overrides in (
        ("trained budgets", budgets, []),
        ("doubled budgets", doubled, []),
        ("doubled budgets, min_content=1", doubled, ["sampler.args.min_content=1"]),
    ):
        variant = model.with_sampler(overrides) if overrides else model
        variant = LoadedModel(dataclasses.replace(variant.system, budgets=chosen), variant.backbone)
        result = s2t_run(variant, conditions, answers)
        rows.append({"setting": label, "thought": chosen.thought, "answer": chosen.answer, **result})
        log.info("%s: %s", label, rows[-1])
    return rows


def measure_streaming(model: LoadedModel, audio_paths: list[Path], repeats: int) -> list[dict[str, Any]]:
    """Real-time factor and time to first audio of spoken answers, one question at a time."""
    rows = []
    rate = model.system.vocoder.sample_rate
    for label, overrides in (
        ("one shot (recipe)", []),
        ("streamed, blocks of 8", ["sampler.args.block_length=8"]),
        (
            "streamed, blocks of 8, threshold 0.9 + cache",
            ["sampler.args.block_length=8", "sampler.args.threshold=0.9", "sampler.args.cache=block"],
        ),
    ):
        variant = model.with_sampler(overrides) if overrides else model
        first_audio, totals, durations = [], [], []
        for path in audio_paths:

            def answer(path: Path = path, variant: LoadedModel = variant) -> list[Any]:
                return list(variant.ask_stream(path))

            seconds, chunks = median_seconds(answer, repeats)
            audio = [chunk for chunk in chunks if chunk.waveform.numel()]
            totals.append(seconds)
            durations.append(sum(chunk.waveform.numel() for chunk in audio) / rate)
            first_audio.append(audio[0].seconds if audio else seconds)
        rows.append(
            {
                "setting": label,
                "questions": len(audio_paths),
                "time_to_first_audio_s": round(statistics.median(first_audio), 3),
                "answer_seconds": round(statistics.median(totals), 3),
                "audio_seconds": round(statistics.median(durations), 3),
                "rtf": round(sum(totals) / max(sum(durations), 1e-9), 3),
            }
        )
        log.info("%s: %s", label, rows[-1])
    return rows


def plot_steps(curves: dict[str, list[dict[str, Any]]], path: Path) -> None:
    """Plot accuracy against the step budget, one line per sampler."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4.5))
    for label, points in curves.items():
        axis.plot([p["steps"] for p in points], [p["accuracy"] for p in points], marker="o", label=label)
    axis.set_xscale("log", base=2)
    axis.set_xlabel("step budget (steps)")
    axis.set_ylabel("speech-to-text answer accuracy (%)")
    axis.set_title("Accuracy against steps, tiny recipe, test split")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def tables(report: dict[str, Any]) -> str:
    """Render the sampling section of the benchmark page."""
    lines = [machine_line(report["machine"]), ""]
    lines += [
        f"Speech-to-text QA, {report['items']} test questions, batch {report['batch_size']}, "
        f"step budget {report['steps']} (`{report['sampler']}`), median of {report['repeats']} runs:",
        "",
        "| setting | tokens/s | speed-up | NFE per answer | accuracy (%) |",
        "|---|---|---|---|---|",
    ]
    for row in report["speed"]:
        lines.append(
            f"| {row['setting']} | {row['tokens_per_second']} | {row['speedup']}x | {row['nfe_per_answer']} "
            f"| {row['accuracy']} |"
        )
    lines += [
        "",
        "Length budgets (plain sampler):",
        "",
        "| setting | thought / answer budget | accuracy (%) | empty answers | mean thought words |",
        "|---|---|---|---|---|",
    ]
    for row in report["budgets"]:
        lines.append(
            f"| {row['setting']} | {row['thought']} / {row['answer']} | {row['accuracy']} | {row['empty_answers']} "
            f"| {row['thought_words']:.2f} |"
        )
    lines += [
        "",
        f"Speech-to-speech, {report['streaming'][0]['questions']} questions one at a time, vocoding included "
        f"(median of {report['repeats']} runs per question):",
        "",
        "| setting | time to first audio (s) | whole answer (s) | audio (s) | RTF |",
        "|---|---|---|---|---|",
    ]
    for row in report["streaming"]:
        lines.append(
            f"| {row['setting']} | {row['time_to_first_audio_s']} | {row['answer_seconds']} | "
            f"{row['audio_seconds']} | {row['rtf']} |"
        )
    lines += ["", "Accuracy (%) and NFE per answer against the step budget:", ""]
    header = "| sampler | " + " | ".join(f"{steps} steps" for steps in STEP_BUDGETS) + " |"
    lines += [header, "|---" * (len(STEP_BUDGETS) + 1) + "|"]
    for label, points in report["steps_curves"].items():
        cells = " | ".join(f"{p['accuracy']} ({p['nfe']})" for p in points)
        lines.append(f"| {label} | {cells} |")
    lines += ["", "![accuracy against steps](benchmarks_accuracy_vs_steps.png)"]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT, help="trained tiny checkpoint")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="corpus folder of the checkpoint")
    parser.add_argument("--items", type=int, default=192, help="test questions for speech-to-text")
    parser.add_argument("--spoken-items", type=int, default=6, help="questions for speech-to-speech streaming")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per setting; the median is reported")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/sampling.json"))
    parser.add_argument("--no-page", action="store_true", help="do not rewrite docs/benchmarks.md")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    require_inputs(args.checkpoint, args.data_dir)

    info = machine()
    model = load_checkpoint(args.checkpoint, args.device)
    rows = read_manifest(args.data_dir / "manifests" / "test.jsonl")[: args.items]
    units = UnitCache(model.system.speech_tokenizer, args.data_dir / "cache")
    units.ensure(rows)
    vocabulary = model.system.vocabulary
    conditions = [{"question_units": vocabulary.units_to_ids(units[row.get("audio")]).tolist()} for row in rows]
    answers = [str(row.get("answer")) for row in rows]

    # One untimed pass loads kernels and caches before any timing.
    s2t_run(model, conditions[:8], answers[:8])
    report: dict[str, Any] = {
        "machine": info,
        "checkpoint": str(args.checkpoint),
        "items": len(rows),
        "batch_size": int(model.system.recipe.training.batch_size),
        "steps": int(model.system.recipe.sampler.args.steps),
        "sampler": f"{model.system.recipe.sampler.name} {dict(model.system.recipe.sampler.args)}",
        "repeats": args.repeats,
    }
    report["speed"] = measure_speed(model, conditions, answers, args.repeats)
    report["budgets"] = measure_budgets(model, conditions, answers)
    audio_paths = [Path(str(row.get("audio"))) for row in rows[: args.spoken_items]]
    report["streaming"] = measure_streaming(model, audio_paths, args.repeats)
    report["steps_curves"] = measure_steps(model, conditions, answers)

    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.output}")
    if not args.no_page:
        plot_steps(report["steps_curves"], Path("docs/benchmarks_accuracy_vs_steps.png"))
        replace_section("sampling", tables(report))
        print("updated docs/benchmarks.md and docs/benchmarks_accuracy_vs_steps.png")


if __name__ == "__main__":
    main()
