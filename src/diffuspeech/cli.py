"""The diffuspeech command line: build corpora, train, evaluate and run speech-text diffusion models."""

from __future__ import annotations

import argparse
import inspect
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from diffuspeech.errors import DiffuSpeechError, RecipeError

log = logging.getLogger("diffuspeech")

DEFAULT_RECIPE = "tiny"


def _recipe(args: argparse.Namespace) -> DictConfig:
    from diffuspeech.recipe import load_recipe

    return load_recipe(args.recipe, args.overrides)


def command_plugins(args: argparse.Namespace) -> None:
    from diffuspeech.interfaces import PLUGIN_KINDS
    from diffuspeech.registry import get_registry

    registry = get_registry()
    entries = registry.entries()
    for kind in PLUGIN_KINDS:
        print(f"{kind}:")
        for entry in (e for e in entries if e.kind == kind):
            print(f"  {entry.name:<16} {entry.description}")
        if not any(e.kind == kind for e in entries):
            print("  (none installed)")


def _prepare(recipe: DictConfig) -> Path:
    from diffuspeech.data.corpus import prepare_corpus
    from diffuspeech.recipe import build_component

    synthesizer = build_component(recipe, "corpus.synthesizer", "speech_synthesizer")
    return prepare_corpus(recipe, synthesizer)


def command_prepare(args: argparse.Namespace) -> None:
    data_dir = _prepare(_recipe(args))
    print(f"corpus written to {data_dir}")
    print((data_dir / "corpus.json").read_text(encoding="utf-8"))


def command_train(args: argparse.Namespace) -> None:
    if args.dry_run:
        from diffuspeech.dry_run import dry_run

        print("\n".join(dry_run(_recipe(args)).lines()))
        return

    from diffuspeech.training.run import train

    checkpoint = train(_recipe(args))
    print(f"last checkpoint: {checkpoint}")


def command_train_vocoder(args: argparse.Namespace) -> None:
    from diffuspeech.training.vocoder import train_vocoder

    folder = train_vocoder(_recipe(args))
    print(f"unit HiFi-GAN written to {folder} (set vocoder.args.model_path={folder})")


def command_fit_tokenizer(args: argparse.Namespace) -> None:
    from diffuspeech.data.tokenizer_fitting import fit_tokenizer_file

    path = fit_tokenizer_file(_recipe(args), Path(args.output) if args.output else None, args.force)
    print(f"centroids written to {path}")


def command_validate_data(args: argparse.Namespace) -> int:
    from diffuspeech.data.validation import check_manifest

    path = Path(args.manifest)
    cache_dir = Path(args.cache_dir) if args.cache_dir else path.resolve().parent.parent / "cache"
    result = check_manifest(path, read_samples=not args.header_only, cache_dir=cache_dir)
    for row in result.bad:
        print(f"{row.manifest}:{row.line}: id {row.id or '?'}: {row.kind}: {row.reason}")
    counts = ", ".join(f"{kind} {count}" for kind, count in sorted(result.counts().items()))
    print(f"{result.checked} rows checked, {len(result.bad)} bad" + (f" ({counts})" if counts else ""))
    return 1 if result.bad else 0


EVALUATE_KEYS = ("data_dir", "output_dir", "seed", "evaluation.", "sampler.")
"""Recipe keys that ``evaluate`` may override; the model itself comes from the checkpoint."""


def _evaluate(recipe: DictConfig, checkpoint: Path, sampler_overrides: Sequence[str] = ()) -> dict[str, Any]:
    from diffuspeech.data.manifest import check_splits
    from diffuspeech.evaluation import evaluate
    from diffuspeech.inference import load_checkpoint
    from diffuspeech.recipe import build_component
    from diffuspeech.settings import check_core_settings

    check_core_settings(recipe)
    settings = recipe.evaluation
    check_splits(Path(str(recipe.data_dir)) / "manifests", list(settings.splits), "evaluation.splits")
    model = load_checkpoint(checkpoint)
    if sampler_overrides:
        model = model.with_sampler(sampler_overrides)
    recognizer = build_component(recipe, "evaluation.recognizer", "recognizer")
    max_items = int(settings.max_items) if settings.get("max_items") else None
    report = evaluate(model, recognizer, Path(str(recipe.data_dir)), list(settings.splits), max_items, int(recipe.seed))
    report["checkpoint"] = str(checkpoint)
    report["sampler"] = OmegaConf.to_container(model.system.recipe.sampler, resolve=True)
    path = Path(str(recipe.output_dir)) / "report.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    report["report_path"] = str(path)
    return report


SUMMARY_KEYS = (
    "asr_wer",
    "s2t_accuracy",
    "s2s_accuracy",
    "tts_wer",
    "recognizer_wer_original_questions",
    "codec_round_trip_wer_questions",
    "recognizer_wer_original_answers",
    "codec_round_trip_wer_answers",
)


