"""Vocoder that renders units with SpeechBrain's unit HiFi-GAN generator, loaded from a local folder."""

from __future__ import annotations

import json
import logging
import math
import pickle
import zipfile
from pathlib import Path
from typing import Any, ClassVar

import torch
import yaml

from diffuspeech.interfaces.speech_tokenizer import SpeechTokenizer
from diffuspeech.interfaces.vocoder import Vocoder
from diffuspeech_plugins.checkpoint_error import CheckpointError

log = logging.getLogger(__name__)

GENERATOR_CLASS = "speechbrain.lobes.models.HifiGAN.UnitHifiganGenerator"
HYPERPARAMS_FILE = "hyperparams.yaml"
GENERATOR_FILE = "generator.ckpt"
TOKENIZER_FILE = "speech_tokenizer.json"
# SpeechBrain's generator pads ``conv_pre`` by reflection, which needs more frames than half its kernel of 7.
MIN_FRAMES = 4


class UnitHifiganVocoder(Vocoder):
    """Turns units into audio with ``speechbrain.lobes.models.HifiGAN.UnitHifiganGenerator`` (speechbrain 1.1).

    ``model_path`` is a local folder in the layout of SpeechBrain's published
    unit HiFi-GAN models:

    - ``hyperparams.yaml`` with a top-level ``generator`` node tagged
      ``!new:speechbrain.lobes.models.HifiGAN.UnitHifiganGenerator``. Its
      arguments may be literals or ``!ref <key>`` references to top-level
      keys. Nothing else in the file is run or imported, and other tags in
      the generator node are rejected.
    - ``generator.ckpt``: the generator's ``state_dict`` saved by ``torch.save``,
      read with ``weights_only=True``. Weight-norm tensors may use either the
      ``weight_g``/``weight_v`` names of older PyTorch or the
      ``parametrizations.weight.original0/1`` names of current PyTorch.

    As SpeechBrain's ``UnitHIFIGAN`` interface does, unit ``u`` is fed to the
    embedding as ``u + 1``, because row 0 is padding. So the generator's
    ``vocab_size`` must be ``num_units + 1``. One unit becomes
    ``hop = prod(upsample_factors)`` samples, so ``frame_rate`` must equal
    ``sample_rate / hop``. When the folder has ``speech_tokenizer.json``, as
    ``diffuspeech train-vocoder`` writes it, ``attach`` checks that the
    tokenizer's fingerprint is the one the generator was trained on.

    Single-codebook, single-speaker generators without a duration predictor
    are supported. A missing file, missing or extra tensor, wrong tensor shape
    or unit count raises :class:`CheckpointError`, naming the file and the
    tensor or key.
    """

    description: ClassVar[str] = "SpeechBrain unit HiFi-GAN generator from a local folder (train-vocoder trains one)"

    def __init__(self, model_path: str, num_units: int, frame_rate: float, sample_rate: int = 16000) -> None:
        if num_units < 1:
            raise ValueError(f"num_units must be a positive integer, got {num_units}")
        if frame_rate <= 0:
            raise ValueError(f"frame_rate must be positive (units per second), got {frame_rate}")
        if sample_rate < 1:
            raise ValueError(f"sample_rate must be a positive integer in Hz, got {sample_rate}")
        self.model_path = Path(model_path)
        self.num_units = num_units
        self.frame_rate = frame_rate
        self.sample_rate = sample_rate

        self.hyperparams = read_generator_hyperparams(self.model_path / HYPERPARAMS_FILE)
        self._check_hyperparams()
        self.hop_length = math.prod(int(factor) for factor in self.hyperparams["upsample_factors"])
        self._generator = load_generator(self.model_path, self.hyperparams)
        self._tokenizer_record = _read_tokenizer_record(self.model_path / TOKENIZER_FILE)
        log.info(
            "unit HiFi-GAN %s: %d units, %d samples per unit, %.2fM parameters",
            self.model_path,
            num_units,
            self.hop_length,
            sum(parameter.numel() for parameter in self._generator.parameters()) / 1e6,
        )

    def _check_hyperparams(self) -> None:
        file = self.model_path / HYPERPARAMS_FILE
        vocab_size = self.hyperparams.get("vocab_size", 100)
        if vocab_size != self.num_units + 1:
            raise CheckpointError(
                f"{file}: generator.vocab_size is {vocab_size}, expected num_units + 1 = {self.num_units + 1} "
                "(row 0 is padding); the generator was trained for another unit count"
            )
        for key, supported in (
            ("duration_predictor", False),
            ("multi_speaker", False),
            ("skip_token_embedding", False),
        ):
            if bool(self.hyperparams.get(key, False)) != supported:
                raise CheckpointError(
                    f"{file}: generator.{key}={self.hyperparams[key]} is not supported; use {supported}"
                )
        factors = self.hyperparams.get("upsample_factors")
        if not isinstance(factors, list) or not factors or not all(isinstance(f, int) and f > 0 for f in factors):
            raise CheckpointError(
                f"{file}: generator.upsample_factors must be a list of positive integers, got {factors}"
            )
        hop = math.prod(factors)
        if not math.isclose(self.sample_rate / hop, self.frame_rate, rel_tol=1e-6):
            raise CheckpointError(
                f"{file}: generator.upsample_factors {factors} give {hop} samples per unit, so "
                f"{self.sample_rate / hop} units per second at {self.sample_rate} Hz, but frame_rate is "
                f"{self.frame_rate}; use a generator trained for this speech tokenizer"
            )
        top_sample_rate = self.hyperparams.get("_sample_rate")
        if top_sample_rate is not None and int(top_sample_rate) != self.sample_rate:
            raise CheckpointError(
                f"{file}: sample_rate is {top_sample_rate} Hz, but vocoder.args.sample_rate is {self.sample_rate}"
            )

    def attach(self, speech_tokenizer: SpeechTokenizer) -> None:
        """Check that the generator was trained on ``speech_tokenizer``'s units, when the folder records them.

        Raises ``ValueError`` when the tokenizer's unit count, frame rate or sample
        rate differ, or its fingerprint differs from ``speech_tokenizer.json``.
        """
        from diffuspeech.data.features import tokenizer_fingerprint

        name = type(speech_tokenizer).__name__
        for key, ours, theirs in (
            ("num_units", self.num_units, speech_tokenizer.num_units),
            ("sample_rate", self.sample_rate, speech_tokenizer.sample_rate),
        ):
            if ours != theirs:
                raise ValueError(f"{key} differs: vocoder has {ours}, {name} has {theirs}; set both to the same value")
        if not math.isclose(speech_tokenizer.frame_rate, self.frame_rate, rel_tol=1e-6):
            raise ValueError(
                f"frame_rate differs: vocoder has {self.frame_rate}, {name} has {speech_tokenizer.frame_rate}"
            )
        if self._tokenizer_record is None:
            log.info("%s has no %s, so the tokenizer it was trained on is not checked", self.model_path, TOKENIZER_FILE)
            return
        expected = self._tokenizer_record.get("fingerprint")
        found = tokenizer_fingerprint(speech_tokenizer)
        if expected != found:
            raise ValueError(
                f"{self.model_path / TOKENIZER_FILE}: the generator was trained on units of "
                f"{self._tokenizer_record.get('class')} with fingerprint {expected}, but the recipe's {name} "
                f"has fingerprint {found}; its centroids differ, so retrain with diffuspeech train-vocoder"
            )

    def decode(self, units: torch.Tensor) -> torch.Tensor:
        """Return the float32 waveform (frames * hop,) of int64 units (frames,), with values in [-1, 1].

        Fewer than 4 units are padded by repeating the last unit and the output is
        cut back, because the generator's first convolution pads by reflection.
        """
        if units.dim() != 1:
            raise ValueError(f"units must have shape (frames,), got shape {tuple(units.shape)}")
        if units.dtype.is_floating_point or units.dtype.is_complex or units.dtype == torch.bool:
            raise ValueError(f"units must be an integer tensor, got dtype {units.dtype}")
        frames = units.numel()
        if frames == 0:
            return torch.zeros(0)
        if int(units.min()) < 0 or int(units.max()) >= self.num_units:
            raise ValueError(
                f"units must be in [0, {self.num_units}), got values from {int(units.min())} to {int(units.max())}"
            )
        padded = units.long()
        if frames < MIN_FRAMES:
            padded = torch.cat([padded, padded[-1:].expand(MIN_FRAMES - frames)])

        # (frames,) -> (batch 1, frames, codebooks 1), shifted by one for the padding row.
        with torch.inference_mode():
            waveform = self._generator.inference((padded + 1).view(1, -1, 1))
        return waveform.reshape(-1)[: frames * self.hop_length].float().contiguous()


