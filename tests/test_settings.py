"""Recipe values, corpus splits and evaluation splits: invalid ones fail before any work, naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from diffuspeech.data.corpus import TextItem, arithmetic_splits, split_text_items
from diffuspeech.data.manifest import check_splits
from diffuspeech.errors import DataError, RecipeError
from diffuspeech.recipe import load_recipe
from diffuspeech.system import compose


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("training.max_stepz=5", r"training\.max_stepz: unknown key; choices: max_steps"),
        ("training.batch_size=0", r"training\.batch_size: invalid value 0; expected an integer of at least 1"),
        ("training.validation_interval=0", r"training\.validation_interval: invalid value 0"),
        ("training.learning_rate=abc", r"training\.learning_rate: invalid value 'abc'; expected a number above 0"),
        ("training.precision=bogus", r"training\.precision: invalid value 'bogus'; expected one of 32-true"),
        ("training.min_lr_ratio=1.5", r"training\.min_lr_ratio: invalid value 1\.5"),
        ("training.tasks.s2s=-1", r"training\.tasks\.s2s: invalid weight -1"),
        ("training.tasks.s2x=1", r"training\.tasks\.s2x: unknown task; choices: asr"),
        ("training.tasks={s2s: 0, s2t: 0, t2t: 0, asr: 0, tts: 0}", r"every weight is 0"),
    ],
)
def test_invalid_training_value(override: str, message: str) -> None:
    """Each invalid training value is rejected by compose with its key named."""
    with pytest.raises(RecipeError, match=message):
        compose(load_recipe("tiny", [override]))


def test_unknown_section_in_recipe_file(tmp_path: Path) -> None:
    """A misspelled top-level section in a recipe file is rejected."""
    base = Path(__file__).resolve().parents[1] / "recipes" / "base.yaml"
    path = tmp_path / "typo.yaml"
    path.write_text(f"extends: {base}\ntrainer:\n  max_steps: 3\n", encoding="utf-8")

    with pytest.raises(RecipeError, match=r"unknown recipe section\(s\) trainer; choices: seed"):
        compose(load_recipe(path))


def test_tiny_recipe_settings_valid() -> None:
    """The shipped tiny recipe passes the checks."""
    compose(load_recipe("tiny"))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("seed=-1", r"^seed: invalid value -1; expected an integer of at least 0"),
        ("output_dir=null", r"^output_dir: invalid value None; expected a non-empty string"),
        ("corpus.source=wav", r"^corpus\.source: invalid value 'wav'; expected arithmetic or jsonl"),
        ("corpus.voices=[]", r"^corpus\.voices: invalid value \[\]; expected a non-empty list of strings"),
        ("corpus.workers=0", r"^corpus\.workers: invalid value 0; expected an integer of at least 1"),
        ("corpus.variants=[{rate: 0}]", r"^corpus\.variants: invalid value"),
        ("corpus.arithmetic.max_operand=-1", r"^corpus\.arithmetic\.max_operand: invalid value -1; .*\[0, 20\]"),
        ("corpus.arithmetic.operations=[times]", r"^corpus\.arithmetic\.operations: .*names from plus, minus"),
        ("corpus.arithmetic.test_fraction=1.5", r"^corpus\.arithmetic\.test_fraction: invalid value 1\.5"),
        ("corpus.arithmetic.valid_fraction=0", r"^corpus\.arithmetic\.valid_fraction: invalid value 0; .*\(0, 1\)"),
        ("corpus.arithmetic.word_utterances=maybe", r"^corpus\.arithmetic\.word_utterances: .*true or false"),
        ("corpus.jsonl.path=5", r"^corpus\.jsonl\.path: invalid value 5; expected a non-empty string or null"),
        ("corpus.jsonl.test_fraction=-0.1", r"^corpus\.jsonl\.test_fraction: invalid value -0\.1"),
        ("corpus.workerz=2", r"^corpus\.workerz: unknown key; choices: source, .*; did you mean corpus\.workers\?"),
        (
            "sampler=confidence",
            r"^sampler: a plugin node needs `name:`, got 'confidence'; .*sampler: \{name: confidence",
        ),
        ("noise_schedule.text=linear", r"^noise_schedule\.text: a plugin node needs `name:`"),
        ("sampler.name=3", r"^sampler\.name: missing or not a string"),
        ("sampler.argz={}", r"^sampler\.argz: unknown key; choices: name, args; did you mean sampler\.args\?"),
        ("evaluation.splits=[]", r"^evaluation\.splits: invalid value \[\]"),
        ("evaluation.max_items=-1", r"^evaluation\.max_items: invalid value -1; .*\(0: every row\)"),
        ("evaluation.recognizer=pocketsphinx", r"^evaluation\.recognizer: a plugin node needs `name:`"),
        ("tracking.experiment=''", r"^tracking\.experiment: invalid value ''"),
        ("tracking.uri=5", r"^tracking\.uri: invalid value 5; expected a non-empty string or null"),
        ("training.checkpoint_interval=0", r"^training\.checkpoint_interval: invalid value 0; .*at least 1 \(steps\)"),
        ("training.resume=always", r"^training\.resume: invalid value 'always'; expected auto or never"),
        ("training.nonfinite_loss=ignore", r"^training\.nonfinite_loss: invalid value 'ignore'; expected stop or skip"),
        ("training.bad_rows=drop", r"^training\.bad_rows: invalid value 'drop'; expected fail or skip"),
        ("training.warmup_steps=-1", r"^training\.warmup_steps: invalid value -1"),
        ("corpus.arithmetic.test_fraction=0.6", None),
        (
            "text_tokenizer.args.vocab_size=4",
            r"^text_tokenizer: invalid arguments for SentencePieceTokenizer: .*at least 8",
        ),
    ],
)
def test_invalid_recipe_value(override: str, message: str | None) -> None:
    """Each invalid value anywhere in the recipe fails in compose, with its key named first."""
    overrides = [override]
    if message is None:
        overrides.append("corpus.arithmetic.valid_fraction=0.4")
        message = r"^corpus\.arithmetic: test_fraction \+ valid_fraction must be below 1"
    with pytest.raises(RecipeError, match=message):
        compose(load_recipe("tiny", overrides))


def _leaves(node: object, prefix: str = "") -> list[str]:
    """Dotted keys of the recipe's values, treating lists and plugin ``args`` as single values."""
    if not isinstance(node, dict) or prefix.endswith(".args."):
        return [prefix.rstrip(".")]
    keys: list[str] = []
    for key, value in node.items():
        keys += _leaves(value, f"{prefix}{key}.")
    return keys


