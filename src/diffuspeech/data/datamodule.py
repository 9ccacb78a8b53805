"""The Lightning data module: manifests -> ids -> task mixture -> padded layouts."""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from diffuspeech.data.features import UnitCache
from diffuspeech.data.manifest import ManifestRow, read_manifest
from diffuspeech.errors import RecipeError
from diffuspeech.layouts import Budgets, Layout, build_layout
from diffuspeech.system import System
from diffuspeech.vocabulary import TASKS, Vocabulary

log = logging.getLogger(__name__)


@dataclass
class EncodedRow:
    """A manifest row as vocabulary ids per layout field."""

    id: str
    tasks: tuple[str, ...]
    fields: dict[str, list[int]]
    row: ManifestRow


def encode_row(row: ManifestRow, system: System, units: UnitCache) -> EncodedRow:
    """Turn a row's text and audio fields into vocabulary ids."""
    vocabulary = system.vocabulary
    fields: dict[str, list[int]] = {}
    for name in ("question", "thought", "answer", "transcript"):
        text = row.get(name)
        if text:
            fields[name] = system.text_tokenizer.encode(text)
    if row.get("audio"):
        fields["question_units"] = vocabulary.units_to_ids(units[row.get("audio")]).tolist()
    if row.get("reply_audio"):
        fields["reply_units"] = vocabulary.units_to_ids(units[row.get("reply_audio")]).tolist()
    return EncodedRow(row.id, row.tasks, fields, row)


def check_budgets(rows: Sequence[EncodedRow], vocabulary: Vocabulary, budgets: Budgets) -> None:
    """Lay out every (row, task) once so that a too-small budget fails before training."""
    for row in rows:
        for task in row.tasks:
            try:
                build_layout(task, dict(row.fields), vocabulary, budgets, item_id=row.id)
            except ValueError as error:
                raise RecipeError(f"{row.row.manifest}, row {row.row.line}: {error}") from error


@dataclass
class Batch:
    """Padded layouts; tensors are (b, n)."""

    tokens: torch.Tensor
    attention_mask: torch.Tensor
    target_mask: torch.Tensor
    modality: torch.Tensor
    tasks: list[str]
    ids: list[str]
    layouts: list[Layout]

    def to(self, device: torch.device | str) -> Batch:
        """Return this batch on ``device``."""
        return Batch(
            self.tokens.to(device),
            self.attention_mask.to(device),
            self.target_mask.to(device),
            self.modality.to(device),
            self.tasks,
            self.ids,
            self.layouts,
        )


def collate_layouts(layouts: list[Layout], ids: list[str], pad_id: int) -> Batch:
    """Pad layouts on the right to the longest; padding is excluded from attention."""
    length = max(len(layout.tokens) for layout in layouts)
    size = len(layouts)
    tokens = torch.full((size, length), pad_id, dtype=torch.long)
    attention_mask = torch.zeros(size, length, dtype=torch.bool)
    target_mask = torch.zeros(size, length, dtype=torch.bool)
    modality = torch.full((size, length), -1, dtype=torch.long)
    for i, layout in enumerate(layouts):
        n = len(layout.tokens)
        tokens[i, :n] = layout.tokens
        attention_mask[i, :n] = True
        target_mask[i, :n] = layout.target_mask
        modality[i, :n] = layout.modality
    return Batch(tokens, attention_mask, target_mask, modality, [lay.task for lay in layouts], ids, layouts)


class MixtureDataset(Dataset[tuple[str, EncodedRow]]):
    """A task mixture: index i draws a task by weight, then a row that serves it.

    The draw depends only on (seed, epoch, i), so an epoch is reproducible
    and can be resumed at any position.
    """

    def __init__(self, rows: list[EncodedRow], weights: dict[str, float], length: int, seed: int) -> None:
        self.by_task = {task: [row for row in rows if task in row.tasks] for task in weights}
        empty = [task for task, weight in weights.items() if weight > 0 and not self.by_task[task]]
        if empty:
            raise RecipeError(
                f"training.tasks: no training row serves task(s) {', '.join(empty)}; "
                "set their weight to 0 or add such rows to the corpus"
            )
        self.tasks = [task for task, weight in weights.items() if weight > 0]
        self.weights = [weights[task] for task in self.tasks]
        self.length = length
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[str, EncodedRow]:
        rng = random.Random(hash((self.seed, self.epoch, index)))
        task = rng.choices(self.tasks, weights=self.weights)[0]
        return task, rng.choice(self.by_task[task])


class FixedDataset(Dataset[tuple[str, EncodedRow]]):
    """Every (task, row) pair, in a fixed order (validation)."""

    def __init__(self, pairs: list[tuple[str, EncodedRow]]) -> None:
        self.pairs = pairs

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> tuple[str, EncodedRow]:
        return self.pairs[index]


class SpeechTextDataModule(L.LightningDataModule):
    """Serves the recipe's task mixture from the prepared manifests.

    Expects the tokenizers to be fitted and the unit cache filled (see
    ``diffuspeech.training.prepare_features``).
    """

    def __init__(self, system: System, units: UnitCache, manifests_dir: Path) -> None:
        super().__init__()
        self.system = system
        self.units = units
        self.manifests_dir = manifests_dir
        settings = system.recipe.training
        self.batch_size = int(settings.batch_size)
        self.weights = {str(task): float(weight) for task, weight in settings.tasks.items()}
        unknown = sorted(set(self.weights) - set(TASKS))
        if unknown:
            raise RecipeError(f"training.tasks: unknown task(s) {', '.join(unknown)}; choices: {', '.join(TASKS)}")
        self.epoch_length = int(settings.batches_per_epoch) * self.batch_size
        self.validation_per_task = int(settings.validation_items_per_task)
        self.seed = int(system.recipe.seed)
        self.train_rows: list[EncodedRow] = []
        self.valid_rows: list[EncodedRow] = []

    def read_split(self, split: str) -> list[EncodedRow]:
        """Read, encode and budget-check the manifest of ``split``."""
        rows = read_manifest(self.manifests_dir / f"{split}.jsonl")
        self.units.ensure(rows)
        encoded = [encode_row(row, self.system, self.units) for row in rows]
        check_budgets(encoded, self.system.vocabulary, self.system.budgets)
        return encoded

    def setup(self, stage: str | None = None) -> None:
        if not self.train_rows:
            self.train_rows = self.read_split("train")
            self.valid_rows = self.read_split("valid")
        self.train_dataset = MixtureDataset(self.train_rows, self.weights, self.epoch_length, self.seed)
        pairs = []
        for task, weight in self.weights.items():
            if weight > 0:
                serving = [row for row in self.valid_rows if task in row.tasks]
                pairs += [(task, row) for row in serving[: self.validation_per_task]]
        self.valid_dataset = FixedDataset(pairs)

    def collate(self, pairs: list[tuple[str, EncodedRow]]) -> Batch:
        """Lay out and pad a list of (task, row) pairs."""
        vocabulary = self.system.vocabulary
        layouts = [
            build_layout(task, dict(row.fields), vocabulary, self.system.budgets, item_id=row.id) for task, row in pairs
        ]
        return collate_layouts(layouts, [row.id for _, row in pairs], vocabulary.pad_id)

    def train_dataloader(self) -> DataLoader[Any]:
        return DataLoader(self.train_dataset, batch_size=self.batch_size, shuffle=False, collate_fn=self.collate)

    def val_dataloader(self) -> DataLoader[Any]:
        return DataLoader(self.valid_dataset, batch_size=self.batch_size, shuffle=False, collate_fn=self.collate)
