"""Recipes: OmegaConf YAML that composes plugins into a runnable setup.

A recipe may name parent recipes under ``extends`` (paths relative to the
recipe's folder); the child's values win, and a child that names another
plugin for a component drops the parent's ``args`` of that component.
``key=value`` overrides from the command line are applied last. Each component node has the form::

    vocoder:
      name: griffin_lim        # plugin name, or a dotted path module:Class
      args: {n_iter: 32}
"""

from __future__ import annotations

import inspect
import logging
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from diffuspeech.errors import PluginError, RecipeError
from diffuspeech.interfaces import Plugin
from diffuspeech.registry import get_registry

log = logging.getLogger(__name__)

RECIPES_DIR = Path(__file__).resolve().parents[2] / "recipes"
"""The first-party recipes of a source checkout."""


def find_recipe(name_or_path: str | Path) -> Path:
    """Return the recipe file for a path, or for a bare name under ``recipes/`` (``tiny`` -> ``recipes/tiny.yaml``)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    for candidate in (Path("recipes") / f"{name_or_path}.yaml", RECIPES_DIR / f"{name_or_path}.yaml"):
        if candidate.is_file():
            return candidate
    names = sorted(p.relative_to(RECIPES_DIR).with_suffix("").as_posix() for p in RECIPES_DIR.glob("**/*.yaml"))
    raise RecipeError(
        f"recipe {str(name_or_path)!r} not found: give a YAML path or a name under {RECIPES_DIR} "
        f"(choices: {', '.join(names)})"
    )


def _load_tree(path: Path, seen: tuple[Path, ...]) -> DictConfig:
    path = path.resolve()
    if path in seen:
        chain = " -> ".join(str(p) for p in (*seen, path))
        raise RecipeError(f"recipe extends itself: {chain}")
    try:
        node = OmegaConf.load(path)
    except (OSError, OmegaConfBaseException, ValueError, yaml.YAMLError) as error:
        raise RecipeError(f"cannot read recipe {path}: {error}") from error
    if not isinstance(node, DictConfig):
        raise RecipeError(f"recipe {path} must be a mapping at the top level")

    parents = node.pop("extends", None)
    if parents is None:
        return node
    if isinstance(parents, str):
        parents = [parents]
    merged = OmegaConf.create()
    for parent in parents:
        parent_path = (path.parent / str(parent)).resolve()
        if not parent_path.is_file():
            raise RecipeError(f"{path}: extends {parent!r}, but {parent_path} does not exist")
        merged = typing.cast(DictConfig, OmegaConf.merge(merged, _load_tree(parent_path, (*seen, path))))
    _drop_replaced_args(merged, node)
    return typing.cast(DictConfig, OmegaConf.merge(merged, node))


def _drop_replaced_args(parent: DictConfig, child: DictConfig) -> None:
    """Remove the inherited ``args`` of every component that ``child`` switches to another plugin.

    Arguments belong to one plugin, so a child recipe that sets
    ``vocoder.name: unit_hifigan`` starts from the new plugin's defaults
    instead of inheriting ``griffin_lim``'s arguments.
    """
    for key, value in child.items():
        inherited = parent.get(key) if isinstance(key, str) else None
        if not isinstance(value, DictConfig) or not isinstance(inherited, DictConfig):
            continue
        if "name" in value and "name" in inherited and value["name"] != inherited["name"]:
            inherited.pop("args", None)
        else:
            _drop_replaced_args(inherited, value)


def _check_override_key(recipe: DictConfig, key: str, override: str) -> None:
    """Reject an override whose key would create a new section, which is most often a typo.

    New keys are allowed where the recipe has a parent mapping, and under a
    component's ``args`` (``noise_schedule.speech.args.power=3``).
    """
    parts = key.split(".")
    existing = 0
    while existing < len(parts) and OmegaConf.select(recipe, ".".join(parts[: existing + 1]), default=None) is not None:
        existing += 1
    missing = parts[existing:]
    if len(missing) <= 1:
        return
    parent = ".".join(parts[:existing])
    node = OmegaConf.select(recipe, parent, default=None) if parent else None
    if missing[0] == "args" and isinstance(node, DictConfig) and "name" in node:
        return
    section = ".".join(parts[: existing + 1])
    raise RecipeError(f"override {override!r}: the recipe has no section {section!r}; check the key for typos")


def load_recipe(name_or_path: str | Path, overrides: Sequence[str] = ()) -> DictConfig:
    """Load a recipe, its parents and ``key=value`` overrides, and resolve interpolations."""
    path = find_recipe(name_or_path)
    recipe = apply_overrides(_load_tree(path, ()), overrides)
    recipe["recipe_path"] = str(path)
    return recipe


def apply_overrides(recipe: DictConfig, overrides: Sequence[str]) -> DictConfig:
    """Apply ``key=value`` overrides to ``recipe`` and resolve its interpolations."""
    for override in overrides:
        if "=" not in override:
            raise RecipeError(f"override {override!r} is not of the form key=value")
        _check_override_key(recipe, override.split("=", 1)[0], override)
        try:
            recipe = typing.cast(DictConfig, OmegaConf.merge(recipe, OmegaConf.from_dotlist([override])))
        except OmegaConfBaseException as error:
            raise RecipeError(f"invalid override {override!r}: {error}") from error

    try:
        OmegaConf.resolve(recipe)
    except OmegaConfBaseException as error:
        raise RecipeError(f"cannot resolve the recipe: {error}") from error
    return recipe


def _matches(value: Any, annotation: Any) -> bool:
    """Return False only when ``value`` clearly does not fit a simple ``annotation``."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arg) for arg in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if annotation is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation in (str, bool):
        return isinstance(value, annotation)
    if origin in (list, tuple, Sequence) or annotation in (list, tuple):
        return isinstance(value, list | tuple)
    if origin is dict or annotation is dict:
        return isinstance(value, dict)
    return True


