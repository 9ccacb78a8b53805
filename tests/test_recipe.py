"""Tests for recipes: loading, extends, overrides, and the errors of composition."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from diffuspeech.errors import RecipeError
from diffuspeech.layouts import Budgets
from diffuspeech.recipe import build_component, find_recipe, load_recipe
from diffuspeech.system import build_backbone, compose
from diffuspeech.vocabulary import SPEECH, TEXT
from diffuspeech_plugins.backbones.llada import LLaDABackbone
from diffuspeech_plugins.noise_schedules.cosine import CosineSchedule
from diffuspeech_plugins.noise_schedules.linear import LinearSchedule
from diffuspeech_plugins.samplers.confidence import ConfidenceSampler


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_tiny_extends_base() -> None:
    """The tiny recipe takes base.yaml's values and overrides its own."""
    recipe = load_recipe("tiny")

    assert recipe.output_dir == "outputs/runs/tiny"
    assert recipe.sampler.name == "confidence"
    assert "extends" not in recipe
    assert recipe.recipe_path == str(find_recipe("tiny"))


def test_extends_chain(tmp_path: Path) -> None:
    """In a chain of extends the nearest recipe wins, key by key, also inside nested sections."""
    write(tmp_path / "grandparent.yaml", "a: 1\nb: 1\nc: 1\nnested: {x: 1, y: 1}\n")
    write(tmp_path / "parents" / "parent.yaml", "extends: ../grandparent.yaml\nb: 2\nnested: {y: 2}\n")
    child = write(tmp_path / "child.yaml", "extends: parents/parent.yaml\nc: 3\n")

    recipe = load_recipe(child)

    assert (recipe.a, recipe.b, recipe.c) == (1, 2, 3)
    assert (recipe.nested.x, recipe.nested.y) == (1, 2)


def test_extends_list(tmp_path: Path) -> None:
    """With several parents, later parents win over earlier ones and the child over both."""
    write(tmp_path / "one.yaml", "a: 1\nb: 1\n")
    write(tmp_path / "two.yaml", "b: 2\nc: 2\n")
    child = write(tmp_path / "child.yaml", "extends: [one.yaml, two.yaml]\nc: 3\n")

    recipe = load_recipe(child)

    assert (recipe.a, recipe.b, recipe.c) == (1, 2, 3)


@pytest.mark.parametrize(
    "files",
    [
        {"a.yaml": "extends: a.yaml\nx: 1\n"},
        {"a.yaml": "extends: b.yaml\nx: 1\n", "b.yaml": "extends: a.yaml\ny: 1\n"},
        {"a.yaml": "extends: b.yaml\n", "b.yaml": "extends: c.yaml\n", "c.yaml": "extends: b.yaml\n"},
    ],
    ids=["self", "two", "three"],
)
def test_extends_cycle(files: dict[str, str], tmp_path: Path) -> None:
    """A cycle of extends raises and shows the chain."""
    for name, text in files.items():
        write(tmp_path / name, text)

    with pytest.raises(RecipeError, match=r"recipe extends itself: .*a\.yaml -> "):
        load_recipe(tmp_path / "a.yaml")


def test_extends_missing_parent(tmp_path: Path) -> None:
    """A parent that does not exist raises, naming it."""
    child = write(tmp_path / "child.yaml", "extends: nowhere.yaml\n")

    with pytest.raises(RecipeError, match=r"extends 'nowhere.yaml', but .*nowhere\.yaml does not exist"):
        load_recipe(child)


@pytest.mark.parametrize(
    ("text", "message"),
    [("- a\n- b\n", "must be a mapping at the top level"), ("a: [1, 2\n", "cannot read recipe")],
    ids=["list", "invalid yaml"],
)
def test_invalid_recipe_file(text: str, message: str, tmp_path: Path) -> None:
    """A recipe that is not a YAML mapping raises RecipeError."""
    with pytest.raises(RecipeError, match=message):
        load_recipe(write(tmp_path / "bad.yaml", text))


def test_unknown_recipe_name() -> None:
    """An unknown recipe name raises and lists the first-party recipes."""
    with pytest.raises(RecipeError, match=r"recipe 'no_such_recipe' not found: .*choices: .*base, .*tiny"):
        load_recipe("no_such_recipe")


def test_overrides_apply() -> None:
    """key=value overrides set values with YAML types, and interpolations follow them."""
    recipe = load_recipe(
        "tiny",
        [
            "training.max_steps=5",
            "sampler.args.temperature=1.0",
            "speech_tokenizer.args.num_units=64",
            "noise_schedule.speech.args={power: 3}",
            "seed=7",
        ],
    )

    assert recipe.training.max_steps == 5
    assert recipe.sampler.args.temperature == 1.0
    assert recipe.vocoder.args.num_units == 64
    assert recipe.noise_schedule.speech.args.power == 3
    assert recipe.seed == 7


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("training.max_steps", r"override 'training.max_steps' is not of the form key=value"),
        ("trainer.max_steps=5", r"the recipe has no section 'trainer'"),
        ("training.optimizer.betas=3", r"the recipe has no section 'training.optimizer'"),
    ],
)
def test_invalid_overrides(override: str, message: str) -> None:
    """Malformed overrides and overrides into missing sections raise, naming the override."""
    with pytest.raises(RecipeError, match=message):
        load_recipe("tiny", [override])


