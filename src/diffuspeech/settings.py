"""Checks of the recipe's core sections (everything that is not a plugin node).

Plugin arguments are checked against their constructors in ``recipe.py``.
Here the top-level sections and the ``training`` values are checked for
unknown keys, types and ranges, so a typo or an invalid value fails before
any work starts, with the key named.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig, OmegaConf

from diffuspeech.errors import RecipeError
from diffuspeech.vocabulary import TASKS

TOP_LEVEL = (
    "seed",
    "data_dir",
    "output_dir",
    "corpus",
    "text_tokenizer",
    "speech_tokenizer",
    "vocoder",
    "backbone",
    "noise_schedule",
    "sampler",
    "layout",
    "training",
    "evaluation",
    "tracking",
    "recipe_path",
)

PRECISIONS = ("32-true", "32", "16-mixed", "bf16-mixed", "bf16-true", "16-true", "64-true")


def _integer(minimum: int) -> Callable[[Any], bool]:
    return lambda value: isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _number(minimum: float, maximum: float = float("inf"), strict: bool = False) -> Callable[[Any], bool]:
    def check(value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        return (value > minimum if strict else value >= minimum) and value <= maximum

    return check


# Each training key: (check, what a valid value is).
TRAINING: dict[str, tuple[Callable[[Any], bool], str]] = {
    "max_steps": (_integer(1), "an integer of at least 1"),
    "batch_size": (_integer(1), "an integer of at least 1"),
    "batches_per_epoch": (_integer(1), "an integer of at least 1"),
    "learning_rate": (_number(0, strict=True), "a number above 0"),
    "warmup_steps": (_integer(0), "an integer of at least 0"),
    "min_lr_ratio": (_number(0, 1), "a number in [0, 1]"),
    "weight_decay": (_number(0), "a number of at least 0"),
    "gradient_clip": (_number(0), "a number of at least 0 (0 disables clipping)"),
    "accumulate_grad_batches": (_integer(1), "an integer of at least 1"),
    "precision": (lambda value: str(value) in PRECISIONS, f"one of {', '.join(PRECISIONS)}"),
    "accelerator": (lambda value: isinstance(value, str), "a Lightning accelerator name such as auto, cpu or gpu"),
    "devices": (
        lambda value: value == "auto" or _integer(1)(value) or isinstance(value, list),
        "auto, a count or a list",
    ),
    "strategy": (lambda value: isinstance(value, str), "a Lightning strategy name such as auto, ddp or fsdp"),
    "num_nodes": (_integer(1), "an integer of at least 1"),
    "validation_interval": (_integer(1), "an integer of at least 1 (steps)"),
    "validation_items_per_task": (_integer(0), "an integer of at least 0"),
    "validation_samples": (_integer(0), "an integer of at least 0"),
    "validation_audio_samples": (_integer(0), "an integer of at least 0"),
    "log_every_n_steps": (_integer(1), "an integer of at least 1"),
    "speech_tokenizer_fit_files": (_integer(1), "an integer of at least 1"),
    "tasks": (lambda value: isinstance(value, dict), "a mapping of task name to weight"),
}


def check_core_settings(recipe: DictConfig) -> None:
    """Raise ``RecipeError`` naming the key of the first unknown section or invalid training value."""
    unknown = sorted(str(key) for key in recipe if str(key) not in TOP_LEVEL)
    if unknown:
        raise RecipeError(f"unknown recipe section(s) {', '.join(unknown)}; choices: {', '.join(TOP_LEVEL)}")

    training = OmegaConf.to_container(recipe.training, resolve=True) if "training" in recipe else None
    if not isinstance(training, dict):
        raise RecipeError("training: missing; extend recipes/base.yaml or give a training section")
    for raw_key, value in training.items():
        key = str(raw_key)
        if key not in TRAINING:
            raise RecipeError(f"training.{key}: unknown key; choices: {', '.join(TRAINING)}")
        check, expected = TRAINING[key]
        if not check(value):
            raise RecipeError(f"training.{key}: invalid value {value!r}; expected {expected}")
    missing = sorted(set(TRAINING) - set(map(str, training)))
    if missing:
        raise RecipeError(f"training: missing key(s) {', '.join(missing)}; extend recipes/base.yaml to get defaults")

    weights = training["tasks"]
    for task, weight in weights.items():
        if task not in TASKS:
            raise RecipeError(f"training.tasks.{task}: unknown task; choices: {', '.join(TASKS)}")
        if not _number(0)(weight):
            raise RecipeError(f"training.tasks.{task}: invalid weight {weight!r}; expected a number of at least 0")
    if not any(weight > 0 for weight in weights.values()):
        raise RecipeError("training.tasks: every weight is 0; give at least one task a positive weight")
