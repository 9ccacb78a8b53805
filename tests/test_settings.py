"""Core recipe sections: unknown keys and invalid training values fail before any work."""

from __future__ import annotations

from pathlib import Path

import pytest

from diffuspeech.errors import RecipeError
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
