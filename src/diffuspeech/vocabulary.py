"""The unified vocabulary: text ids, then special tokens, then speech units.

Every id of the model's input and output is defined here; no other module hard-codes one.
Layout of the id space::

    [0, text_size)                          text tokenizer ids
    [text_size, text_size + n_special)      task tokens, span markers, and
                                            mask/padding unless the text
                                            tokenizer has its own
    [unit_offset, unit_offset + num_units)  speech units
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

TASKS = ("asr", "tts", "s2t", "s2s", "t2t")
"""Task names: speech recognition, speech synthesis, speech-to-text QA, speech-to-speech QA, text QA."""

SPAN_MARKERS = ("<|sos|>", "<|eos|>", "<|sot|>", "<|eot|>")

TEXT, SPEECH = 0, 1
"""Modality codes used in per-position modality tensors."""


@dataclass(frozen=True)
class Vocabulary:
    """Ids of the unified vocabulary.

    ``text_mask_id`` and ``text_pad_id`` reuse ids that the text tokenizer
    already reserves (LLaDA's tokenizer has a mask token); when they are None
    the vocabulary adds ``<|mask|>`` and ``<|pad|>`` after the span markers.
    """

    text_size: int
    num_units: int
    text_mask_id: int | None = None
    text_pad_id: int | None = None

    def __post_init__(self) -> None:
        if self.text_size < 1:
            raise ValueError(f"text_size must be at least 1, got {self.text_size}")
        if self.num_units < 1:
            raise ValueError(f"num_units must be at least 1, got {self.num_units}")
        for name in ("text_mask_id", "text_pad_id"):
            value = getattr(self, name)
            if value is not None and not 0 <= value < self.text_size:
                raise ValueError(f"{name}={value} is outside the text range [0, {self.text_size})")

    @property
    def special_tokens(self) -> list[str]:
        """Names of the added special tokens, in id order."""
        names = [f"<|task_{task}|>" for task in TASKS] + list(SPAN_MARKERS)
        if self.text_mask_id is None:
            names.append("<|mask|>")
        if self.text_pad_id is None:
            names.append("<|pad|>")
        return names

    def special_id(self, name: str) -> int:
        """Return the id of the special token ``name``, for example ``<|sos|>``."""
        try:
            return self.text_size + self.special_tokens.index(name)
        except ValueError:
            raise KeyError(f"unknown special token {name!r}; choices: {', '.join(self.special_tokens)}") from None

    def task_id(self, task: str) -> int:
        """Return the id of the task token for ``task`` (one of ``TASKS``)."""
        if task not in TASKS:
            raise KeyError(f"unknown task {task!r}; choices: {', '.join(TASKS)}")
        return self.special_id(f"<|task_{task}|>")

    @property
    def sos_id(self) -> int:
        return self.special_id("<|sos|>")

    @property
    def eos_id(self) -> int:
        return self.special_id("<|eos|>")

    @property
    def sot_id(self) -> int:
        return self.special_id("<|sot|>")

    @property
    def eot_id(self) -> int:
        return self.special_id("<|eot|>")

    @property
    def mask_id(self) -> int:
        """The id of the mask token of the forward process."""
        return self.text_mask_id if self.text_mask_id is not None else self.special_id("<|mask|>")

    @property
    def pad_id(self) -> int:
        """The id of batch padding, which is masked out of attention."""
        return self.text_pad_id if self.text_pad_id is not None else self.special_id("<|pad|>")

    @property
    def unit_offset(self) -> int:
        """The id of speech unit 0."""
        return self.text_size + len(self.special_tokens)

    @property
    def size(self) -> int:
        """Number of ids in all."""
        return self.unit_offset + self.num_units

    def units_to_ids(self, units: torch.Tensor) -> torch.Tensor:
        """Offset speech units in ``[0, num_units)`` into vocabulary ids."""
        if units.numel() and (int(units.min()) < 0 or int(units.max()) >= self.num_units):
            raise ValueError(
                f"speech units must lie in [0, {self.num_units}), got range "
                f"[{int(units.min())}, {int(units.max())}]; the unit cache was likely made "
                "with another speech tokenizer: delete it and run again"
            )
        return units.long() + self.unit_offset

    def ids_to_units(self, ids: torch.Tensor) -> torch.Tensor:
        """Return the speech units of the unit ids in ``ids``, dropping every other id."""
        keep = (ids >= self.unit_offset) & (ids < self.size)
        return ids[keep] - self.unit_offset

    def ids_to_text_ids(self, ids: list[int]) -> list[int]:
        """Keep the text tokenizer ids of ``ids`` (without mask and padding), dropping every other id."""
        reserved = {self.text_mask_id, self.text_pad_id}
        return [i for i in ids if 0 <= i < self.text_size and i not in reserved]

    def allowed_ids(self, modality: int) -> torch.Tensor:
        """Return a (size,) bool mask of the ids a target position of ``modality`` may take.

        Text positions take text ids and ``<|eot|>``; speech positions take
        units and ``<|eos|>``. Mask and padding are never allowed.
        """
        allowed = torch.zeros(self.size, dtype=torch.bool)
        if modality == TEXT:
            allowed[: self.text_size] = True
            allowed[self.eot_id] = True
        elif modality == SPEECH:
            allowed[self.unit_offset :] = True
            allowed[self.eos_id] = True
        else:
            raise ValueError(f"unknown modality {modality}; expected TEXT ({TEXT}) or SPEECH ({SPEECH})")
        allowed[self.mask_id] = False
        allowed[self.pad_id] = False
        return allowed