def print_summary(report: dict[str, Any]) -> None:
    """Print the report's main metrics as a table, one column per split."""
    splits = list(report["splits"])
    print(f"{'metric (%)':<36}" + "".join(f"{split:>20}" for split in splits))
    for key in SUMMARY_KEYS:
        print(f"{key:<36}" + "".join(f"{report['splits'][s].get(key, float('nan')):>20}" for s in splits))
    print(f"report: {report['report_path']}")


def command_evaluate(args: argparse.Namespace) -> None:
    from diffuspeech.inference import stored_recipe
    from diffuspeech.recipe import apply_overrides

    checkpoint = Path(args.checkpoint)
    fixed = [item for item in args.overrides if not item.split("=", 1)[0].startswith(EVALUATE_KEYS)]
    if fixed:
        raise RecipeError(
            f"evaluate cannot change {', '.join(fixed)}: the model comes from the checkpoint; "
            f"override only {', '.join(key.rstrip('.') + ('.*' if key.endswith('.') else '') for key in EVALUATE_KEYS)}"
        )
    recipe = apply_overrides(stored_recipe(checkpoint), args.overrides)
    sampler_overrides = [item for item in args.overrides if item.startswith("sampler.")]
    print_summary(_evaluate(recipe, checkpoint, sampler_overrides))


def _save(path: Path, waveform: Any, sample_rate: int) -> None:
    from diffuspeech.audio import save_audio

    save_audio(path, waveform, sample_rate)
    print(f"wrote {path} ({waveform.numel() / sample_rate:.2f} s)")


def command_ask(args: argparse.Namespace) -> None:
    from diffuspeech.inference import load_checkpoint
    from diffuspeech.recipe import apply_overrides, resolve_component

    model = load_checkpoint(Path(args.checkpoint))
    overrides = list(args.sampler)
    if args.stream and not any(item.startswith("sampler.args.block_length=") for item in overrides):
        # Only samplers that decode in blocks can stream, so the others return the reply in one piece.
        names = [item.split("=", 1)[1] for item in overrides if item.startswith("sampler.name=")]
        chosen = apply_overrides(model.system.recipe, [f"sampler.name={names[-1]}"]) if names else model.system.recipe
        if "block_length" in inspect.signature(resolve_component(chosen, "sampler", "sampler")).parameters:
            overrides.append("sampler.args.block_length=8")
    if overrides:
        model = model.with_sampler(overrides)
    if not args.stream:
        thought, waveform = model.ask(Path(args.audio), seed=args.seed)
        print(f"thought: {thought}")
        _save(Path(args.output), waveform, model.system.vocoder.sample_rate)
        return

    import torch

    chunks = list(model.ask_stream(Path(args.audio), seed=args.seed))
    audio = [chunk for chunk in chunks if chunk.waveform.numel()]
    print(f"thought: {chunks[-1].thought}")
    if audio:
        print(f"time to first audio: {audio[0].seconds:.3f} s, whole answer: {chunks[-1].seconds:.3f} s")
    print(f"audio chunks: {len(audio)}")
    waveform = torch.cat([chunk.waveform for chunk in chunks])
    _save(Path(args.output), waveform, model.system.vocoder.sample_rate)


def command_transcribe(args: argparse.Namespace) -> None:
    from diffuspeech.inference import load_checkpoint

    print(load_checkpoint(Path(args.checkpoint)).transcribe(Path(args.audio), seed=args.seed))


def command_speak(args: argparse.Namespace) -> None:
    from diffuspeech.inference import load_checkpoint

    model = load_checkpoint(Path(args.checkpoint))
    _save(Path(args.output), model.speak(args.text, seed=args.seed), model.system.vocoder.sample_rate)


def command_demo(args: argparse.Namespace) -> None:
    from diffuspeech.data.manifest import read_manifest
    from diffuspeech.inference import load_checkpoint
    from diffuspeech.training.run import train

    recipe = _recipe(args)
    output_dir = Path(str(recipe.output_dir))
    print(f"== 1/4 prepare: corpus in {recipe.data_dir}")
    data_dir = _prepare(recipe)
    print(f"== 2/4 train: run folder {output_dir}")
    checkpoint = train(recipe)
    print("== 3/4 evaluate")
    report = _evaluate(recipe, checkpoint)
    print_summary(report)

    print("== 4/4 ask one held-out spoken question")
    row = read_manifest(data_dir / "manifests" / "test.jsonl")[0]
    model = load_checkpoint(checkpoint)
    thought, waveform = model.ask(Path(row.get("audio")), seed=int(recipe.seed))
    print(f"question ({row.get('speaker')}): {row.get('question')}  [{row.get('audio')}]")
    print(f"thought: {thought}")
    _save(output_dir / "answer.wav", waveform, model.system.vocoder.sample_rate)
    _plots(recipe, waveform, model.system.vocoder.sample_rate, thought)


def _plots(recipe: DictConfig, waveform: Any, sample_rate: int, thought: str) -> None:
    from diffuspeech.plots import plot_spectrogram, plot_training_curves
    from diffuspeech.training.tracking import tracking_uri

    output_dir = Path(str(recipe.output_dir))
    run_id = (output_dir / "mlflow_run_id").read_text(encoding="utf-8").strip()
    curves = plot_training_curves(tracking_uri(recipe), run_id, output_dir / "training_curves.png")
    spectrogram = plot_spectrogram(waveform, sample_rate, output_dir / "answer.png", f"spoken answer ({thought})")
    print(f"plots: {curves}, {spectrogram}")