SKIPPED_LEAVES = ("recipe_path", "vocoder_training")
"""Values checked elsewhere: the recipe's own path, and vocoder settings checked by ``train-vocoder``."""


def test_every_recipe_value_is_checked() -> None:
    """Replacing any value of the tiny recipe by a mapping fails before work, naming that key."""
    recipe = load_recipe("tiny")
    container = OmegaConf.to_container(recipe, resolve=True)
    leaves = [key for key in _leaves(container) if not key.startswith(SKIPPED_LEAVES) and not key.endswith(".args")]
    assert len(leaves) > 50

    for key in leaves:
        broken = load_recipe("tiny")
        OmegaConf.update(broken, key, {"wrong": 1}, merge=False)
        with pytest.raises(RecipeError) as caught:
            compose(broken)
        assert str(caught.value).startswith(key), (key, str(caught.value))


def test_arithmetic_split_never_empty() -> None:
    """An arithmetic corpus too small for a validation split is rejected, naming the recipe key."""
    settings = OmegaConf.create(
        {"max_operand": 0, "operations": ["plus"], "test_fraction": 0.2, "valid_fraction": 0.05}
    )

    with pytest.raises(RecipeError, match=r"^corpus\.arithmetic: the valid split\(s\) would be empty \(6 questions"):
        arithmetic_splits(settings, seed=0)


def test_jsonl_split_keeps_one_valid_item() -> None:
    """Ten items with valid_fraction 0.05 still give one validation and one test question."""
    items = [TextItem(f"question {index}", "thought", "answer") for index in range(10)]

    splits = split_text_items(items, valid_fraction=0.05, test_fraction=0.1, seed=0)

    assert {split: len(group) for split, group in splits.items()} == {"train": 8, "valid": 1, "test": 1}


def test_jsonl_split_needs_three_questions() -> None:
    """Two distinct questions cannot fill train, valid and test."""
    items = [TextItem(f"question {index}", "thought", "answer") for index in range(2)]

    with pytest.raises(DataError, match=r"corpus\.jsonl\.path: 2 distinct question\(s\); at least 3 are needed"):
        split_text_items(items, valid_fraction=0.05, test_fraction=0.1, seed=0)


def test_unknown_evaluation_split_lists_existing(tmp_path: Path) -> None:
    """A misspelled evaluation split names the key and the splits that exist."""
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    for split in ("train", "test"):
        (manifests / f"{split}.jsonl").write_text("")

    with pytest.raises(DataError, match=r"^evaluation\.splits: no split 'tset' in .*; existing splits: test, train$"):
        check_splits(manifests, ["tset"], "evaluation.splits")
