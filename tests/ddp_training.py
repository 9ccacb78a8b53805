"""A few training steps of the tiny recipe's model on fixed batches, alone or under torchrun.

Run by ``test_ddp.py`` in two ways::

    python -m torch.distributed.run --nproc_per_node 2 tests/ddp_training.py OUT   # DDP over gloo
    python tests/ddp_training.py OUT                                               # one process

Every step has one combined batch of ``2 * PER_PROCESS`` laid-out examples.
Under DDP, rank r trains on rows ``[r * PER_PROCESS, (r + 1) * PER_PROCESS)``
of it; alone, the process trains on all rows. The masking is made
deterministic (every target position masked, loss weight 1) so that both runs
see identical inputs and only Lightning's gradient averaging can make them
differ. Each process writes ``OUT.rank{r}.pt`` with its per-step losses and
final backbone weights.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader

from diffuspeech.data.datamodule import Batch, collate_layouts
from diffuspeech.interfaces import NoiseSchedule
from diffuspeech.layouts import TASK_SPANS, build_layout
from diffuspeech.recipe import load_recipe
from diffuspeech.system import System, build_backbone, compose
from diffuspeech.training.module import DiffusionLM
from diffuspeech.vocabulary import SPEECH, TASKS, TEXT

PER_PROCESS = 3
STEPS = 4
PROCESSES = 2

OVERRIDES = [
    "speech_tokenizer.args.num_units=16",
    "backbone.args.d_model=32",
    "backbone.args.n_layers=2",
    "backbone.args.n_heads=2",
    "backbone.args.mlp_hidden_size=64",
    f"training.max_steps={STEPS}",
    "training.warmup_steps=2",
    "training.learning_rate=0.01",
    "training.precision=32-true",
]


class MaskEveryTarget(NoiseSchedule):
    """gamma(t) = 1 with weight 1: every target position is masked, independent of the random draws."""

    def mask_probability(self, t: torch.Tensor) -> torch.Tensor:
        return torch.ones_like(t)

    def loss_weight(self, t: torch.Tensor) -> torch.Tensor:
        return torch.ones_like(t)


def combined_batches(system: System, seed: int = 0) -> list[list[Any]]:
    """Return STEPS lists of 2 * PER_PROCESS layouts of random tasks with random content."""
    vocabulary = system.vocabulary
    budgets = system.budgets
    generator = torch.Generator().manual_seed(seed)

    def draw(low: int, high: int, count: int) -> list[int]:
        return torch.randint(low, high, (count,), generator=generator).tolist()

    steps = []
    for step in range(STEPS):
        layouts = []
        for row in range(PROCESSES * PER_PROCESS):
            task = TASKS[(step * 7 + row) % len(TASKS)]
            fields: dict[str, list[int] | None] = {}
            for name, modality, is_target in TASK_SPANS[task]:
                # A target's content leaves one position of its budget for the closing marker.
                high = budgets.of(name) if is_target else 6
                length = draw(1, high, 1)[0]
                if modality == TEXT:
                    fields[name] = draw(0, vocabulary.text_size, length)
                else:
                    fields[name] = [i + vocabulary.unit_offset for i in draw(0, vocabulary.num_units, length)]
            layouts.append(build_layout(task, fields, vocabulary, budgets, f"{step}-{row}"))
        steps.append(layouts)
    return steps


class LossRecorder(L.Callback):
    """Stores each training step's loss as computed on this process."""

    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(
        self, trainer: L.Trainer, module: L.LightningModule, outputs: Any, batch: Any, index: int
    ) -> None:
        self.losses.append(float(outputs["loss"].detach()))


def main(output: Path) -> None:
    torch.set_num_threads(1)
    distributed = "LOCAL_RANK" in os.environ
    rank = int(os.environ.get("RANK", 0))
    strategy = ["training.strategy=ddp", f"training.devices={PROCESSES}"] if distributed else []
    recipe = load_recipe("tiny", [*OVERRIDES, "training.accelerator=cpu", *strategy])
    system = compose(recipe)
    system.schedules = {TEXT: MaskEveryTarget(), SPEECH: MaskEveryTarget()}

    # Every process builds the same initial weights from the same seed.
    L.seed_everything(0)
    backbone = build_backbone(recipe, system.vocabulary)
    module = DiffusionLM(system, backbone)

    rows = slice(rank * PER_PROCESS, (rank + 1) * PER_PROCESS) if distributed else slice(None)
    batches: list[Batch] = []
    for layouts in combined_batches(system):
        chosen = layouts[rows]
        batches.append(collate_layouts(chosen, [f"row{i}" for i in range(len(chosen))], system.vocabulary.pad_id))
    loader = DataLoader(batches, batch_size=None, collate_fn=lambda batch: batch)

    recorder = LossRecorder()
    settings = recipe.training
    trainer = L.Trainer(
        accelerator="cpu",
        devices=PROCESSES if distributed else 1,
        strategy="ddp" if distributed else "auto",
        max_steps=STEPS,
        precision="32-true",
        gradient_clip_val=float(settings.gradient_clip),
        use_distributed_sampler=False,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[recorder],
    )
    trainer.fit(module, train_dataloaders=loader)

    state = {name: tensor.detach().clone() for name, tensor in backbone.state_dict().items()}
    torch.save(
        {"losses": recorder.losses, "weights": state, "world_size": trainer.world_size}, f"{output}.rank{rank}.pt"
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]))
