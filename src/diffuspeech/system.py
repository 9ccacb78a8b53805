"""Composition: turns a recipe into the plugins of one speech-text system.

``compose`` builds every component except the backbone's weights before any
work starts. It checks plugin names and arguments, and the vocoder's unit
count and frame rate against the speech tokenizer's. A backbone
``vocab_size`` in the recipe is rejected, because the core sets it from the
unified vocabulary.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, OmegaConf

from diffuspeech.errors import RecipeError
from diffuspeech.interfaces import (
    Backbone,
    NoiseSchedule,
    Recognizer,
    Sampler,
    SpeechSynthesizer,
    SpeechTokenizer,
    TextTokenizer,
    Vocoder,
)
from diffuspeech.layouts import Budgets
from diffuspeech.recipe import build_component, component_args, resolve_component
from diffuspeech.settings import check_core_settings
from diffuspeech.vocabulary import SPEECH, TEXT, Vocabulary

log = logging.getLogger(__name__)


@dataclass
class System:
    """The plugins of one recipe, without the backbone's weights."""

    recipe: DictConfig
    text_tokenizer: TextTokenizer
    speech_tokenizer: SpeechTokenizer
    vocoder: Vocoder
    schedules: dict[int, NoiseSchedule]
    sampler: Sampler
    budgets: Budgets
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def vocabulary(self) -> Vocabulary:
        """The unified vocabulary; valid once the text tokenizer is fitted."""
        return Vocabulary(
            text_size=self.text_tokenizer.vocab_size,
            num_units=self.speech_tokenizer.num_units,
            text_mask_id=getattr(self.text_tokenizer, "mask_id", None),
            text_pad_id=getattr(self.text_tokenizer, "pad_id", None),
        )

    def plugin_states(self) -> dict[str, dict[str, Any]]:
        """Return the fitted state of each plugin, for checkpoints."""
        return {
            "text_tokenizer": self.text_tokenizer.state_dict(),
            "speech_tokenizer": self.speech_tokenizer.state_dict(),
            "vocoder": self.vocoder.state_dict(),
        }

    def load_plugin_states(self, states: dict[str, dict[str, Any]]) -> None:
        """Restore what ``plugin_states`` returned and attach the vocoder to the tokenizer."""
        self.text_tokenizer.load_state_dict(states.get("text_tokenizer", {}))
        self.speech_tokenizer.load_state_dict(states.get("speech_tokenizer", {}))
        self.vocoder.load_state_dict(states.get("vocoder", {}))
        self.vocoder.attach(self.speech_tokenizer)

    def build_synthesizer(self) -> SpeechSynthesizer:
        """Build the recipe's speech synthesizer (used to make corpora)."""
        synthesizer: SpeechSynthesizer = build_component(self.recipe, "corpus.synthesizer", "speech_synthesizer")
        return synthesizer

    def build_recognizer(self) -> Recognizer:
        """Build the recipe's recognizer (the judge of evaluation)."""
        recognizer: Recognizer = build_component(self.recipe, "evaluation.recognizer", "recognizer")
        return recognizer


def check_codec_compatibility(speech_tokenizer: SpeechTokenizer, vocoder: Vocoder) -> None:
    """Raise ``RecipeError`` unless the vocoder decodes the tokenizer's units."""
    pairs = (
        ("num_units", speech_tokenizer.num_units, vocoder.num_units),
        ("frame_rate", float(speech_tokenizer.frame_rate), float(vocoder.frame_rate)),
    )
    for name, tokenizer_value, vocoder_value in pairs:
        if tokenizer_value != vocoder_value:
            raise RecipeError(
                f"vocoder.args.{name}: the vocoder expects {vocoder_value} but speech_tokenizer "
                f"{type(speech_tokenizer).__name__} produces {tokenizer_value}; set vocoder.args.{name}="
                f"{tokenizer_value} or change the speech tokenizer to match"
            )


def budgets_from_recipe(recipe: DictConfig) -> Budgets:
    """Read ``layout`` budgets; each must be an integer of at least 2."""
    node = OmegaConf.select(recipe, "layout", default=None)
    values = OmegaConf.to_container(node) if isinstance(node, DictConfig) else {}
    assert isinstance(values, dict)
    allowed = set(Budgets.__dataclass_fields__)
    unknown = sorted(set(map(str, values)) - allowed)
    if unknown:
        raise RecipeError(f"layout: unknown key(s) {', '.join(unknown)}; choices: {', '.join(sorted(allowed))}")
    for key, value in values.items():
        key = str(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 2:
            raise RecipeError(
                f"layout.{key}: must be an integer of at least 2 (content plus closing marker), got {value!r}"
            )
    return Budgets(**{str(k): int(v) for k, v in values.items()})


def compose(recipe: DictConfig) -> System:
    """Build and check every component of ``recipe`` except the backbone's weights."""
    check_core_settings(recipe)
    text_tokenizer: TextTokenizer = build_component(recipe, "text_tokenizer", "text_tokenizer")
    speech_tokenizer: SpeechTokenizer = build_component(recipe, "speech_tokenizer", "speech_tokenizer")
    vocoder: Vocoder = build_component(recipe, "vocoder", "vocoder")
    check_codec_compatibility(speech_tokenizer, vocoder)

    schedules = {
        TEXT: build_component(recipe, "noise_schedule.text", "noise_schedule"),
        SPEECH: build_component(recipe, "noise_schedule.speech", "noise_schedule"),
    }
    sampler: Sampler = build_component(recipe, "sampler", "sampler")
    resolve_component(recipe, "backbone", "backbone", skip=("vocab_size",))
    if "vocab_size" in component_args(recipe, "backbone"):
        raise RecipeError(
            "backbone.args.vocab_size: set by diffuspeech from the unified vocabulary "
            "(text ids + special tokens + speech units); remove it from the recipe"
        )
    for key, kind in (("corpus.synthesizer", "speech_synthesizer"), ("evaluation.recognizer", "recognizer")):
        if OmegaConf.select(recipe, key, default=None) is not None:
            resolve_component(recipe, key, kind)

    return System(
        recipe=recipe,
        text_tokenizer=text_tokenizer,
        speech_tokenizer=speech_tokenizer,
        vocoder=vocoder,
        schedules=schedules,
        sampler=sampler,
        budgets=budgets_from_recipe(recipe),
    )


def build_backbone(recipe: DictConfig, vocabulary: Vocabulary) -> Backbone:
    """Build the recipe's backbone for ``vocabulary``.

    A pretrained backbone may report ``text_rows``, the text ids its
    checkpoint was trained with. The text tokenizer must report the same
    count, or the added special tokens would take ids of pretrained rows.
    """
    backbone: Backbone = build_component(recipe, "backbone", "backbone", vocab_size=vocabulary.size)
    text_rows = getattr(backbone, "text_rows", None)
    if text_rows is not None and text_rows != vocabulary.text_size:
        raise RecipeError(
            f"text_tokenizer.args: the tokenizer reports {vocabulary.text_size} text ids but the backbone's "
            f"checkpoint has {text_rows} text rows; set text_tokenizer.args.vocab_size={text_rows}"
        )
    return backbone