def _unit_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    """Keep a HyperPyYAML tag (``!new:``, ``!ref`` ...) as data instead of running it."""
    if isinstance(node, yaml.MappingNode):
        value: Any = loader.construct_mapping(node, deep=True)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_scalar(node)
    return {"__tag__": suffix, "__value__": value}


class _HyperparamsLoader(yaml.SafeLoader):
    """A safe YAML loader that records HyperPyYAML tags without importing or calling anything."""


_HyperparamsLoader.add_multi_constructor("!", _unit_tag)


def read_generator_hyperparams(path: Path) -> dict[str, Any]:
    """Return the generator's arguments from a SpeechBrain ``hyperparams.yaml``, with references resolved.

    The key ``_sample_rate`` carries the file's top-level ``sample_rate`` when it
    has one. Raises :class:`CheckpointError` naming the file and the key.
    """
    if not path.is_file():
        raise CheckpointError(
            f"unit HiFi-GAN file {path} not found; model_path must be a SpeechBrain model folder with "
            f"{HYPERPARAMS_FILE} and {GENERATOR_FILE} (diffuspeech train-vocoder writes one)"
        )
    try:
        tree = yaml.load(path.read_text(encoding="utf-8"), Loader=_HyperparamsLoader)
    except (OSError, yaml.YAMLError) as error:
        raise CheckpointError(f"{path} cannot be read as YAML: {error}") from error
    if not isinstance(tree, dict) or "generator" not in tree:
        raise CheckpointError(f"{path}: key 'generator' is missing; expected generator: !new:{GENERATOR_CLASS}")
    node = tree["generator"]
    if not isinstance(node, dict) or node.get("__tag__") != f"new:{GENERATOR_CLASS}":
        raise CheckpointError(f"{path}: key 'generator' must be tagged !new:{GENERATOR_CLASS}")
    arguments = node["__value__"]
    if not isinstance(arguments, dict):
        raise CheckpointError(f"{path}: generator arguments must be a mapping")

    resolved = {str(key): _resolve(value, tree, path, f"generator.{key}") for key, value in arguments.items()}
    sample_rate = tree.get("sample_rate")
    if isinstance(sample_rate, int):
        resolved["_sample_rate"] = sample_rate
    return resolved


