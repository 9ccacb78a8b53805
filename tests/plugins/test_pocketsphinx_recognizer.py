"""Tests for the pocketsphinx recognizer plugin, judging speech from the real flite and espeak-ng."""

from __future__ import annotations

import shutil

import pytest
import torch
import torchaudio.functional

from diffuspeech.interfaces import Recognizer
from diffuspeech_plugins.recognizers.pocketsphinx_recognizer import PocketsphinxRecognizer, normalize_words
from diffuspeech_plugins.speech_synthesizers.espeak_ng import EspeakNGSynthesizer
from diffuspeech_plugins.speech_synthesizers.flite import FliteSynthesizer

needs_flite = pytest.mark.skipif(
    shutil.which("flite") is None, reason="the flite program is not installed (apt-get install flite)"
)

NUMBER_WORDS = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
    "twenty",
]

CORPUS = [
    f"{template} {a} {operation} {b}"
    for template in ("what is", "how much is")
    for operation in ("plus", "minus", "times")
    for a in NUMBER_WORDS
    for b in NUMBER_WORDS
] + [f"the answer is {a}" for a in NUMBER_WORDS]

TEST_SENTENCES = [
    "what is seven plus five",
    "how much is twelve minus three",
    "what is nineteen times two",
    "the answer is sixteen",
    "how much is zero plus eleven",
]


def word_error_rate(references: list[str], hypotheses: list[str]) -> float:
    """Return the word-level Levenshtein distance summed over pairs, divided by the reference word count."""
    errors = 0
    total = 0
    for reference, hypothesis in zip(references, hypotheses, strict=True):
        ref, hyp = reference.split(), hypothesis.split()
        distances = list(range(len(hyp) + 1))
        for i in range(1, len(ref) + 1):
            diagonal, distances[0] = distances[0], i
            for j in range(1, len(hyp) + 1):
                best = min(distances[j] + 1, distances[j - 1] + 1, diagonal + (ref[i - 1] != hyp[j - 1]))
                diagonal, distances[j] = distances[j], best
        errors += distances[-1]
        total += len(ref)
    return errors / total


@pytest.fixture(scope="module")
def recognizer() -> PocketsphinxRecognizer:
    return PocketsphinxRecognizer()


@pytest.fixture(scope="module")
def flite() -> FliteSynthesizer:
    return FliteSynthesizer(voices=["awb"])


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("What is Seven plus five?", ["what", "is", "seven", "plus", "five"]),
        ("twenty-one, please!", ["twenty", "one", "please"]),
        ("What's 7 o'clock", ["what's", "7", "o'clock"]),
        ("  spaces\tand\nlines  ", ["spaces", "and", "lines"]),
        ("'quoted' words_here", ["quoted", "words", "here"]),
        ("", []),
    ],
)
def test_normalize_words(text: str, words: list[str]) -> None:
    """normalize_words lower-cases and strips punctuation but keeps inner apostrophes."""
    assert normalize_words(text) == words


def test_recognizer_is_plugin(recognizer: PocketsphinxRecognizer) -> None:
    """PocketsphinxRecognizer implements the Recognizer contract with a description."""
    assert isinstance(recognizer, Recognizer)
    assert PocketsphinxRecognizer.description


@needs_flite
def test_number_words_with_choices(recognizer: PocketsphinxRecognizer, flite: FliteSynthesizer) -> None:
    """All 21 number words spoken by flite awb are recognized with a one-word grammar."""
    transcripts = []
    for word in NUMBER_WORDS:
        waveform, sample_rate = flite.synthesize(word, "awb")
        transcripts.append(recognizer.transcribe(waveform, sample_rate, choices=NUMBER_WORDS))

    assert transcripts == NUMBER_WORDS


@needs_flite
def test_sentences_with_vocabulary() -> None:
    """Sentences spoken by flite awb get a WER of at most 5% with the corpus vocabulary."""
    recognizer = PocketsphinxRecognizer()
    recognizer.set_vocabulary(CORPUS)
    flite = FliteSynthesizer(voices=["awb"])

    transcripts = [recognizer.transcribe(*flite.synthesize(sentence, "awb")) for sentence in TEST_SENTENCES]

    assert word_error_rate(TEST_SENTENCES, transcripts) <= 0.05


@needs_flite
def test_general_model_transcript(recognizer: PocketsphinxRecognizer, flite: FliteSynthesizer) -> None:
    """The general model returns lower-case words with single spaces and a WER of at most 25%."""
    sentences = TEST_SENTENCES[:3]
    transcripts = [recognizer.transcribe(*flite.synthesize(sentence, "awb")) for sentence in sentences]

    for transcript in transcripts:
        assert transcript == " ".join(transcript.split())
        assert transcript == transcript.lower()
    assert word_error_rate(sentences, transcripts) <= 0.25


@needs_flite
def test_new_vocabulary_replaces_old(flite: FliteSynthesizer) -> None:
    """After a second set_vocabulary, only its words can be output."""
    recognizer = PocketsphinxRecognizer()
    recognizer.set_vocabulary(CORPUS)
    recognizer.set_vocabulary(["one two three", "red green blue"])

    transcript = recognizer.transcribe(*flite.synthesize("what is seven plus five", "awb"))

    assert set(transcript.split()) <= {"one", "two", "three", "red", "green", "blue"}


