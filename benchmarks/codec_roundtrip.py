"""Measure how much speech survives the mel k-means tokenizer and the Griffin-Lim vocoder.

The corpus is spoken arithmetic ("what is seven plus five", "nine minus four is
five") synthesized with flite voices. The tokenizer is fitted on one set of
sentences and tested on another with no sentence in common. Each test
utterance is recognized by pocketsphinx before and after encode -> decode,
with recognition restricted to the corpus words in any order, and the word
error rates (WER) are compared.

Run from the repository root (about 5 minutes on 2 CPU cores):

    python benchmarks/codec_roundtrip.py --output docs/codec.md
"""

from __future__ import annotations

import argparse
import inspect
import logging
import os
import platform
import random
import subprocess
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import soundfile as sf
import torch
import torchaudio
from threadpoolctl import threadpool_limits
from torchmetrics.functional.text import word_error_rate

from diffuspeech.data.arithmetic import NUMBER_WORDS
from diffuspeech_plugins.recognizers.pocketsphinx_recognizer import PocketsphinxRecognizer
from diffuspeech_plugins.speech_tokenizers.mel_kmeans import MelKMeansTokenizer
from diffuspeech_plugins.vocoders.griffin_lim import GriffinLimVocoder

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
DEFAULT_VOICES = ("awb", "kal16", "rms", "slt")


@dataclass(frozen=True)
class Utterance:
    """One spoken sentence: its text, flite voice and (samples,) waveform at 16 kHz."""

    text: str
    voice: str
    waveform: torch.Tensor


@dataclass
class Result:
    """WER of one condition over the test set, in percent, with timings in seconds."""

    condition: str
    num_units: int | None = None
    normalization: str = ""
    n_iter: int | None = None
    vocoder_seed: int | None = None
    wer_by_voice: dict[str, float] = field(default_factory=dict)
    wer_all: float = float("nan")
    fit_seconds: float | None = None
    encode_seconds_per_second: float | None = None
    decode_seconds_per_second: float | None = None


@dataclass(frozen=True)
class RunInfo:
    """Conditions of the whole run: wall time in seconds, thread count and the load average at start."""

    total_seconds: float
    threads: int
    load_average: float


def arithmetic_sentence(rng: random.Random) -> str:
    """Draw one question or statement about a sum or difference with results up to twenty."""
    if rng.random() < 0.5:
        left, right = rng.randint(0, 10), rng.randint(0, 10)
        operator, result = "plus", left + right
    else:
        left = rng.randint(0, 20)
        right = rng.randint(0, left)
        operator, result = "minus", left - right
    expression = f"{NUMBER_WORDS[left]} {operator} {NUMBER_WORDS[right]}"
    if rng.random() < 0.5:
        return f"what is {expression}"
    return f"{expression} is {NUMBER_WORDS[result]}"


def draw_sentences(rng: random.Random, count: int, exclude: set[str]) -> list[str]:
    """Draw ``count`` distinct sentences that are not in ``exclude``."""
    sentences: list[str] = []
    seen = set(exclude)
    for _ in range(count * 100):
        if len(sentences) == count:
            return sentences
        sentence = arithmetic_sentence(rng)
        if sentence not in seen:
            seen.add(sentence)
            sentences.append(sentence)
    raise ValueError(f"could only draw {len(sentences)} distinct sentences of {count} requested; request fewer")


def speak(text: str, voice: str, path: Path) -> torch.Tensor:
    """Synthesize ``text`` with the flite program and return a float32 (samples,) waveform at 16 kHz."""
    subprocess.run(["flite", "-voice", voice, "-t", text, "-o", str(path)], check=True)
    samples, rate = sf.read(path, dtype="float32")
    waveform = torch.from_numpy(samples)
    if rate != SAMPLE_RATE:
        waveform = torchaudio.functional.resample(waveform, rate, SAMPLE_RATE)
    return waveform


