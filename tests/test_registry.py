"""Tests for the plugin registry: entry points, dotted paths and the class check."""

from __future__ import annotations

import logging
import textwrap
from pathlib import Path

import pytest
import torch

from diffuspeech.errors import PluginError
from diffuspeech.interfaces import PLUGIN_KINDS, NoiseSchedule
from diffuspeech.registry import Registry, check_plugin_class, get_registry
from diffuspeech_plugins.noise_schedules.cosine import CosineSchedule
from diffuspeech_plugins.noise_schedules.linear import LinearSchedule

FIRST_PARTY = {
    "text_tokenizer": ["hf_tokenizers", "sentencepiece"],
    "speech_tokenizer": ["hubert_kmeans", "mel_kmeans"],
    "vocoder": ["griffin_lim", "unit_hifigan"],
    "backbone": ["llada", "llada_pretrained"],
    "noise_schedule": ["cosine", "linear", "polynomial"],
    "sampler": ["ancestral", "confidence", "parallel", "random_remasking", "semi_ar"],
    "speech_synthesizer": ["espeak_ng", "flite"],
    "recognizer": ["pocketsphinx"],
}

SCHEDULE_MODULE = '''
import torch

from diffuspeech.interfaces import NoiseSchedule


class SquareSchedule(NoiseSchedule):
    """Mask probability t ** 2."""

    def mask_probability(self, t: torch.Tensor) -> torch.Tensor:
        return t**2

    def loss_weight(self, t: torch.Tensor) -> torch.Tensor:
        return 2 / t


class NotASchedule:
    """A class that forgot to derive from NoiseSchedule."""

    def mask_probability(self, t):
        return t
'''


class HalfSchedule(NoiseSchedule):
    """A schedule that implements only one of the two abstract methods."""

    def mask_probability(self, t: torch.Tensor) -> torch.Tensor:
        return t


class Unrelated:
    """A class with no plugin base."""