def _resolve(value: Any, tree: dict[str, Any], path: Path, key: str, depth: int = 0) -> Any:
    """Replace ``!ref <name>`` by the top-level value ``name``, recursively, and reject any other tag."""
    if depth > 16:
        raise CheckpointError(f"{path}: {key} has references nested more than 16 deep")
    if isinstance(value, list):
        return [_resolve(item, tree, path, key, depth + 1) for item in value]
    if not isinstance(value, dict) or "__tag__" not in value:
        return value
    target = str(value["__value__"]).strip()
    if value["__tag__"] != "ref" or not (target.startswith("<") and target.endswith(">")):
        raise CheckpointError(
            f"{path}: {key} uses !{value['__tag__']} {target}; only literals and !ref <top-level key> are read"
        )
    name = target[1:-1]
    if name not in tree:
        raise CheckpointError(f"{path}: {key} refers to <{name}>, which is not a top-level key")
    return _resolve(tree[name], tree, path, key, depth + 1)


def load_generator(model_path: Path, hyperparams: dict[str, Any]) -> Any:
    """Build ``UnitHifiganGenerator`` from ``hyperparams`` and load ``generator.ckpt``, checking every tensor."""
    from speechbrain.lobes.models.HifiGAN import UnitHifiganGenerator

    file = model_path / HYPERPARAMS_FILE
    arguments = {key: value for key, value in hyperparams.items() if not key.startswith("_")}
    try:
        generator = UnitHifiganGenerator(**arguments)
    except (TypeError, ValueError, RuntimeError, IndexError) as error:
        raise CheckpointError(f"{file}: the generator arguments are invalid: {error!r}") from error

    checkpoint = model_path / GENERATOR_FILE
    state = read_generator_state(checkpoint)
    if not any(name.endswith((".original0", ".weight_g")) for name in state):
        # A generator saved after remove_weight_norm() stores plain weights.
        generator.remove_weight_norm()

    expected = generator.state_dict()
    found = {_current_weight_norm_name(name): tensor for name, tensor in state.items()}
    for name, tensor in expected.items():
        if name not in found:
            raise CheckpointError(f"{checkpoint}: tensor {name!r} is missing; {file} describes another generator")
        if tuple(found[name].shape) != tuple(tensor.shape):
            raise CheckpointError(
                f"{checkpoint}: tensor {name!r} has shape {tuple(found[name].shape)}, expected "
                f"{tuple(tensor.shape)} from {file}"
            )
    unexpected = sorted(set(found) - set(expected))
    if unexpected:
        raise CheckpointError(f"{checkpoint}: unexpected tensor {unexpected[0]!r}; {file} describes another generator")

    # The weight-norm hook of torch.nn.utils.parametrizations renames legacy weight_g/weight_v itself.
    generator.load_state_dict(state)
    if any(name.endswith(".original0") for name in expected):
        generator.remove_weight_norm()
    return generator.eval()