def test_compose_tiny() -> None:
    """The tiny recipe composes into its plugins, budgets and schedules."""
    system = compose(load_recipe("tiny", ["noise_schedule.speech.name=cosine"]))

    assert isinstance(system.schedules[TEXT], LinearSchedule)
    assert isinstance(system.schedules[SPEECH], CosineSchedule)
    assert isinstance(system.sampler, ConfidenceSampler)
    assert system.sampler.steps == 32
    assert system.budgets == Budgets(transcript=14, thought=10, answer=4, reply_units=32)


def test_backbone_gets_vocabulary_size() -> None:
    """build_backbone passes the unified vocabulary's size to the backbone."""
    recipe = load_recipe("tiny", ["backbone.args.n_layers=1"])
    system = compose(recipe)

    backbone = build_backbone(recipe, system.vocabulary)

    assert isinstance(backbone, LLaDABackbone)
    assert backbone.vocab_size == system.vocabulary.size
    assert len(backbone.transformer["blocks"]) == 1


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "noise_schedule.speech.name=quadratic",
            r"noise_schedule\.speech\.name: unknown noise_schedule plugin 'quadratic'; choices: cosine, linear",
        ),
        (
            "evaluation.recognizer.name=whisper",
            r"evaluation\.recognizer\.name: unknown recognizer plugin 'whisper'; choices: pocketsphinx",
        ),
        (
            "sampler.args.speed=2",
            r"sampler\.args: unknown argument\(s\) speed for ConfidenceSampler; choices: steps, temperature",
        ),
        ("sampler.args.steps=many", r"sampler\.args\.steps: value 'many' of type str does not match"),
        ("backbone.args.d_model=1.5", r"backbone\.args\.d_model: value 1\.5 of type float does not match"),
        ("sampler.args=3", r"sampler\.args must be a mapping, got 3"),
        ("sampler.args.steps=0", r"sampler: invalid arguments for ConfidenceSampler: steps must be at least 1"),
        (
            "vocoder.args.num_units=256",
            r"vocoder\.args\.num_units: the vocoder expects 256 but speech_tokenizer MelKMeansTokenizer produces 512",
        ),
        ("vocoder.args.frame_rate=50.0", r"vocoder\.args\.frame_rate: the vocoder expects 50\.0 .* produces 25\.0"),
        ("layout.thought=1", r"layout\.thought: must be an integer of at least 2 .*got 1"),
        (
            "layout.reasoning=8",
            r"layout: unknown key\(s\) reasoning; choices: answer, reply_units, thought, transcript",
        ),
    ],
)
def test_compose_errors(override: str, message: str) -> None:
    """Invalid plugin names, arguments and combinations fail in compose, naming the key."""
    recipe = load_recipe("tiny", [override])

    with pytest.raises(RecipeError, match=message):
        compose(recipe)


def test_vocab_size_in_recipe_rejected() -> None:
    """backbone.args.vocab_size is rejected because diffuspeech sets it from the vocabulary."""
    recipe = load_recipe("tiny", ["backbone.args.vocab_size=100"])

    with pytest.raises(RecipeError, match=r"backbone\.args\.vocab_size: set by diffuspeech"):
        compose(recipe)


def test_missing_required_argument() -> None:
    """A plugin argument without a default that the recipe lacks is named with its key."""
    recipe = load_recipe("tiny")
    del recipe.vocoder.args["num_units"]

    with pytest.raises(
        RecipeError, match=r"vocoder\.args: missing required argument\(s\) num_units for GriffinLimVocoder"
    ):
        compose(recipe)


def test_missing_component() -> None:
    """A component section that is missing raises, naming the key and the plugin kind."""
    recipe = load_recipe("tiny")
    del recipe["sampler"]

    with pytest.raises(RecipeError, match=r"sampler: missing; give a mapping with 'name' \(a sampler plugin\)"):
        compose(recipe)


def test_core_argument_clash() -> None:
    """build_component rejects a recipe argument that the core sets itself."""
    recipe = OmegaConf.create({"backbone": {"name": "llada", "args": {"vocab_size": 100, "n_layers": 1}}})

    with pytest.raises(RecipeError, match=r"backbone\.args: vocab_size is set by diffuspeech"):
        build_component(recipe, "backbone", "backbone", vocab_size=64)


@pytest.fixture(scope="module")
def cli_error(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    """Run ``diffuspeech train tiny vocoder.args.num_units=256`` in an empty folder."""
    folder = tmp_path_factory.mktemp("cli")
    result = subprocess.run(
        [sys.executable, "-m", "diffuspeech.cli", "train", "tiny", "vocoder.args.num_units=256"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return result, folder


def test_cli_error_one_line(cli_error: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    """The command line exits with 2 and prints the composition error as one 'error:' line."""
    result, _ = cli_error

    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert len(error_lines) == 1
    assert error_lines[0].startswith("error: vocoder.args.num_units: the vocoder expects 256")
    assert result.stdout == ""


def test_cli_error_has_no_side_effects(cli_error: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    """A recipe that fails composition prints only its error and creates no run folder."""
    result, folder = cli_error

    assert result.stderr.splitlines() == [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert list(folder.iterdir()) == []
