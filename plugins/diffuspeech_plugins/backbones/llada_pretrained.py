"""The LLaDA backbone built from a named preset or a local pretrained checkpoint."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from diffuspeech_plugins.backbones.llada import LLaDABackbone
from diffuspeech_plugins.backbones.llada_checkpoint import extend_rows, read_checkpoint
from diffuspeech_plugins.backbones.llada_presets import (
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

    ``path`` is a folder in LLaDA's Hugging Face layout (``config.json``, safetensors
    shards and their index; see ``llada_checkpoint``). The architecture comes
    from its ``config.json``. When ``preset`` is set too, ``config.json``
    must agree with it. Without ``path`` the weights are random (``init_std``).
    Nothing is downloaded and no code from the folder runs.

    Vocabulary extension: the checkpoint's ``embedding_size`` text rows keep
    their ids, and rows up to ``vocab_size`` (special tokens and speech units)
    are added by ``extend_rows`` (mean of the pretrained rows plus small noise),
    in both the input embedding and the output projection. The recipe's text
    tokenizer must therefore report exactly ``embedding_size`` text ids.

    Built under ``torch.device("meta")`` (``diffuspeech train --dry-run``),
    the backbone reads no weights, and a missing folder falls back to the preset.

    ``dtype`` is the dtype the weights are read into (float32, bfloat16 or
    float16). NOTE: every process reads the whole checkpoint into CPU memory
    before the strategy shards it; FSDP with meta-device initialization would
    read only each rank's shard. Inference rebuilds the backbone from the
    stored recipe, so the folder is read again there before the trained
    weights replace it.
    """

    description = "LLaDA backbone at a named size (tiny ... 8b) or loaded from a local Hugging Face LLaDA folder"

    def __init__(
        self,
        vocab_size: int,
        preset: str | None = None,
        path: str | None = None,
        dtype: str = "float32",
        init_std: float = 0.02,
    ) -> None:
        if preset is None and path is None:
            raise ValueError(f"give backbone.args.preset (one of {', '.join(PRESETS)}), backbone.args.path, or both")
        if dtype not in DTYPES:
            raise ValueError(f"dtype {dtype!r} is invalid; choices: {', '.join(DTYPES)}")

        folder = Path(path).expanduser() if path else None
        on_meta = torch.get_default_device().type == "meta"
        architecture = self._architecture(preset, folder, on_meta)
        load = folder is not None and not on_meta

        # Loading builds on the meta device first so that no random 8B initialization is computed and thrown away.
        arguments = architecture.backbone_arguments()
        if load:
            with torch.device("meta"):
                super().__init__(vocab_size, init_std=init_std, **arguments)
        else:
            super().__init__(vocab_size, init_std=init_std, **arguments)
        self.preset = architecture
        self.text_rows = architecture.embedding_size

        if load:
            assert folder is not None
            self._load(folder, DTYPES[dtype])
        elif not on_meta:
            self.to(DTYPES[dtype])

    @staticmethod
    def _architecture(preset: str | None, folder: Path | None, on_meta: bool) -> LLaDAPreset:
        named = get_preset(preset) if preset is not None else None
        if folder is None:
            assert named is not None
            return named

        config_path = folder / "config.json"
        if not config_path.is_file() and on_meta and named is not None:
            log.info("%s not found; building preset %r on the meta device", config_path, preset)
            return named
        found = preset_from_config(read_config(config_path), config_path)
        if preset is not None and named is not None:
            check_preset_matches(preset, named, found, config_path)
        return found

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
