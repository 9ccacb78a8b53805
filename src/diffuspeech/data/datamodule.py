"""The Lightning data module: manifests -> ids -> task mixture -> padded layouts."""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from diffuspeech.data.features import UnitCache
from diffuspeech.data.manifest import ManifestRow
from diffuspeech.data.validation import BadRow, check_manifest, check_units
from diffuspeech.errors import DataError, RecipeError
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
        self.skip_bad_rows = str(settings.get("bad_rows", "fail")) == "skip"
        self.bad_rows: dict[str, list[BadRow]] = {}
        self.train_rows: list[EncodedRow] = []
        self.valid_rows: list[EncodedRow] = []

    def read_split(self, split: str) -> list[EncodedRow]:
        """Read, check, encode and budget-check the manifest of ``split``.

        Bad rows (see ``diffuspeech.data.validation``) raise ``DataError``
        when ``training.bad_rows`` is ``fail``; with ``skip`` they are left
        out and kept in ``self.bad_rows[split]`` for the run's report.
        """
        path = self.manifests_dir / f"{split}.jsonl"
        check = check_manifest(path, read_samples=False)
        if check.bad and not self.skip_bad_rows:
            raise DataError(bad_rows_message(check.bad, path))

        failed = self.units.ensure(check.rows, skip_bad=self.skip_bad_rows)
        undecodable = []
        for row in check.rows:
            reasons = [failed[audio] for audio in (row.get("audio"), row.get("reply_audio")) if audio in failed]
            if reasons:
                undecodable.append(BadRow(row.manifest, row.line, row.id, "unreadable audio", reasons[0]))
        check.drop(undecodable)
        check.drop(check_units(check.rows, self.units.units, self.system.speech_tokenizer.num_units, "unit cache"))
        if check.bad:
            self.bad_rows[split] = check.bad
            log.warning(
                "Skipping %d bad row(s) of %s (training.bad_rows=skip): %s",
                len(check.bad),
                path,
                ", ".join(f"{kind} {count}" for kind, count in check.counts().items()),
            )
            for bad in check.bad:
                log.warning("Skipped %s", bad)
        if not check.rows:
            raise DataError(f"manifest {path} has no usable rows; run `diffuspeech validate-data {path}`")

        encoded = [encode_row(row, self.system, self.units) for row in check.rows]
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

    def _rank(self) -> tuple[int, int]:
        """Return (global rank, world size); (0, 1) outside a trainer."""
        trainer = getattr(self, "trainer", None)
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def train_dataloader(self) -> DataLoader[Any]:
        # The loader shards batches across ranks itself, so the trainer must not inject a DistributedSampler.
        rank, world_size = self._rank()
        self.train_loader = ResumableDataLoader(self.train_dataset, self.batch_size, self.collate, rank, world_size)
        return self.train_loader

    def val_dataloader(self) -> DataLoader[Any]:
        rank, world_size = self._rank()
        sampler: DistributedSampler[Any] | None = None
        if world_size > 1:
            sampler = DistributedSampler(self.valid_dataset, num_replicas=world_size, rank=rank, shuffle=False)
        # An explicit generator keeps the loader from drawing its base seed from the global torch generator.
        return DataLoader(
            self.valid_dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            shuffle=False,
            collate_fn=self.collate,
            generator=torch.Generator(),
        )


def bad_rows_message(bad: list[BadRow], path: Path, shown: int = 3) -> str:
    """Return a one-line error that names the first ``shown`` bad rows of ``path`` and says how to fix them."""
    listed = "; ".join(str(row) for row in bad[:shown])
    more = f"; and {len(bad) - shown} more" if len(bad) > shown else ""
    return (
        f"{len(bad)} bad row(s) in {path}: {listed}{more}. Run `diffuspeech validate-data {path}` for the full list, "
        "fix them, or set training.bad_rows=skip to train without them"
    )


class EpochBatchSampler(Sampler[list[int]]):
    """This rank's batches of an epoch; one iteration can start ``start`` batches in (resume).

    Batch b of rank r contains the consecutive indices from ``(b * world_size + r) * batch_size``,
    taken modulo the epoch length, so every rank gets the same number of full batches.
    """

    def __init__(self, length: int, batch_size: int, rank: int = 0, world_size: int = 1) -> None:
        self.length = length
        self.batch_size = batch_size
        self.rank = rank
        self.world_size = world_size
        self.start = 0

    def __len__(self) -> int:
        return -(-self.length // (self.batch_size * self.world_size))

    def __iter__(self) -> Iterator[list[int]]:
        start, self.start = self.start, 0
        for batch in range(start, len(self)):
            first = (batch * self.world_size + self.rank) * self.batch_size
            yield [index % self.length for index in range(first, first + self.batch_size)]


class ResumableDataLoader(DataLoader[Any]):
    """The training loader, with the state Lightning saves in checkpoints to resume mid-epoch.

    The state is the number of batches that training has consumed since the
    run began. ``DiffusionLM.training_step`` counts them through
    ``mark_consumed``, because the loader itself runs a batch ahead of
    training (Lightning prefetches). Each iteration starts at that count: the
    mixture's epoch is ``consumed // len(self)`` and the first batch is
    ``consumed % len(self)``. The mixture's item i of an epoch is a pure
    function of (seed, epoch, i), so a resumed run gets the same items in the
    same order, none repeated or skipped, whatever epoch number Lightning
    gives the remainder of an interrupted epoch.
    """

    def __init__(
        self, dataset: MixtureDataset, batch_size: int, collate: Any, rank: int = 0, world_size: int = 1
    ) -> None:
        self.batches = EpochBatchSampler(len(dataset), batch_size, rank, world_size)
        super().__init__(dataset, batch_sampler=self.batches, collate_fn=collate, generator=torch.Generator())
        self.mixture = dataset
        self.consumed = 0

    def __iter__(self) -> Any:
        epoch, start = divmod(self.consumed, len(self.batches))
        self.mixture.epoch = epoch
        self.batches.start = start
        if start:
            log.info("Resuming the data at batch %d of epoch %d", start, epoch)
        return super().__iter__()

    def mark_consumed(self) -> None:
        """Count one batch taken by training."""
        self.consumed += 1

    def state_dict(self) -> dict[str, int]:
        return {"consumed": self.consumed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.consumed = int(state["consumed"])