def read_generator_state(checkpoint: Path) -> dict[str, torch.Tensor]:
    """Read a ``torch.save``d state dict with ``weights_only=True``; errors name the file."""
    if not checkpoint.is_file():
        raise CheckpointError(f"unit HiFi-GAN file {checkpoint} not found; the model folder needs {GENERATOR_FILE}")
    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, pickle.UnpicklingError, zipfile.BadZipFile, EOFError) as error:
        raise CheckpointError(f"{checkpoint} cannot be read as a PyTorch state dict: {error}") from error
    if not isinstance(state, dict) or not all(isinstance(t, torch.Tensor) for t in state.values()):
        raise CheckpointError(f"{checkpoint} must contain a state dict (tensor name -> tensor)")
    return {str(name): tensor for name, tensor in state.items()}


def _current_weight_norm_name(name: str) -> str:
    """Map the legacy ``X.weight_g``/``X.weight_v`` names to ``X.parametrizations.weight.original0/1``."""
    for legacy, current in (
        (".weight_g", ".parametrizations.weight.original0"),
        (".weight_v", ".parametrizations.weight.original1"),
    ):
        if name.endswith(legacy):
            return name[: -len(legacy)] + current
    return name


def _read_tokenizer_record(path: Path) -> dict[str, Any] | None:
    """Return the speech tokenizer record that train-vocoder writes, or None when the folder has none."""
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{path} cannot be read as JSON: {error}") from error
    if not isinstance(record, dict):
        raise CheckpointError(f"{path} must contain a JSON object")
    return record
