"""Reading LLaDA weights from a local folder in the published Hugging Face layout.

The layout (GSAI-ML/LLaDA-8B-Base and -Instruct)::

    config.json                      architecture fields (see llada_presets)
    model.safetensors.index.json     {"weight_map": {tensor name: shard file}}
    model-00001-of-0000N.safetensors shards
    tokenizer.json                   the text tokenizer (read by text_tokenizer.tokenizers)

A single ``model.safetensors`` without an index is accepted too. Tensor names
are this project's module names under a ``model.`` prefix, for example
``model.transformer.wte.weight``, ``model.transformer.blocks.0.q_proj.weight``
and ``model.transformer.ff_out.weight``. Shards are opened with
``safetensors.safe_open``, so each tensor is read on its own and converted to
the target dtype as it is read: peak memory is the model plus one tensor.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open

from diffuspeech_plugins.backbones.llada_presets import CheckpointError

log = logging.getLogger(__name__)

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
CHECKPOINT_PREFIX = "model."
"""Prefix of every tensor name in the checkpoint before the module name."""

NEW_ROW_NOISE = 0.1
"""Noise of new vocabulary rows, as a fraction of the pretrained rows' per-dimension standard deviation."""


def shard_map(folder: Path) -> tuple[dict[str, Path], Path]:
    """Return {checkpoint tensor name: shard path} and the file that lists them.

    Raises ``CheckpointError`` naming the file when the index is missing,
    invalid, or lists a shard that does not exist.
    """
    index_path = folder / INDEX_FILE
    single_path = folder / SINGLE_FILE
    if index_path.is_file():
        try:
            index = json.loads(index_path.read_text(encoding="utf-8"))
            weight_map = index["weight_map"]
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as error:
            raise CheckpointError(f"cannot read the weight_map of {index_path}: {error!r}") from error
        if not isinstance(weight_map, dict):
            raise CheckpointError(f"{index_path}: weight_map must map tensor names to shard files")
        shards = {str(name): folder / str(shard) for name, shard in weight_map.items()}
        for name, shard in shards.items():
            if not shard.is_file():
                raise CheckpointError(f"{index_path} maps tensor {name!r} to {shard}, which does not exist")
        return shards, index_path

    if single_path.is_file():
        with _open(single_path) as handle:
            return {name: single_path for name in handle.keys()}, single_path  # noqa: SIM118 (safe_open has no __iter__)

    raise CheckpointError(f"{folder} has neither {INDEX_FILE} nor {SINGLE_FILE}: it is not a LLaDA checkpoint folder")


def _open(path: Path) -> Any:
    try:
        return safe_open(str(path), framework="pt", device="cpu")
    except (OSError, SafetensorError) as error:
        raise CheckpointError(f"cannot open safetensors file {path}: {error}") from error


def read_checkpoint(folder: Path, expected: dict[str, tuple[int, ...]], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Read every tensor of ``expected`` (module name -> shape) from the checkpoint in ``folder``.

    Checks before reading any data that the checkpoint has exactly the
    expected tensors and that each has the expected shape. Raises
    ``CheckpointError`` naming the file and the tensor for a missing tensor,
    an unexpected tensor or a shape mismatch. Tensors are returned in ``dtype``.
    """
    shards, listing = shard_map(folder)
    module_names = {CHECKPOINT_PREFIX + name: name for name in expected}

    unexpected = sorted(set(shards) - set(module_names))
    if unexpected:
        listed = ", ".join(unexpected[:5]) + (f" and {len(unexpected) - 5} more" if len(unexpected) > 5 else "")
        raise CheckpointError(
            f"{listing}: unexpected tensor(s) {listed}; the llada backbone has no such parameter "
            "(is this a LLaDA checkpoint of block_type 'llama' without biases?)"
        )
    missing = [name for name in module_names if name not in shards]
    if missing:
        raise CheckpointError(f"{listing}: tensor {missing[0]!r} is missing ({len(missing)} missing in all)")

    by_shard: dict[Path, list[str]] = {}
    for checkpoint_name in module_names:
        by_shard.setdefault(shards[checkpoint_name], []).append(checkpoint_name)

    state: dict[str, torch.Tensor] = {}
    for shard, names in sorted(by_shard.items()):
        log.info("Reading %d tensors from %s", len(names), shard.name)
        with _open(shard) as handle:
            present = set(handle.keys())
            for checkpoint_name in names:
                module_name = module_names[checkpoint_name]
                if checkpoint_name not in present:
                    raise CheckpointError(f"{shard}: tensor {checkpoint_name!r} is missing, but {listing} lists it")
                shape = tuple(handle.get_slice(checkpoint_name).get_shape())
                if shape != expected[module_name]:
                    raise CheckpointError(
                        f"{shard}: tensor {checkpoint_name!r} has shape {list(shape)}, but config.json gives "
                        f"{list(expected[module_name])}"
                    )
                state[module_name] = handle.get_tensor(checkpoint_name).to(dtype)
    return state


def extend_rows(weight: torch.Tensor, total: int, seed: int = 0) -> torch.Tensor:
    """Append rows to a (rows, d) embedding or output matrix until it has ``total`` rows.

    New rows are the mean of the pretrained rows plus Gaussian noise with
    ``NEW_ROW_NOISE`` times their per-dimension standard deviation. The mean
    keeps the pretrained model's output distribution nearly unchanged for the
    new ids' output rows (each new logit starts near the average logit), and
    the noise makes the new rows distinct. Statistics are computed in float32.
    """
    rows, dim = weight.shape
    if total < rows:
        raise CheckpointError(f"the vocabulary has {total} ids, fewer than the checkpoint's {rows} text rows")
    if total == rows:
        return weight

    pretrained = weight.float()
    mean = pretrained.mean(dim=0)
    std = pretrained.std(dim=0)
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(total - rows, dim, generator=generator) * std * NEW_ROW_NOISE
    return torch.cat([weight, (mean + noise).to(weight.dtype)])
