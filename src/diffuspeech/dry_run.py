"""``diffuspeech train RECIPE --dry-run``: compose a recipe and size its model without reading weights or data.

The dry run checks what ``compose`` checks without building the plugins
that load pretrained files:

- every plugin name and argument, the core settings and the layout budgets;
- the text tokenizer is built (pretrained tokenizers report their size from
  the recipe without their file, e.g. ``hf_tokenizers`` with ``vocab_size``);
- the speech tokenizer and vocoder are not built: the unit count is
  ``speech_tokenizer.args.num_units`` or the plugin's default, and the
  vocoder's ``num_units`` and ``frame_rate`` arguments are compared with the
  speech tokenizer's where both recipes give them;
- the backbone is built on the meta device (no memory, no weights read) for
  the unified vocabulary, and its parameters are counted.

The memory estimate per GPU counts model states only::

    bytes per GPU = P * (w / s_w + g / s_g + o / s_o)

with P parameters, w, g, o the bytes per parameter of weights, gradients and
AdamW's two moment buffers under the recipe's precision (``PRECISION_BYTES``),
and s_w, s_g, s_o the number of processes each is sharded over under the
strategy (``SHARDING``): the world size ``devices * num_nodes`` for a
sharded state, 1 for a replicated one. Activations, temporary buffers
(FSDP's gathered layers, autocast copies) and the CUDA context come on top.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf

from diffuspeech.errors import RecipeError
from diffuspeech.interfaces import TextTokenizer
from diffuspeech.recipe import build_component, component_args, resolve_component
from diffuspeech.settings import check_core_settings
from diffuspeech.system import budgets_from_recipe, build_backbone
from diffuspeech.vocabulary import Vocabulary

GIB = 1024**3

# Bytes per parameter of (weights, gradients, AdamW moments) for each Lightning precision.
# Mixed precision keeps float32 weights, gradients and moments and computes in 16 bits;
# "true" 16-bit precision keeps all three in 16 bits.
PRECISION_BYTES: dict[str, tuple[int, int, int]] = {
    "32-true": (4, 4, 8),
    "32": (4, 4, 8),
    "16-mixed": (4, 4, 8),
    "bf16-mixed": (4, 4, 8),
    "16-true": (2, 2, 4),
    "bf16-true": (2, 2, 4),
    "64-true": (8, 8, 16),
}

# Sharding of (weights, gradients, optimizer states) over the world size, per strategy name prefix.
# FSDP's default in Lightning is FULL_SHARD; DeepSpeed's stages shard progressively more.
SHARDING: dict[str, tuple[bool, bool, bool]] = {
    "fsdp": (True, True, True),
    "deepspeed_stage_1": (False, False, True),
    "deepspeed_stage_2": (False, True, True),
    "deepspeed_stage_3": (True, True, True),
}

COMPONENTS = (
    ("text_tokenizer", "text_tokenizer"),
    ("speech_tokenizer", "speech_tokenizer"),
    ("vocoder", "vocoder"),
    ("noise_schedule.text", "noise_schedule"),
    ("noise_schedule.speech", "noise_schedule"),
    ("sampler", "sampler"),
)


@dataclass
class MemoryEstimate:
    """Bytes per GPU of model states under one precision and strategy."""

    parameters: int
    precision: str
    strategy: str
    world_size: int
    weights: float
    gradients: float
    optimizer: float
    formula: str

    @property
    def total(self) -> float:
        return self.weights + self.gradients + self.optimizer


@dataclass
class DryRunReport:
    """Result of a dry run: vocabulary, backbone size, memory estimate and the local files named."""

    recipe_path: str
    vocabulary: Vocabulary
    backbone_name: str
    backbone_class: str
    parameters: int
    memory: MemoryEstimate
    files: list[tuple[str, str, bool]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        """Return the report as printable lines."""
        vocabulary = self.vocabulary
        reused = []
        if vocabulary.text_mask_id is not None:
            reused.append(f"mask id {vocabulary.text_mask_id}")
        if vocabulary.text_pad_id is not None:
            reused.append(f"pad id {vocabulary.text_pad_id}")
        reuse = f" ({' and '.join(reused)} from the text tokenizer)" if reused else ""
        memory = self.memory
        lines = [
            f"recipe: {self.recipe_path}",
            f"vocabulary: {vocabulary.size:,} ids = {vocabulary.text_size:,} text + "
            f"{len(vocabulary.special_tokens)} special + {vocabulary.num_units:,} speech units{reuse}",
            f"backbone: {self.backbone_name} ({self.backbone_class}), built on the meta device",
            f"parameters: {self.parameters:,}",
            f"memory per GPU (estimate): {format_bytes(memory.total)} = weights {format_bytes(memory.weights)} "
            f"+ gradients {format_bytes(memory.gradients)} + AdamW states {format_bytes(memory.optimizer)}",
            f"  formula: {memory.formula}",
            "  not included: activations, temporary buffers, the CUDA context",
        ]
        if self.files:
            lines.append("local files named by the recipe:")
            width = max(len(key) for key, _, _ in self.files)
            lines += [
                f"  {key:<{width}}  {path}  ({'found' if found else 'missing'})" for key, path, found in self.files
            ]
        lines += [f"note: {note}" for note in self.notes]
        return lines


def format_bytes(size: float) -> str:
    """Return ``size`` in GiB, or in MiB below 1 GiB."""
    return f"{size / GIB:.1f} GiB" if size >= GIB else f"{size / 1024**2:.1f} MiB"


def world_size(training: DictConfig) -> tuple[int, str | None]:
    """Return devices * num_nodes, and a note when ``devices`` is ``auto`` (counted as 1)."""
    devices = training.devices
    nodes = int(training.num_nodes)
    if isinstance(devices, int):
        return devices * nodes, None
    if isinstance(devices, list | ListConfig):
        return len(devices) * nodes, None
    return nodes, f"training.devices is {devices!r}; the estimate counts 1 device per node"


def estimate_memory(parameters: int, precision: str, strategy: str, processes: int) -> MemoryEstimate:
    """Return the per-GPU bytes of weights, gradients and AdamW states (see the module docstring)."""
    if precision not in PRECISION_BYTES:
        raise RecipeError(
            f"training.precision: {precision!r} has no memory rule; choices: {', '.join(PRECISION_BYTES)}"
        )
    weight_bytes, gradient_bytes, optimizer_bytes = PRECISION_BYTES[precision]
    sharded = next((rule for name, rule in SHARDING.items() if strategy.startswith(name)), (False, False, False))
    shards = [processes if flag else 1 for flag in sharded]

    def term(size: int, count: int, what: str) -> str:
        return f"{size} B {what}" + (f" / {count}" if count > 1 else "")

    formula = (
        f"{parameters:,} parameters x ({term(weight_bytes, shards[0], 'weights')} + "
        f"{term(gradient_bytes, shards[1], 'gradients')} + {term(optimizer_bytes, shards[2], 'AdamW moments')}); "
        f"precision {precision}, strategy {strategy}, world size {processes}"
    )
    return MemoryEstimate(
        parameters=parameters,
        precision=precision,
        strategy=strategy,
        world_size=processes,
        weights=parameters * weight_bytes / shards[0],
        gradients=parameters * gradient_bytes / shards[1],
        optimizer=parameters * optimizer_bytes / shards[2],
        formula=formula,
    )


def _argument_or_default(recipe: DictConfig, key: str, kind: str, name: str) -> Any:
    """Return ``key.args.name`` from the recipe, else the default of the plugin's constructor."""
    args = component_args(recipe, key)
    if name in args:
        return args[name]
    cls = resolve_component(recipe, key, kind)
    parameter = inspect.signature(cls.__init__).parameters.get(name)
    if parameter is None or parameter.default is inspect.Parameter.empty:
        raise RecipeError(f"{key}.args.{name}: the dry run needs it and {cls.__name__} has no default; set it")
    return parameter.default