def synthesize_corpus(sentences: Sequence[str], voices: Sequence[str], directory: Path) -> list[Utterance]:
    """Speak every sentence with every voice."""
    utterances = []
    for index, text in enumerate(sentences):
        for voice in voices:
            waveform = speak(text, voice, directory / f"{index}_{voice}.wav")
            utterances.append(Utterance(text, voice, waveform))
    return utterances


def score(
    condition: Result,
    utterances: Sequence[Utterance],
    recognizer: PocketsphinxRecognizer,
    transform: Callable[[torch.Tensor], torch.Tensor],
) -> None:
    """Recognize ``transform(waveform)`` for each utterance and store the WER per voice and overall."""
    hypotheses: dict[str, list[str]] = defaultdict(list)
    references: dict[str, list[str]] = defaultdict(list)
    for utterance in utterances:
        transcript = recognizer.transcribe(transform(utterance.waveform), SAMPLE_RATE)
        for key in (utterance.voice, "all"):
            hypotheses[key].append(transcript)
            references[key].append(utterance.text)
    for key in hypotheses:
        rate = 100.0 * float(word_error_rate(hypotheses[key], references[key]))
        if key == "all":
            condition.wer_all = rate
        else:
            condition.wer_by_voice[key] = rate


def run_codec(
    train: Sequence[Utterance],
    test: Sequence[Utterance],
    recognizer: PocketsphinxRecognizer,
    num_units: int,
    normalization: str,
    vocoder_settings: Sequence[tuple[int, int]],
    seed: int,
) -> list[Result]:
    """Fit one tokenizer and score the round trip once per Griffin-Lim (n_iter, seed) setting."""
    tokenizer = MelKMeansTokenizer(num_units=num_units, normalization=normalization, seed=seed)
    started = time.perf_counter()
    tokenizer.fit(utterance.waveform for utterance in train)
    fit_seconds = time.perf_counter() - started

    results = []
    for n_iter, vocoder_seed in vocoder_settings:
        vocoder = GriffinLimVocoder(
            num_units=num_units, frame_rate=tokenizer.frame_rate, n_iter=n_iter, seed=vocoder_seed
        )
        vocoder.attach(tokenizer)
        timings = {"encode": 0.0, "decode": 0.0, "audio": 0.0}

        def round_trip(
            waveform: torch.Tensor,
            vocoder: GriffinLimVocoder = vocoder,
            timings: dict[str, float] = timings,
        ) -> torch.Tensor:
            started = time.perf_counter()
            units = tokenizer.encode(waveform)
            encoded = time.perf_counter()
            decoded = vocoder.decode(units)
            timings["encode"] += encoded - started
            timings["decode"] += time.perf_counter() - encoded
            timings["audio"] += waveform.numel() / SAMPLE_RATE
            return decoded

        result = Result(
            condition="round trip",
            num_units=num_units,
            normalization=normalization,
            n_iter=n_iter,
            vocoder_seed=vocoder_seed,
            fit_seconds=fit_seconds,
        )
        score(result, test, recognizer, round_trip)
        result.encode_seconds_per_second = timings["encode"] / timings["audio"]
        result.decode_seconds_per_second = timings["decode"] / timings["audio"]
        log.info(
            "%d units, %s normalization, n_iter %d, vocoder seed %d: WER %.1f%%",
            num_units,
            normalization,
            n_iter,
            vocoder_seed,
            result.wer_all,
        )
        results.append(result)
    return results


def format_number(value: float | None, digits: int) -> str:
    """Format ``value`` with ``digits`` decimals, or a dash when it does not apply."""
    return "–" if value is None else f"{value:.{digits}f}"