def check_arguments(cls: type, args: dict[str, Any], key: str, skip: Sequence[str] = ()) -> None:
    """Check ``args`` against the signature of ``cls.__init__``: names, required ones and simple types."""
    init = cls.__init__  # type: ignore[misc]
    signature = inspect.signature(init)
    parameters = {name: p for name, p in signature.parameters.items() if name != "self" and name not in skip}
    accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    try:
        hints = typing.get_type_hints(init)
    except (NameError, TypeError):
        hints = {}

    unknown = sorted(set(args) - set(parameters) - set(skip))
    if unknown and not accepts_any:
        raise RecipeError(
            f"{key}.args: unknown argument(s) {', '.join(unknown)} for {cls.__name__}; "
            f"choices: {', '.join(parameters) or '(none)'}"
        )
    missing = [
        name
        for name, p in parameters.items()
        if p.default is inspect.Parameter.empty
        and p.kind not in (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL)
        and name not in args
    ]
    if missing:
        raise RecipeError(f"{key}.args: missing required argument(s) {', '.join(missing)} for {cls.__name__}")
    for name, value in args.items():
        if name in hints and not _matches(value, hints[name]):
            raise RecipeError(
                f"{key}.args.{name}: value {value!r} of type {type(value).__name__} does not match "
                f"{cls.__name__}'s expected type {hints[name]}"
            )


def component_args(recipe: DictConfig, key: str) -> dict[str, Any]:
    """Return the plain ``args`` mapping of the component at ``key``."""
    node = OmegaConf.select(recipe, f"{key}.args", default=None)
    if node is None:
        return {}
    if not isinstance(node, DictConfig):
        raise RecipeError(f"{key}.args must be a mapping, got {node!r}")
    container = OmegaConf.to_container(node, resolve=True)
    assert isinstance(container, dict)
    return {str(k): v for k, v in container.items()}


def resolve_component(recipe: DictConfig, key: str, kind: str, skip: Sequence[str] = ()) -> type[Plugin]:
    """Return the plugin class named at ``key`` after checking its arguments."""
    node = OmegaConf.select(recipe, key, default=None)
    if not isinstance(node, DictConfig) or "name" not in node:
        raise RecipeError(f"{key}: missing; give a mapping with 'name' (a {kind} plugin) and optional 'args'")
    name = str(node["name"])
    try:
        cls = get_registry().get(kind, name)
    except PluginError as error:
        raise RecipeError(f"{key}.name: {error}") from error
    check_arguments(cls.cls, component_args(recipe, key), key, skip)
    return cls.cls


def build_component(recipe: DictConfig, key: str, kind: str, **extra: Any) -> Any:
    """Build the plugin at ``key`` with its recipe arguments plus ``extra`` ones set by the core."""
    cls = resolve_component(recipe, key, kind, skip=tuple(extra))
    args = component_args(recipe, key)
    clash = sorted(set(args) & set(extra))
    if clash:
        raise RecipeError(f"{key}.args: {', '.join(clash)} is set by diffuspeech and must not be given in the recipe")
    try:
        return cls(**args, **extra)
    except (ValueError, TypeError) as error:
        raise RecipeError(f"{key}: invalid arguments for {cls.__name__}: {error}") from error
