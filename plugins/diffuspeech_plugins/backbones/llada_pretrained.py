"""The LLaDA backbone built from a named preset or a local pretrained checkpoint."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from diffuspeech_plugins.backbones.llada import LLaDABackbone
from diffuspeech_plugins.backbones.llada_checkpoint import extend_rows, read_checkpoint
from diffuspeech_plugins.backbones.llada_presets import (
    ARCHITECTURE_FIELDS,
    PRESETS,
    CheckpointError,
    LLaDAPreset,
    check_preset_matches,
    get_preset,
    preset_from_config,
    read_config,
)

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class LLaDAPretrainedBackbone(LLaDABackbone):
    """LLaDA at a named size (``preset``), loaded from a local folder when ``path`` is set.

    ``path`` is a folder in LLaDA's Hugging Face layout (``config.json``,
    safetensors shards and their index; see ``llada_checkpoint``). The
    architecture comes from its ``config.json``. When ``preset`` is set too,
    ``config.json`` must agree with it. Without ``path`` the weights are random
    (``init_std``) and the architecture arguments (``d_model`` ... ``rms_norm_eps``,
    null by default) override the preset's. Nothing is downloaded and no code
    from the folder runs.

    ``init_from`` names a diffuspeech training checkpoint (``last.ckpt`` of an
    earlier stage); its ``backbone.*`` weights replace the pretrained ones, and
    ``path`` then only supplies the architecture.

    Vocabulary extension: the checkpoint's ``embedding_size`` text rows keep
    their ids. Rows up to ``vocab_size`` (special tokens and speech units) are
    added by ``extend_rows`` (mean of the pretrained rows plus small noise) in
    both the input embedding and the output projection. The backbone reports
    ``text_rows`` so that composition checks that the text tokenizer reports
    the same number of text ids.

    Built under ``torch.device("meta")`` (``diffuspeech train --dry-run``),
    the backbone reads no weights, and a missing folder falls back to the preset.

    ``dtype`` is the dtype the weights are read into (float32, bfloat16 or
    float16). NOTE: every process reads the whole checkpoint into CPU memory
    before the strategy shards it; FSDP with meta-device initialization would
    read only each rank's shard. Inference builds the backbone on the meta
    device and assigns the trained weights, so it reads neither the shards
    nor ``init_from``. The architecture then comes from ``config.json`` when
    it still exists, else from ``preset``.
    """

    description = "LLaDA backbone at a named size (tiny ... 8b) or loaded from a local Hugging Face LLaDA folder"

    def __init__(
        self,
        vocab_size: int,
        preset: str | None = None,
        path: str | None = None,
        init_from: str | None = None,
        dtype: str = "float32",
        init_std: float = 0.02,
        d_model: int | None = None,
        n_layers: int | None = None,
        n_heads: int | None = None,
        n_kv_heads: int | None = None,
        mlp_hidden_size: int | None = None,
        rope_theta: float | None = None,
        rms_norm_eps: float | None = None,
    ) -> None:
        if preset is None and path is None:
            raise ValueError(f"give backbone.args.preset (one of {', '.join(PRESETS)}), backbone.args.path, or both")
        if dtype not in DTYPES:
            raise ValueError(f"dtype {dtype!r} is invalid; choices: {', '.join(DTYPES)}")
        overrides = {
            name: value
            for name, value in zip(
                ARCHITECTURE_FIELDS,
                (d_model, n_layers, n_heads, n_kv_heads, mlp_hidden_size, rope_theta, rms_norm_eps),
                strict=True,
            )
            if value is not None
        }

        folder = Path(path).expanduser() if path else None
        on_meta = torch.get_default_device().type == "meta"
        architecture = self._architecture(preset, folder, on_meta, overrides)
        load = (folder is not None or init_from is not None) and not on_meta

        # Loading builds on the meta device first so that no random 8B initialization is computed and thrown away.
        arguments = architecture.backbone_arguments()
        if load:
            with torch.device("meta"):
                super().__init__(vocab_size, init_std=init_std, **arguments)
        else:
            super().__init__(vocab_size, init_std=init_std, **arguments)
        self.preset = architecture
        self.text_rows = architecture.embedding_size if folder is not None else None

        if load and init_from is not None:
            self._load_trained(Path(init_from).expanduser(), DTYPES[dtype])
        elif load:
            assert folder is not None
            self._load(folder, DTYPES[dtype])
        elif not on_meta:
            self.to(DTYPES[dtype])

    @staticmethod
    def _architecture(preset: str | None, folder: Path | None, on_meta: bool, overrides: dict[str, Any]) -> LLaDAPreset:
        named = get_preset(preset) if preset is not None else None
        config_path = folder / "config.json" if folder is not None else None
        if config_path is None or (not config_path.is_file() and on_meta and named is not None):
            assert named is not None
            if config_path is not None:
                log.info("%s not found; building preset %r on the meta device", config_path, preset)
            return replace(named, **overrides)

        found = preset_from_config(read_config(config_path), config_path)
        if preset is not None and named is not None:
            check_preset_matches(preset, named, found, config_path)
        for name, value in overrides.items():
            if getattr(found, name) != value:
                raise CheckpointError(
                    f"backbone.args.{name}={value!r} disagrees with {config_path} ({getattr(found, name)!r}); "
                    "remove the argument, since a checkpoint's config.json fixes the architecture"
                )
        return found

    def _load_trained(self, checkpoint: Path, dtype: torch.dtype) -> None:
        """Assign the ``backbone.*`` weights of a diffuspeech training checkpoint (stage 1 for stage 2)."""
        if not checkpoint.is_file():
            raise CheckpointError(
                f"backbone.args.init_from: {checkpoint} not found; train the earlier stage first or fix the path"
            )
        try:
            # mmap keeps the optimizer states of a large checkpoint on disk; weights_only runs no pickled code.
            stored = torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True)
        except Exception as error:  # the restricted unpickler raises several unrelated types
            raise CheckpointError(f"cannot read {checkpoint} as a diffuspeech checkpoint: {error}") from error
        weights = stored.get("state_dict", {}) if isinstance(stored, dict) else {}
        prefix = "backbone."
        state = {name[len(prefix) :]: tensor.to(dtype) for name, tensor in weights.items() if name.startswith(prefix)}

        expected = {name: tuple(parameter.shape) for name, parameter in self.named_parameters()}
        for name, shape in expected.items():
            if name not in state:
                raise CheckpointError(f"{checkpoint}: tensor {prefix + name!r} is missing")
            if tuple(state[name].shape) != shape:
                raise CheckpointError(
                    f"{checkpoint}: tensor {prefix + name!r} has shape {list(state[name].shape)}, but this recipe "
                    f"gives {list(shape)}; the vocabulary or architecture differs from the earlier stage"
                )
        unexpected = sorted(set(state) - set(expected))
        if unexpected:
            raise CheckpointError(f"{checkpoint}: unexpected tensor(s) {', '.join(prefix + n for n in unexpected[:5])}")
        self.load_state_dict(state, strict=True, assign=True)
        for parameter in self.parameters():
            parameter.requires_grad_(True)
        log.info("Initialized the backbone from the trained checkpoint %s", checkpoint)

    def _load(self, folder: Path, dtype: torch.dtype) -> None:
        """Read the checkpoint's tensors, add the new vocabulary rows, and assign them as parameters."""
        text_rows = self.text_rows
        assert text_rows is not None
        if self.vocab_size < text_rows:
            raise CheckpointError(
                f"{folder / 'config.json'}: embedding_size is {text_rows} but the unified vocabulary has only "
                f"{self.vocab_size} ids; the text tokenizer must report the checkpoint's {text_rows} text ids"
            )

        # The checkpoint's embedding and output matrices have text_rows rows; the module has vocab_size.
        expected = {name: tuple(parameter.shape) for name, parameter in self.named_parameters()}
        for name in ("transformer.wte.weight", "transformer.ff_out.weight"):
            expected[name] = (text_rows, expected[name][1])
        state = read_checkpoint(folder, expected, dtype)
        for seed, name in enumerate(("transformer.wte.weight", "transformer.ff_out.weight")):
            state[name] = extend_rows(state[name], self.vocab_size, seed=seed)

        self.load_state_dict(state, strict=True, assign=True)
        leftover = [name for name, tensor in [*self.named_parameters(), *self.named_buffers()] if tensor.is_meta]
        if leftover:
            raise CheckpointError(f"{folder}: no checkpoint tensor for {', '.join(leftover)}")
        for parameter in self.parameters():
            parameter.requires_grad_(True)
        log.info(
            "Loaded LLaDA weights from %s: %d text rows, %d rows added for special tokens and speech units",
            folder,
            text_rows,
            self.vocab_size - text_rows,
        )

    def extra_repr(self) -> str:
        return f"text_rows={self.text_rows}, vocab_size={self.vocab_size}"