def render_markdown(
    results: Sequence[Result],
    voices: Sequence[str],
    train: Sequence[Utterance],
    test: Sequence[Utterance],
    run: RunInfo,
) -> str:
    """Return the benchmark page: setup, the results table and the best setting."""
    test_words = sum(len(utterance.text.split()) for utterance in test)
    test_sentences = len({utterance.text for utterance in test})
    train_sentences = len({utterance.text for utterance in train})
    train_audio = sum(utterance.waveform.numel() for utterance in train) / SAMPLE_RATE
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    load_note = ""
    if run.load_average >= 1.0:
        load_note = ", so other processes shared the cores and the timings are upper bounds"
    header = ["condition", "units", "normalization", "n_iter", "vocoder seed", "WER all %"]
    header += [f"WER {voice} %" for voice in voices]
    header += ["fit s", "encode s per audio s", "decode s per audio s"]
    lines = [
        "# Codec round trip: mel k-means units and Griffin-Lim",
        "",
        "Generated by `python benchmarks/codec_roundtrip.py`. It measures how much of the",
        "words survive `MelKMeansTokenizer` (speechbrain Fbank log-mels, 80 mel bins, two 10 ms",
        "frames stacked into one 50 Hz unit) followed by `GriffinLimVocoder`.",
        "",
        "## Setup",
        "",
        f"- Machine: {os.cpu_count()} CPU cores, {gpu}; {platform.platform()}; "
        f"torch {torch.__version__}, torchaudio {torchaudio.__version__}. The run used {run.threads} "
        "thread(s) for torch and for the OpenMP and BLAS pools of scikit-learn. The 1-minute load average "
        f"at its start was {run.load_average:.1f}{load_note}.",
        f"- Corpus: spoken arithmetic with flite voices {', '.join(voices)}. The tokenizer is fitted on "
        f"{train_sentences} sentences × {len(voices)} voices ({train_audio:.0f} s of audio) and tested on "
        f"{test_sentences} other sentences × {len(voices)} voices ({test_words} words, so one word is "
        f"{100 / test_words:.2f} % WER overall and about {100 * len(voices) / test_words:.1f} % per voice).",
        "- Judge: `PocketsphinxRecognizer` after `set_vocabulary`, which accepts any sequence of the "
        f"{len(NUMBER_WORDS) + 4} corpus words with equal probability.",
        "- Fit time is k-means plus feature extraction over the training set. Encode and decode times "
        "are per second of test audio, on one process.",
        f"- Whole run: {run.total_seconds / 60:.1f} minutes.",
        "",
        "## Results",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
    ]
    for result in results:
        row = [
            result.condition,
            format_number(result.num_units, 0) if result.num_units else "–",
            result.normalization or "–",
            str(result.n_iter) if result.n_iter else "–",
            "–" if result.vocoder_seed is None else str(result.vocoder_seed),
            f"{result.wer_all:.1f}",
        ]
        row += [f"{result.wer_by_voice.get(voice, float('nan')):.1f}" for voice in voices]
        row += [
            format_number(result.fit_seconds, 1),
            format_number(result.encode_seconds_per_second, 3),
            format_number(result.decode_seconds_per_second, 3),
        ]
        lines.append("| " + " | ".join(row) + " |")

    round_trips = [result for result in results if result.condition == "round trip"]
    if round_trips:
        best = min(round_trips, key=lambda result: result.wer_all)
        lines += [
            "",
            f"Lowest round-trip WER in this run: {best.wer_all:.1f} % with {best.num_units} units, "
            f"{best.normalization} normalization, n_iter {best.n_iter} and vocoder seed {best.vocoder_seed}.",
        ]

    tokenizer_defaults = inspect.signature(MelKMeansTokenizer).parameters
    vocoder_defaults = inspect.signature(GriffinLimVocoder).parameters
    lines += [
        "",
        "## Notes",
        "",
        f"- Plugin defaults: `MelKMeansTokenizer(num_units={tokenizer_defaults['num_units'].default}, "
        f"normalization={tokenizer_defaults['normalization'].default!r})` and "
        f"`GriffinLimVocoder(n_iter={vocoder_defaults['n_iter'].default})`.",
        "- The rows that differ only in vocoder seed show how much WER moves with Griffin-Lim's random "
        "initial phase alone. Differences between other rows that are no larger than that spread are "
        "within noise.",
        "- The judge's pocketsphinx decoder carries its cepstral mean normalization from one utterance to the "
        "next, so a transcript can depend on the utterances decoded before it. Every condition decodes the "
        "test set in the same order.",
    ]
    return "\n".join(lines) + "\n"