def local_files(recipe: DictConfig) -> list[tuple[str, str, bool]]:
    """Return (key, path, exists) for every component argument that names a local file or folder."""
    found = []
    container = OmegaConf.to_container(recipe, resolve=True)
    assert isinstance(container, dict)

    # Top-level keys (data_dir, output_dir, recipe_path) are outputs or bookkeeping, not inputs.
    def visit(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                visit(value, f"{prefix}.{key}" if prefix else str(key))
            return
        last = prefix.rsplit(".", 1)[-1]
        is_path = last in ("path", "init_from") or last.endswith(("_path", "_file", "_dir"))
        if "." in prefix and is_path and isinstance(node, str) and node:
            found.append((prefix, node, Path(node).expanduser().exists()))

    visit(container, "")
    return found


def _check_codec_arguments(recipe: DictConfig, num_units: int) -> None:
    vocoder_args = component_args(recipe, "vocoder")
    tokenizer_args = component_args(recipe, "speech_tokenizer")
    if "num_units" in vocoder_args and vocoder_args["num_units"] != num_units:
        raise RecipeError(
            f"vocoder.args.num_units: the vocoder expects {vocoder_args['num_units']} but the speech tokenizer "
            f"produces {num_units}; set vocoder.args.num_units={num_units}"
        )
    both = "frame_rate" in vocoder_args and "frame_rate" in tokenizer_args
    if both and float(vocoder_args["frame_rate"]) != float(tokenizer_args["frame_rate"]):
        raise RecipeError(
            f"vocoder.args.frame_rate: the vocoder expects {vocoder_args['frame_rate']} but the speech "
            f"tokenizer produces {tokenizer_args['frame_rate']}; make them equal"
        )


def dry_run(recipe: DictConfig) -> DryRunReport:
    """Compose ``recipe`` without weights or data, build its backbone on the meta device and size it."""
    check_core_settings(recipe)
    for key, kind in COMPONENTS:
        resolve_component(recipe, key, kind)
    for key, kind in (("noise_schedule.text", "noise_schedule"), ("noise_schedule.speech", "noise_schedule")):
        build_component(recipe, key, kind)
    build_component(recipe, "sampler", "sampler")
    budgets_from_recipe(recipe)

    text_tokenizer: TextTokenizer = build_component(recipe, "text_tokenizer", "text_tokenizer")
    num_units = int(_argument_or_default(recipe, "speech_tokenizer", "speech_tokenizer", "num_units"))
    _check_codec_arguments(recipe, num_units)
    vocabulary = Vocabulary(
        text_size=text_tokenizer.vocab_size,
        num_units=num_units,
        text_mask_id=getattr(text_tokenizer, "mask_id", None),
        text_pad_id=getattr(text_tokenizer, "pad_id", None),
    )

    # build_backbone checks the backbone's arguments and the vocabulary as training does.
    with torch.device("meta"):
        backbone = build_backbone(recipe, vocabulary)
    parameters = sum(parameter.numel() for parameter in backbone.parameters())

    training = recipe.training
    processes, note = world_size(training)
    memory = estimate_memory(parameters, str(training.precision), str(training.strategy), processes)
    return DryRunReport(
        recipe_path=str(recipe.get("recipe_path", "")),
        vocabulary=vocabulary,
        backbone_name=str(recipe.backbone.name),
        backbone_class=type(backbone).__name__,
        parameters=parameters,
        memory=memory,
        files=local_files(recipe),
        notes=[note] if note else [],
    )
