"""Named sizes of the LLaDA backbone, and the mapping from LLaDA's ``config.json``.

A preset contains the architecture fields of LLaDA's ``config.json`` under their
own names. ``8b`` is LLaDA-8B (Base and Instruct share it) as published by
GSAI-ML; its text vocabulary fields (``embedding_size``, ``mask_token_id``,
``pad_token_id``, ``eos_token_id``) come from the same file. The smaller
presets are this project's shapes for training from scratch; no published
LLaDA checkpoint has them.

``config.json`` of a LLaDA checkpoint describes more architectures than
``LLaDABackbone`` implements (the OLMo code it derives from). ``arguments_from_config``
maps the supported subset and raises ``CheckpointError`` naming the field for
everything else, so a checkpoint is never loaded into the wrong computation.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from diffuspeech.errors import DiffuSpeechError


class CheckpointError(DiffuSpeechError):
    """A pretrained checkpoint is missing, unsupported or does not match its configuration."""


@dataclass(frozen=True)
class LLaDAPreset:
    """Architecture of one backbone size, in LLaDA's ``config.json`` names.

    ``embedding_size`` is the number of text rows of the pretrained embedding
    and output matrices, or None for presets without a pretrained vocabulary.
    """

    d_model: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    mlp_hidden_size: int
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-5
    embedding_size: int | None = None
    mask_token_id: int | None = None
    pad_token_id: int | None = None
    eos_token_id: int | None = None

    def backbone_arguments(self) -> dict[str, Any]:
        """Return the ``LLaDABackbone`` constructor arguments of this preset."""
        values = asdict(self)
        return {name: values[name] for name in ARCHITECTURE_FIELDS}


ARCHITECTURE_FIELDS = ("d_model", "n_layers", "n_heads", "n_kv_heads", "mlp_hidden_size", "rope_theta", "rms_norm_eps")
"""Fields that define the computation; a checkpoint's config.json must agree with a preset on each."""

PRESETS: dict[str, LLaDAPreset] = {
    # The tiny recipe's backbone: CPU tests and demos.
    "tiny": LLaDAPreset(d_model=128, n_layers=4, n_heads=4, n_kv_heads=4, mlp_hidden_size=384),
    # About 27M parameters without embeddings.
    "small": LLaDAPreset(d_model=512, n_layers=8, n_heads=8, n_kv_heads=8, mlp_hidden_size=1536),
    # About 206M parameters without embeddings.
    "base": LLaDAPreset(d_model=1024, n_layers=16, n_heads=16, n_kv_heads=16, mlp_hidden_size=2816),
    # About 0.97B parameters without embeddings, with grouped-query attention (8 query heads per key head).
    "1b": LLaDAPreset(d_model=2048, n_layers=22, n_heads=32, n_kv_heads=4, mlp_hidden_size=5632, rope_theta=500000.0),
    # LLaDA-8B's config.json (GSAI-ML/LLaDA-8B-Base and -Instruct): 8,015,581,184 parameters.
    # pad_token_id is the eos id there as well.
    "8b": LLaDAPreset(
        d_model=4096,
        n_layers=32,
        n_heads=32,
        n_kv_heads=32,
        mlp_hidden_size=12288,
        rope_theta=500000.0,
        rms_norm_eps=1e-5,
        embedding_size=126464,
        mask_token_id=126336,
        pad_token_id=126081,
        eos_token_id=126081,
    ),
}


def get_preset(name: str) -> LLaDAPreset:
    """Return the preset ``name``; raise ``ValueError`` listing the choices otherwise."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown LLaDA preset {name!r}; choices: {', '.join(PRESETS)}") from None


# Fields of LLaDA's config.json whose value must be the one LLaDABackbone computes with.
# The value None means "absent or null is fine".
REQUIRED_VALUES: dict[str, tuple[Any, ...]] = {
    "block_type": ("llama",),
    "activation_type": ("silu", "swiglu", None),
    "layer_norm_type": ("rms", None),
    "include_bias": (False, None),
    "include_qkv_bias": (False, None),
    "bias_for_layer_norm": (False, None),
    "layer_norm_with_affine": (True, None),
    "weight_tying": (False, None),
    "alibi": (False, None),
    "rope": (True, None),
    "attention_layer_norm": (False, None),
    "scale_logits": (False, None),
    "input_emb_norm": (False, None),
    "block_group_size": (1, None),
    "multi_query_attention": (False, None),
}


def read_config(path: Path) -> dict[str, Any]:
    """Read ``config.json``; raise ``CheckpointError`` naming the file when it is missing or invalid."""
    import json

    if not path.is_file():
        raise CheckpointError(
            f"{path} not found: point backbone.args.path at a local LLaDA folder in the Hugging Face "
            "layout (config.json, model.safetensors.index.json and the safetensors shards)"
        )
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"cannot read {path}: {error}") from error
    if not isinstance(config, dict):
        raise CheckpointError(f"{path} must contain a JSON object, got {type(config).__name__}")
    return config


def preset_from_config(config: dict[str, Any], source: Path) -> LLaDAPreset:
    """Map a LLaDA ``config.json`` (already parsed from ``source``) to a preset.

    ``mlp_hidden_size`` falls back to ``mlp_ratio * d_model`` and
    ``n_kv_heads`` to ``n_heads``, as in LLaDA's configuration class. The
    text rows are ``embedding_size``, or ``vocab_size`` when that is absent.
    Raises ``CheckpointError`` naming the field for unsupported settings.
    """
    for field, allowed in REQUIRED_VALUES.items():
        value = config.get(field)
        if value not in allowed and not (value is None and None in allowed):
            choices = ", ".join(repr(choice) for choice in allowed if choice is not None)
            raise CheckpointError(
                f"{source}: field {field!r} is {value!r}, but the llada backbone supports only {choices}"
            )

    def integer(field: str, value: Any) -> int:
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise CheckpointError(f"{source}: field {field!r} must be a positive integer, got {value!r}")
        return value

    d_model = integer("d_model", config.get("d_model"))
    n_heads = integer("n_heads", config.get("n_heads"))
    mlp = config.get("mlp_hidden_size")
    if mlp is None:
        mlp = integer("mlp_ratio", config.get("mlp_ratio")) * d_model
    kv_heads = config.get("n_kv_heads")
    rows = config.get("embedding_size") or config.get("vocab_size")
    return LLaDAPreset(
        d_model=d_model,
        n_layers=integer("n_layers", config.get("n_layers")),
        n_heads=n_heads,
        n_kv_heads=n_heads if kv_heads is None else integer("n_kv_heads", kv_heads),
        mlp_hidden_size=integer("mlp_hidden_size", mlp),
        rope_theta=float(config.get("rope_theta", 10000.0)),
        rms_norm_eps=float(config.get("rms_norm_eps", 1e-5)),
        embedding_size=integer("embedding_size", rows),
        mask_token_id=config.get("mask_token_id"),
        pad_token_id=config.get("pad_token_id"),
        eos_token_id=config.get("eos_token_id"),
    )


def check_preset_matches(preset_name: str, preset: LLaDAPreset, config: LLaDAPreset, source: Path) -> None:
    """Raise ``CheckpointError`` naming the first architecture field where ``config`` differs from the preset."""
    for field in (*ARCHITECTURE_FIELDS, "embedding_size"):
        expected = getattr(preset, field)
        found = getattr(config, field)
        if expected is not None and expected != found:
            raise CheckpointError(
                f"{source}: field {field!r} is {found!r} but preset {preset_name!r} has {expected!r}; "
                "remove backbone.args.preset to take the architecture from config.json, or use a matching checkpoint"
            )
