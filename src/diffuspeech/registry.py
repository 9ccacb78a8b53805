"""Plugin registry: finds implementations through one entry-point group.

Entry points live in the group ``diffuspeech.plugins`` and are named
``<kind>.<plugin name>``, for example ``vocoder.griffin_lim``. A recipe may
also name a class by dotted path (``my_package.module:MyVocoder``); nothing
else is ever imported.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points

from diffuspeech.errors import PluginError
from diffuspeech.interfaces import PLUGIN_KINDS, Plugin

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "diffuspeech.plugins"


@dataclass(frozen=True)
class PluginEntry:
    """One registered plugin: its kind, name, class and where it came from."""

    kind: str
    name: str
    cls: type[Plugin]
    source: str

    @property
    def description(self) -> str:
        """The plugin's one-line description, or its docstring's first line."""
        if self.cls.description:
            return self.cls.description
        doc = (self.cls.__doc__ or "").strip().splitlines()
        return doc[0] if doc else ""


def check_plugin_class(kind: str, name: str, cls: object, source: str) -> type[Plugin]:
    """Return ``cls`` if it implements the base class of ``kind``, else raise ``PluginError``."""
    base = PLUGIN_KINDS[kind]
    if not isinstance(cls, type) or not issubclass(cls, base):
        raise PluginError(
            f"plugin {kind}.{name} from {source} is {cls!r}, which is not a subclass of "
            f"{base.__module__}.{base.__name__}; make the class derive from it"
        )
    abstract = sorted(getattr(cls, "__abstractmethods__", ()))
    if abstract:
        raise PluginError(
            f"plugin {kind}.{name} from {source} does not implement {', '.join(abstract)} required by {base.__name__}"
        )
    return cls


class Registry:
    """The plugins of every kind, loaded lazily from installed entry points."""

    def __init__(self) -> None:
        self._entry_points: dict[str, dict[str, EntryPoint]] = {kind: {} for kind in PLUGIN_KINDS}
        self._loaded: dict[tuple[str, str], PluginEntry] = {}
        for entry_point in entry_points(group=ENTRY_POINT_GROUP):
            kind, dot, name = entry_point.name.partition(".")
            if not dot or kind not in PLUGIN_KINDS:
                log.warning(
                    "Ignoring entry point %r (%s): its name must be '<kind>.<name>' with kind one of %s",
                    entry_point.name,
                    entry_point.value,
                    ", ".join(PLUGIN_KINDS),
                )
                continue
            self._entry_points[kind][name] = entry_point

    def names(self, kind: str) -> list[str]:
        """Return the sorted plugin names of ``kind``."""
        self._check_kind(kind)
        return sorted(self._entry_points[kind])

    def get(self, kind: str, name: str) -> PluginEntry:
        """Return the plugin ``name`` of ``kind``; ``name`` may be a dotted path ``module:Class``."""
        self._check_kind(kind)
        if (kind, name) in self._loaded:
            return self._loaded[(kind, name)]

        if ":" in name:
            entry = PluginEntry(kind, name, self._import_dotted(kind, name), f"dotted path {name}")
        elif name in self._entry_points[kind]:
            entry_point = self._entry_points[kind][name]
            source = f"entry point {entry_point.name} = {entry_point.value}"
            try:
                cls = entry_point.load()
            except Exception as error:
                raise PluginError(f"failed to import plugin {kind}.{name} ({source}): {error}") from error
            entry = PluginEntry(kind, name, check_plugin_class(kind, name, cls, source), source)
        else:
            choices = ", ".join(self.names(kind)) or "(none installed)"
            raise PluginError(
                f"unknown {kind} plugin {name!r}; choices: {choices}. "
                "Install a package that provides it, or give a dotted path 'module:Class'"
            )

        self._loaded[(kind, name)] = entry
        return entry

    def entries(self) -> list[PluginEntry]:
        """Return every installed plugin, loading each; broken ones are logged and skipped."""
        found = []
        for kind in PLUGIN_KINDS:
            for name in self.names(kind):
                try:
                    found.append(self.get(kind, name))
                except PluginError as error:
                    log.warning("%s", error)
        return found

    def _import_dotted(self, kind: str, path: str) -> type[Plugin]:
        module_name, _, class_name = path.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as error:
            raise PluginError(f"cannot import module {module_name!r} for {kind} plugin {path!r}: {error}") from error
        if not hasattr(module, class_name):
            raise PluginError(f"module {module_name!r} has no class {class_name!r} (from {kind} plugin {path!r})")
        return check_plugin_class(kind, path, getattr(module, class_name), f"dotted path {path}")

    @staticmethod
    def _check_kind(kind: str) -> None:
        if kind not in PLUGIN_KINDS:
            raise PluginError(f"unknown plugin kind {kind!r}; choices: {', '.join(PLUGIN_KINDS)}")


_registry: Registry | None = None


def get_registry() -> Registry:
    """Return the process-wide registry, scanning entry points on first use."""
    global _registry
    if _registry is None:
        _registry = Registry()
    return _registry
