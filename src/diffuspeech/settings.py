"""Checks of every recipe value outside plugin arguments, before any work starts.

Plugin arguments are checked against their constructors in ``recipe.py``.
Here each section is checked against a table of keys: unknown keys (with
the closest valid ones suggested), missing keys, types and ranges (steps at
least 1, probabilities in [0, 1], positive sizes). Plugin nodes must be
mappings with a string ``name`` and an optional ``args`` mapping. Each error
is a ``RecipeError`` naming the dotted key.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, OmegaConf

from diffuspeech.errors import RecipeError
from diffuspeech.vocabulary import TASKS

PRECISIONS = ("32-true", "32", "16-mixed", "bf16-mixed", "bf16-true", "16-true", "64-true")
OPERATIONS = ("plus", "minus")


@dataclass(frozen=True)
class Rule:
    """A value check and the words that describe a valid value."""

    check: Callable[[Any], bool]
    expected: str


@dataclass(frozen=True)
class Plugin:
    """A plugin node: ``{name: str, args: mapping}``; ``optional`` allows null."""

    optional: bool = False


@dataclass(frozen=True)
class Section:
    """A mapping of keys to rules, plugin nodes or nested sections; ``optional`` keys may be absent."""

    keys: dict[str, Rule | Plugin | Section]
    optional: frozenset[str] = field(default_factory=frozenset)


def _is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def integer(minimum: int, maximum: int | None = None, unit: str = "") -> Rule:
    """Return a rule accepting an integer in [minimum, maximum]."""
    bound = f"in [{minimum}, {maximum}]" if maximum is not None else f"of at least {minimum}"
    return Rule(
        lambda value: _is_integer(value) and value >= minimum and (maximum is None or value <= maximum),
        f"an integer {bound}{unit}",
    )


def number(minimum: float, maximum: float = float("inf"), strict: bool = False, below_maximum: bool = False) -> Rule:
    """Return a rule accepting a number from ``minimum`` to ``maximum``; ``strict``/``below_maximum`` exclude them."""

    def check(value: Any) -> bool:
        if not _is_number(value):
            return False
        low = value > minimum if strict else value >= minimum
        high = value < maximum if below_maximum else value <= maximum
        return low and high

    if maximum == float("inf"):
        expected = f"a number {'above' if strict else 'of at least'} {minimum:g}"
    else:
        expected = f"a number in {'(' if strict else '['}{minimum:g}, {maximum:g}{')' if below_maximum else ']'}"
    return Rule(check, expected)


def choice(*options: str) -> Rule:
    """Return a rule accepting one of ``options``."""
    return Rule(lambda value: value in options, " or ".join(options))


def text(optional: bool = False) -> Rule:
    """Return a rule accepting a non-empty string, or null when ``optional``."""
    return Rule(
        lambda value: (optional and value is None) or (isinstance(value, str) and bool(value.strip())),
        "a non-empty string" + (" or null" if optional else ""),
    )


def strings(allowed: tuple[str, ...] | None = None) -> Rule:
    """Return a rule accepting a non-empty list of non-empty strings, drawn from ``allowed`` when given."""

    def check(value: Any) -> bool:
        return (
            isinstance(value, list)
            and bool(value)
            and all(isinstance(item, str) and item.strip() for item in value)
            and (allowed is None or all(item in allowed for item in value))
        )

    return Rule(check, "a non-empty list of " + (f"names from {', '.join(allowed)}" if allowed else "strings"))


def _variants(value: Any) -> bool:
    if not isinstance(value, list):
        return False
    for variant in value:
        if not isinstance(variant, dict) or set(variant) - {"rate", "pitch"}:
            return False
        if not all(_is_number(factor) and factor > 0 for factor in variant.values()):
            return False
    return True


BOOLEAN = Rule(lambda value: isinstance(value, bool), "true or false")
FRACTION = number(0, 1, below_maximum=True)
SHARE = number(0, 1, strict=True, below_maximum=True)

TRAINING = Section(
    {
        "max_steps": integer(1),
        "batch_size": integer(1),
        "batches_per_epoch": integer(1),
        "learning_rate": number(0, strict=True),
        "warmup_steps": integer(0),
        "min_lr_ratio": number(0, 1),
        "weight_decay": number(0),
        "gradient_clip": Rule(number(0).check, "a number of at least 0 (0 disables clipping)"),
        "accumulate_grad_batches": integer(1),
        "precision": Rule(lambda value: str(value) in PRECISIONS, f"one of {', '.join(PRECISIONS)}"),
        "accelerator": Rule(
            lambda value: isinstance(value, str), "a Lightning accelerator name such as auto, cpu or gpu"
        ),
        "devices": Rule(
            lambda value: value == "auto" or integer(1).check(value) or isinstance(value, list),
            "auto, a count or a list",
        ),
        "strategy": Rule(lambda value: isinstance(value, str), "a Lightning strategy name such as auto, ddp or fsdp"),
        "num_nodes": integer(1),
        "validation_interval": integer(1, unit=" (steps)"),
        "validation_items_per_task": integer(0),
        "validation_samples": integer(0),
        "validation_audio_samples": integer(0),
        "log_every_n_steps": integer(1),
        "speech_tokenizer_fit_files": integer(1),
        "tasks": Rule(lambda value: isinstance(value, dict), "a mapping of task name to weight"),
        "checkpoint_interval": integer(1, unit=" (steps)"),
        "resume": choice("auto", "never"),
        "nonfinite_loss": choice("stop", "skip"),
        "bad_rows": choice("fail", "skip"),
    },
    # Checkpoints written before these keys existed store recipes without them.
    optional=frozenset({"checkpoint_interval", "resume", "nonfinite_loss", "bad_rows"}),
)

CORPUS = Section(
    {
        "source": choice("arithmetic", "jsonl"),
        "synthesizer": Plugin(optional=True),
        "voices": strings(),
        "unseen_voice": text(),
        "reply_voice": text(),
        "workers": integer(1),
        "variants": Rule(_variants, "a list of {rate, pitch} mappings with factors above 0"),
        "arithmetic": Section(
            {
                # The generator has number words up to twenty.
                "max_operand": integer(0, 20),
                "operations": strings(OPERATIONS),
                "test_fraction": SHARE,
                "valid_fraction": SHARE,
                "word_utterances": BOOLEAN,
            }
        ),
        "jsonl": Section({"path": text(optional=True), "valid_fraction": SHARE, "test_fraction": SHARE}),
    }
)

RECIPE = Section(
    {
        "seed": integer(0),
        "data_dir": text(),
        "output_dir": text(),
        "corpus": CORPUS,
        "text_tokenizer": Plugin(),
        "speech_tokenizer": Plugin(),
        "vocoder": Plugin(),
        "backbone": Plugin(),
        "noise_schedule": Section({"text": Plugin(), "speech": Plugin()}),
        "sampler": Plugin(),
        # Budgets are checked key by key in diffuspeech.system.budgets_from_recipe.
        "layout": Rule(lambda value: isinstance(value, dict), "a mapping of target span names to budgets"),
        "training": TRAINING,
        "evaluation": Section(
            {
                "recognizer": Plugin(optional=True),
                "splits": strings(),
                "max_items": integer(0, unit=" (0: every row)"),
            }
        ),
        "tracking": Section({"experiment": text(), "run_name": text(optional=True), "uri": text(optional=True)}),
        # Checked key by key in diffuspeech.training.vocoder, which owns the section.
        "vocoder_training": Rule(lambda value: isinstance(value, dict), "a mapping of vocoder training settings"),
        "recipe_path": text(),
    },
    optional=frozenset({"recipe_path", "vocoder_training"}),
)


def plugin_keys(spec: Section = RECIPE, prefix: str = "") -> list[str]:
    """Return the dotted keys of every plugin node in the recipe layout ``spec``."""
    keys: list[str] = []
    for key, rule in spec.keys.items():
        if isinstance(rule, Plugin):
            keys.append(f"{prefix}{key}")
        elif isinstance(rule, Section):
            keys += plugin_keys(rule, f"{prefix}{key}.")
    return keys


def _unknown_key(key: str, choices: list[str], prefix: str) -> RecipeError:
    close = difflib.get_close_matches(key, choices, n=1, cutoff=0.6)
    hint = f"; did you mean {prefix}{close[0]}?" if close else ""
    return RecipeError(f"{prefix}{key}: unknown key; choices: {', '.join(choices)}{hint}")


def _check_plugin(value: Any, spec: Plugin, key: str) -> None:
    if value is None and spec.optional:
        return
    if not isinstance(value, dict):
        raise RecipeError(
            f"{key}: a plugin node needs `name:`, got {value!r}; write it as a mapping, "
            f"e.g. {key.rsplit('.', 1)[-1]}: {{name: {value if isinstance(value, str) else 'NAME'}, args: {{}}}}"
        )
    if not isinstance(value.get("name"), str) or not value["name"].strip():
        raise RecipeError(f"{key}.name: missing or not a string; give a plugin name or a dotted path module:Class")
    args = value.get("args")
    if args is not None and not isinstance(args, dict):
        raise RecipeError(f"{key}.args must be a mapping, got {args!r}; write {key}.args as {{name: value}}")
    for extra in value:
        if extra not in ("name", "args"):
            raise _unknown_key(str(extra), ["name", "args"], f"{key}.")


def _check_section(values: Any, spec: Section, prefix: str) -> None:
    where = prefix.rstrip(".") or "recipe"
    if not isinstance(values, dict):
        raise RecipeError(f"{where}: must be a mapping, got {values!r}")
    for raw_key, value in values.items():
        key = str(raw_key)
        if key not in spec.keys:
            raise _unknown_key(key, list(spec.keys), prefix)
        rule = spec.keys[key]
        if isinstance(rule, Section):
            _check_section(value, rule, f"{prefix}{key}.")
        elif isinstance(rule, Plugin):
            _check_plugin(value, rule, f"{prefix}{key}")
        elif not rule.check(value):
            raise RecipeError(f"{prefix}{key}: invalid value {value!r}; expected {rule.expected}")
    # A missing plugin node is reported by composition, which names the plugin kind it needs.
    missing = [
        key
        for key, rule in spec.keys.items()
        if key not in values and key not in spec.optional and not isinstance(rule, Plugin)
    ]
    if missing:
        raise RecipeError(f"{where}: missing key(s) {', '.join(missing)}; extend recipes/base.yaml to get defaults")


def _check_tasks(weights: dict[str, Any]) -> None:
    for task, weight in weights.items():
        if task not in TASKS:
            raise RecipeError(f"training.tasks.{task}: unknown task; choices: {', '.join(TASKS)}")
        if not number(0).check(weight):
            raise RecipeError(f"training.tasks.{task}: invalid weight {weight!r}; expected a number of at least 0")
    if not any(weight > 0 for weight in weights.values()):
        raise RecipeError("training.tasks: every weight is 0; give at least one task a positive weight")


def check_core_settings(recipe: DictConfig) -> None:
    """Raise ``RecipeError`` naming the first unknown, missing or invalid recipe value."""
    values = OmegaConf.to_container(recipe, resolve=True)
    assert isinstance(values, dict)
    unknown = sorted(str(key) for key in values if str(key) not in RECIPE.keys)
    if unknown:
        close = difflib.get_close_matches(unknown[0], list(RECIPE.keys), n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise RecipeError(f"unknown recipe section(s) {', '.join(unknown)}; choices: {', '.join(RECIPE.keys)}{hint}")
    if not isinstance(values.get("training"), dict):
        raise RecipeError("training: missing; extend recipes/base.yaml or give a training section")

    _check_section(values, RECIPE, "")
    _check_tasks(values["training"]["tasks"])
    arithmetic = values["corpus"]["arithmetic"]
    if arithmetic["test_fraction"] + arithmetic["valid_fraction"] >= 1:
        raise RecipeError(
            "corpus.arithmetic: test_fraction + valid_fraction must be below 1 so that training keeps questions"
        )
    jsonl = values["corpus"]["jsonl"]
    if jsonl["test_fraction"] + jsonl["valid_fraction"] >= 1:
        raise RecipeError("corpus.jsonl: test_fraction + valid_fraction must be below 1 so that training keeps items")