def parse_arguments() -> argparse.Namespace:
    """Read the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])

    parser.add_argument("--units", type=int, nargs="+", default=[256, 512, 1024], help="codebook sizes to fit")
    parser.add_argument(
        "--normalizations",
        nargs="+",
        default=["none", "utterance"],
        choices=["none", "utterance"],
        help="tokenizer normalization modes to fit",
    )

    parser.add_argument(
        "--iterations",
        type=int,
        nargs="+",
        default=[8, 16, 32, 64],
        help="Griffin-Lim iteration counts, each tried with the largest codebook and no normalization",
    )
    parser.add_argument("--default-iterations", type=int, default=16, help="Griffin-Lim iterations elsewhere")
    parser.add_argument(
        "--vocoder-seeds",
        type=int,
        nargs="*",
        default=[1, 2],
        help=(
            "extra Griffin-Lim seeds (random initial phase) tried with the largest codebook, no normalization "
            "and --default-iterations, to show how much WER varies from the phase alone. Seed 0 is always run"
        ),
    )

    parser.add_argument("--voices", nargs="+", default=list(DEFAULT_VOICES), help="flite voice names")
    parser.add_argument("--train-sentences", type=int, default=120, help="distinct sentences to fit on")
    parser.add_argument("--test-sentences", type=int, default=60, help="distinct sentences to test on")
    parser.add_argument("--seed", type=int, default=0, help="seed for sentences and k-means")

    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help=(
            "threads for torch and for the OpenMP and BLAS pools of scikit-learn. On a 2-core machine "
            "shared with other processes, 2 threads made k-means about 10 times slower than 1"
        ),
    )

    parser.add_argument("--output", type=Path, help="Markdown file for the results (printed when omitted)")
    return parser.parse_args()


def main() -> None:
    """Run every condition and write the results table."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    arguments = parse_arguments()
    torch.set_num_threads(arguments.threads)
    with threadpool_limits(limits=arguments.threads):
        run_benchmark(arguments)


def run_benchmark(arguments: argparse.Namespace) -> None:
    """Synthesize the corpus, score the original audio and every codec setting, and write the page."""
    load_average = os.getloadavg()[0]
    started = time.perf_counter()

    rng = random.Random(arguments.seed)
    test_sentences = draw_sentences(rng, arguments.test_sentences, exclude=set())
    train_sentences = draw_sentences(rng, arguments.train_sentences, exclude=set(test_sentences))
    with tempfile.TemporaryDirectory(prefix="codec-roundtrip-") as folder:
        train = synthesize_corpus(train_sentences, arguments.voices, Path(folder))
        test = synthesize_corpus(test_sentences, arguments.voices, Path(folder))
    log.info("synthesized %d training and %d test utterances", len(train), len(test))

    recognizer = PocketsphinxRecognizer()
    recognizer.set_vocabulary([*NUMBER_WORDS, "what is plus minus"])

    original = Result(condition="original audio")
    score(original, test, recognizer, lambda waveform: waveform)
    log.info("original audio: WER %.1f%%", original.wer_all)
    results = [original]

    largest = max(arguments.units)
    for normalization in arguments.normalizations:
        for num_units in sorted(arguments.units):
            vocoder_settings = [(arguments.default_iterations, 0)]
            if normalization == "none" and num_units == largest:
                iteration_counts = sorted({*arguments.iterations, arguments.default_iterations})
                vocoder_settings = [(n_iter, 0) for n_iter in iteration_counts]
                extra_seeds = [seed for seed in arguments.vocoder_seeds if seed != 0]
                vocoder_settings += [(arguments.default_iterations, seed) for seed in extra_seeds]
            results += run_codec(train, test, recognizer, num_units, normalization, vocoder_settings, arguments.seed)

    page = render_markdown(
        results,
        arguments.voices,
        train,
        test,
        RunInfo(time.perf_counter() - started, arguments.threads, load_average),
    )
    if arguments.output is None:
        print(page)
    else:
        arguments.output.write_text(page, encoding="utf-8")
        log.info("wrote %s", arguments.output)


if __name__ == "__main__":
    main()
