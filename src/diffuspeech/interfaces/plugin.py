"""The root of every plugin kind."""

from __future__ import annotations

from abc import ABC
from typing import Any, ClassVar


class Plugin(ABC):  # noqa: B024 (the root kind has no abstract method of its own)
    """A component that a recipe names and the registry builds.

    Subclasses set ``description`` to one line shown by ``diffuspeech plugins``.
    Components that are fitted on a corpus (tokenizers, codebooks) override
    ``state_dict`` and ``load_state_dict`` so that a checkpoint carries them.
    """

    description: ClassVar[str] = ""

    def state_dict(self) -> dict[str, Any]:
        """Return what must be saved beside the model weights to rebuild this plugin."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned."""
        if state:
            raise ValueError(f"{type(self).__name__} stores no state but was given keys {sorted(state)}")