def make_schedule_module(directory: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Write ``test_registry_schedules.py`` into ``directory`` and put it on ``sys.path``."""
    (directory / "test_registry_schedules.py").write_text(SCHEDULE_MODULE)
    monkeypatch.syspath_prepend(str(directory))


def make_distribution(directory: Path, entry_points: str) -> None:
    """Write an installed-distribution record with the given ``diffuspeech.plugins`` entry points."""
    dist_info = directory / "registry_test_plugins-0.1.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: registry-test-plugins\nVersion: 0.1\n")
    (dist_info / "entry_points.txt").write_text("[diffuspeech.plugins]\n" + textwrap.dedent(entry_points))


@pytest.mark.parametrize("kind", FIRST_PARTY)
def test_first_party_registered(kind: str) -> None:
    """Every first-party plugin is found through its entry point."""
    registry = get_registry()

    for name in FIRST_PARTY[kind]:
        assert name in registry.names(kind)


@pytest.mark.parametrize(("name", "cls"), [("linear", LinearSchedule), ("cosine", CosineSchedule)])
def test_get_returns_class(name: str, cls: type) -> None:
    """get returns the entry with the class and where it came from."""
    entry = get_registry().get("noise_schedule", name)

    assert entry.cls is cls
    assert entry.kind == "noise_schedule"
    assert entry.source.startswith(f"entry point noise_schedule.{name} = ")
    assert entry.description == cls.description


def test_unknown_name_lists_choices() -> None:
    """An unknown plugin name raises, naming the kind, the name and the installed choices."""
    with pytest.raises(PluginError, match=r"unknown noise_schedule plugin 'quadratic'; choices: .*cosine, linear"):
        get_registry().get("noise_schedule", "quadratic")


def test_unknown_kind_lists_choices() -> None:
    """An unknown plugin kind raises and lists every kind."""
    with pytest.raises(PluginError, match=f"unknown plugin kind 'codec'; choices: {', '.join(PLUGIN_KINDS)}"):
        get_registry().names("codec")


def test_check_accepts_implementation() -> None:
    """check_plugin_class returns a class that implements its kind's base."""
    assert check_plugin_class("noise_schedule", "linear", LinearSchedule, "test") is LinearSchedule


@pytest.mark.parametrize(
    ("kind", "cls", "message"),
    [
        ("noise_schedule", Unrelated, "is not a subclass of diffuspeech.interfaces.noise_schedule.NoiseSchedule"),
        ("vocoder", LinearSchedule, "is not a subclass of diffuspeech.interfaces.vocoder.Vocoder"),
        ("noise_schedule", HalfSchedule, "does not implement loss_weight required by NoiseSchedule"),
        ("noise_schedule", len, "is not a subclass of"),
        ("noise_schedule", LinearSchedule(), "is not a subclass of"),
    ],
    ids=["unrelated class", "other kind", "abstract method", "function", "instance"],
)
def test_check_rejects(kind: str, cls: object, message: str) -> None:
    """A class that does not implement its kind's base is rejected at registration."""
    with pytest.raises(PluginError, match=rf"plugin {kind}\.bad from somewhere .*{message}"):
        check_plugin_class(kind, "bad", cls, "somewhere")


def test_dotted_path_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A dotted path 'module:Class' loads a plugin that no entry point declares."""
    make_schedule_module(tmp_path, monkeypatch)

    entry = Registry().get("noise_schedule", "test_registry_schedules:SquareSchedule")

    assert entry.cls.__name__ == "SquareSchedule"
    assert entry.source == "dotted path test_registry_schedules:SquareSchedule"
    assert entry.description == "Mask probability t ** 2."


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("test_registry_schedules:NotASchedule", "is not a subclass of"),
        ("test_registry_schedules:Missing", "module 'test_registry_schedules' has no class 'Missing'"),
        ("no_such_module_here:Thing", "cannot import module 'no_such_module_here'"),
    ],
)
def test_dotted_path_errors(path: str, message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Dotted paths to a wrong class, a missing class or a missing module raise PluginError."""
    make_schedule_module(tmp_path, monkeypatch)

    with pytest.raises(PluginError, match=message):
        Registry().get("noise_schedule", path)


def test_installed_entry_points(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An installed distribution's entry points are found, loaded and checked."""
    make_schedule_module(tmp_path, monkeypatch)
    make_distribution(
        tmp_path,
        """\
        noise_schedule.square = test_registry_schedules:SquareSchedule
        vocoder.square = test_registry_schedules:SquareSchedule
        noise_schedule.unrelated = test_registry_schedules:NotASchedule
        noise_schedule.broken = no_such_module_here:Thing
        """,
    )

    registry = Registry()

    assert {"square", "unrelated", "broken", "linear"} <= set(registry.names("noise_schedule"))
    assert registry.get("noise_schedule", "square").cls.__name__ == "SquareSchedule"
    with pytest.raises(PluginError, match=r"plugin vocoder\.square from entry point .* is not a subclass of"):
        registry.get("vocoder", "square")
    with pytest.raises(PluginError, match=r"noise_schedule\.unrelated .* is not a subclass of"):
        registry.get("noise_schedule", "unrelated")
    with pytest.raises(PluginError, match=r"failed to import plugin noise_schedule\.broken"):
        registry.get("noise_schedule", "broken")


def test_entries_skips_broken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """entries() returns the working plugins and logs a warning for each broken one."""
    make_schedule_module(tmp_path, monkeypatch)
    make_distribution(
        tmp_path,
        """\
        noise_schedule.square = test_registry_schedules:SquareSchedule
        noise_schedule.broken = no_such_module_here:Thing
        """,
    )

    with caplog.at_level(logging.WARNING, logger="diffuspeech.registry"):
        entries = Registry().entries()

    names = {(entry.kind, entry.name) for entry in entries}
    assert ("noise_schedule", "square") in names
    assert ("noise_schedule", "broken") not in names
    assert any("noise_schedule.broken" in record.getMessage() for record in caplog.records)


@pytest.mark.parametrize("name", ["square_without_kind", "codec.square"])
def test_malformed_entry_point_ignored(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An entry point not named '<kind>.<name>' with a known kind is skipped with a warning."""
    make_schedule_module(tmp_path, monkeypatch)
    make_distribution(tmp_path, f"{name} = test_registry_schedules:SquareSchedule\n")

    with caplog.at_level(logging.WARNING, logger="diffuspeech.registry"):
        registry = Registry()

    assert all("square" not in registry.names(kind) for kind in PLUGIN_KINDS)
    assert any(f"Ignoring entry point '{name}'" in record.getMessage() for record in caplog.records)