@needs_flite
def test_choices_return_normalized_choice(recognizer: PocketsphinxRecognizer, flite: FliteSynthesizer) -> None:
    """With multi-word choices the result is the matching choice, normalized."""
    waveform, sample_rate = flite.synthesize("what is seven plus five", "awb")
    choices = ["What is seven plus FIVE?", "What is six plus five?", "How much is seven minus five?"]

    assert recognizer.transcribe(waveform, sample_rate, choices=choices) == "what is seven plus five"


@needs_flite
@pytest.mark.parametrize("sample_rate", [8000, 22050, 44100])
def test_input_is_resampled(recognizer: PocketsphinxRecognizer, flite: FliteSynthesizer, sample_rate: int) -> None:
    """Speech at rates other than 16 kHz is resampled before decoding."""
    waveform, native_rate = flite.synthesize("seventeen", "awb")
    resampled = torchaudio.functional.resample(waveform, native_rate, sample_rate)

    assert recognizer.transcribe(resampled, sample_rate, choices=NUMBER_WORDS) == "seventeen"


@needs_flite
def test_grammar_cache_evicts_and_rebuilds(flite: FliteSynthesizer) -> None:
    """With a cache of two grammars, a third evicts the first and the first still works later."""
    recognizer = PocketsphinxRecognizer(max_cached_grammars=2)
    waveform, sample_rate = flite.synthesize("four", "awb")
    grammars = [["four", "nine"], ["four", "ten"], ["four", "eleven"], ["four", "nine"]]

    transcripts = [recognizer.transcribe(waveform, sample_rate, choices=choices) for choices in grammars]

    assert transcripts == ["four"] * 4


def test_espeak_number_words_mostly_heard(recognizer: PocketsphinxRecognizer) -> None:
    """At least 14 of 21 number words spoken by espeak-ng en-us are recognized (18 measured)."""
    espeak = EspeakNGSynthesizer(voices=["en-us"])

    correct = 0
    for word in NUMBER_WORDS:
        waveform, sample_rate = espeak.synthesize(word, "en-us")
        correct += recognizer.transcribe(waveform, sample_rate, choices=NUMBER_WORDS) == word

    assert correct >= 14


def test_missing_words_are_named(recognizer: PocketsphinxRecognizer) -> None:
    """Words outside the dictionary raise ValueError naming each of them."""
    with pytest.raises(ValueError, match=r"words in the vocabulary texts not found .*: '7', 'xyzzqv'\."):
        recognizer.set_vocabulary(["what is 7 plus xyzzqv"])

    with pytest.raises(ValueError, match=r"words in the choices not found .*: 'xyzzqv'\."):
        recognizer.transcribe(torch.zeros(1600), 16000, choices=["seven", "xyzzqv"])


@needs_flite
def test_pronunciations_add_words(flite: FliteSynthesizer) -> None:
    """A word given with ARPAbet phones is recognized in choices and in the vocabulary."""
    recognizer = PocketsphinxRecognizer(pronunciations={"Xyzzqv": "S EH V AH N"})
    waveform, sample_rate = flite.synthesize("seven", "awb")

    assert recognizer.transcribe(waveform, sample_rate, choices=["xyzzqv", "four"]) == "xyzzqv"

    recognizer.set_vocabulary(["four plus xyzzqv"])
    assert recognizer.transcribe(waveform, sample_rate) == "xyzzqv"


def test_invalid_pronunciation_rejected() -> None:
    """Phones the acoustic model lacks raise ValueError with an example."""
    with pytest.raises(ValueError, match=r"could not add the pronunciation 'QQ ZZ'.*'HH AH L OW'"):
        PocketsphinxRecognizer(pronunciations={"xyzzqv": "QQ ZZ"})


def test_empty_vocabulary_rejected(recognizer: PocketsphinxRecognizer) -> None:
    """set_vocabulary with no words raises ValueError."""
    with pytest.raises(ValueError, match="at least one word"):
        recognizer.set_vocabulary(["", "?!"])


@pytest.mark.parametrize(
    ("waveform", "sample_rate", "choices", "error", "message"),
    [
        (torch.zeros(2, 100), 16000, None, ValueError, r"shape \(samples,\)"),
        (torch.zeros(100), 0, None, ValueError, "sample_rate must be a positive integer"),
        (torch.full((100,), float("nan")), 16000, None, ValueError, "NaN or infinite"),
        (torch.zeros(100), 16000, "seven", TypeError, "not one string"),
        (torch.zeros(100), 16000, [], ValueError, "choices is empty"),
        (torch.zeros(100), 16000, ["seven", "..."], ValueError, "contains no words"),
    ],
)
def test_transcribe_rejects_invalid(
    recognizer: PocketsphinxRecognizer,
    waveform: torch.Tensor,
    sample_rate: int,
    choices: object,
    error: type[Exception],
    message: str,
) -> None:
    """Invalid shapes, rates, samples and choices raise with a message."""
    with pytest.raises(error, match=message):
        recognizer.transcribe(waveform, sample_rate, choices=choices)  # type: ignore[arg-type]


@pytest.mark.parametrize("choices", [None, ["one", "two"]])
def test_empty_waveform_gives_empty_text(recognizer: PocketsphinxRecognizer, choices: list[str] | None) -> None:
    """An empty waveform is transcribed as the empty string."""
    assert recognizer.transcribe(torch.zeros(0), 16000, choices=choices) == ""