def _add_recipe(parser: argparse.ArgumentParser, default: str | None = None) -> None:
    if default is None:
        parser.add_argument("recipe", help="recipe YAML path, or a name under recipes/ (e.g. tiny)")
    else:
        parser.add_argument("recipe", nargs="?", default=default, help=f"recipe path or name (default: {default})")
    parser.add_argument("overrides", nargs="*", help="recipe overrides as key=value, e.g. training.max_steps=10")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="diffuspeech", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    commands = parser.add_subparsers(dest="command", required=True)

    commands.add_parser("plugins", help="list installed plugins by kind").set_defaults(func=command_plugins)

    prepare = commands.add_parser("prepare", help="synthesize the recipe's spoken QA corpus")
    _add_recipe(prepare, DEFAULT_RECIPE)
    prepare.set_defaults(func=command_prepare)

    train = commands.add_parser("train", help="train the recipe's model")
    _add_recipe(train, DEFAULT_RECIPE)
    train.add_argument(
        "--dry-run",
        action="store_true",
        help="compose the recipe, build the backbone on the meta device and print its parameter count "
        "and an estimate of memory per GPU; reads no weights or data",
    )
    train.set_defaults(func=command_train)

    train_vocoder = commands.add_parser(
        "train-vocoder", help="train a unit HiFi-GAN on the recipe's speech units (recipes/vocoder/)"
    )
    _add_recipe(train_vocoder, "vocoder/tiny")
    train_vocoder.set_defaults(func=command_train_vocoder)

    fit_tokenizer = commands.add_parser(
        "fit-tokenizer", help="fit the speech tokenizer's k-means centroids on the training split and write them"
    )
    _add_recipe(fit_tokenizer)
    fit_tokenizer.add_argument(
        "-o", "--output", help="centroid file to write (default: speech_tokenizer.args.centroids_path)"
    )
    fit_tokenizer.add_argument("--force", action="store_true", help="overwrite an existing centroid file")
    fit_tokenizer.set_defaults(func=command_fit_tokenizer)

    validate = commands.add_parser("validate-data", help="check every row of a manifest; exit code 1 when a row is bad")
    validate.add_argument("manifest", help="JSONL manifest, e.g. outputs/data/arithmetic/manifests/train.jsonl")
    validate.add_argument(
        "--cache-dir", help="unit cache folder to check units in (default: the cache folder beside manifests/)"
    )
    validate.add_argument("--header-only", action="store_true", help="read audio headers only, not every sample")
    validate.set_defaults(func=command_validate_data)

    evaluate = commands.add_parser("evaluate", help="write a JSON report on the test splits")
    evaluate.add_argument("checkpoint", help="checkpoint written by train; its stored recipe is used")
    evaluate.add_argument("overrides", nargs="*", help="overrides of the stored recipe, e.g. evaluation.max_items=50")
    evaluate.set_defaults(func=command_evaluate)

    for name, helptext, func in (
        ("ask", "answer a spoken question: print the thought, write the spoken answer", command_ask),
        ("transcribe", "print the transcript of a wav file", command_transcribe),
    ):
        sub = commands.add_parser(name, help=helptext)
        sub.add_argument("checkpoint", help="checkpoint written by train")
        sub.add_argument("audio", help="wav file")
        if name == "ask":
            sub.add_argument("-o", "--output", default="answer.wav", help="wav file to write the spoken answer to")
            sub.add_argument(
                "--stream",
                action="store_true",
                help="vocode the reply block by block and print the time to first audio "
                "(sets sampler.args.block_length=8 unless --sampler gives it)",
            )
            sub.add_argument(
                "--sampler",
                action="append",
                default=[],
                metavar="KEY=VALUE",
                help="override a sampler setting of the stored recipe, e.g. --sampler sampler.args.steps=16",
            )
        sub.add_argument("--seed", type=int, default=0, help="sampling seed")
        sub.set_defaults(func=func)

    speak = commands.add_parser("speak", help="speak text into a wav file")
    speak.add_argument("checkpoint", help="checkpoint written by train")
    speak.add_argument("text")
    speak.add_argument("-o", "--output", default="speech.wav", help="wav file to write")
    speak.add_argument("--seed", type=int, default=0, help="sampling seed")
    speak.set_defaults(func=command_speak)

    demo = commands.add_parser("demo", help="prepare, train, evaluate and answer one held-out question")
    _add_recipe(demo, DEFAULT_RECIPE)
    demo.set_defaults(func=command_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    for name in ("diffuspeech", "diffuspeech_plugins"):
        logger = logging.getLogger(name)
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG if args.verbose else logging.INFO)
    # speechbrain logs its import-time settings at INFO; they are not results.
    logging.getLogger("speechbrain").setLevel(logging.WARNING)
    try:
        code = args.func(args)
    except DiffuSpeechError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
