"""Speech tokenizer that assigns HuBERT layer features to k-means centroids (the SpiritLM pipeline)."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from sklearn.cluster import MiniBatchKMeans

from diffuspeech.interfaces.speech_tokenizer import SpeechTokenizer
from diffuspeech_plugins.checkpoint_error import CheckpointError
from diffuspeech_plugins.speech_tokenizers.mel_kmeans import _reservoir_add

log = logging.getLogger(__name__)

CENTROIDS_TENSOR = "centroids"
CENTROID_SUFFIXES = (".safetensors", ".npy")
# A published HuBERT checkpoint may omit the mask embedding, which is used only when pretraining masks frames.
UNUSED_TENSORS = frozenset({"masked_spec_embed"})


class HubertKMeansTokenizer(SpeechTokenizer):
    """Quantizes the features of one HuBERT layer to the nearest of ``num_units`` k-means centroids.

    ``model_path`` is a local Hugging Face HuBERT folder (``config.json`` and
    ``model.safetensors``, as ``HubertModel.save_pretrained`` writes it). It is
    loaded with ``transformers.HubertModel`` offline, and nothing is fetched from
    a hub. ``layer`` counts transformer layers from 1, so ``layer=6`` is the
    output of the sixth layer and ``layer=0`` the input of the first.

    The sample rate is ``preprocessor_config.json``'s ``sampling_rate`` when the
    folder has one, else 16,000 Hz. When that file sets ``do_normalize``, each
    waveform is scaled to zero mean and unit variance first. HuBERT gives one
    feature vector per ``hop = prod(conv_stride)`` samples (320 for HuBERT-base,
    50 Hz at 16 kHz), and a waveform of ``n`` samples gives
    ``(n - receptive_field) // hop + 1`` vectors (0 when ``n`` is shorter than
    the 400-sample receptive field of HuBERT-base). ``downsample`` averages that
    many consecutive vectors before quantization, dropping a trailing group, so
    ``frame_rate = sample_rate / (hop * downsample)``. ``downsample=2`` turns
    HuBERT-base's 50 Hz into 25 Hz.

    Centroids are a (num_units, hidden_size) float tensor, read from
    ``centroids_path``: a safetensors file with the tensor ``centroids`` or a
    ``.npy`` array (read without pickle). Pickled scikit-learn or joblib k-means
    files are rejected. Convert them with ``numpy.save(path, km.cluster_centers_)``.
    With ``centroids_path`` null the tokenizer is unfitted until ``fit`` runs on
    a corpus, as ``diffuspeech train`` and ``diffuspeech fit-tokenizer`` do.
    Units are nearest centroids by squared Euclidean distance in float64.

    A missing file, a missing or extra tensor, a tensor of the wrong shape and a
    centroid count other than ``num_units`` raise :class:`CheckpointError`,
    naming the file and the tensor.
    """

    description: ClassVar[str] = "k-means units over one HuBERT layer, from a local Hugging Face folder (SpiritLM)"

    def __init__(
        self,
        model_path: str,
        centroids_path: str | None = None,
        layer: int = 6,
        num_units: int = 500,
        downsample: int = 1,
        max_fit_frames: int = 200000,
        seed: int = 0,
        iterations: int = 20,
    ) -> None:
        for name, value in (
            ("num_units", num_units),
            ("downsample", downsample),
            ("max_fit_frames", max_fit_frames),
            ("iterations", iterations),
        ):
            if value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value}")
        if max_fit_frames < num_units:
            raise ValueError(f"max_fit_frames ({max_fit_frames}) must be at least num_units ({num_units})")

        self.model_path = Path(model_path)
        self.centroids_path = Path(centroids_path) if centroids_path else None
        self.num_units = num_units
        self.downsample = downsample
        self.max_fit_frames = max_fit_frames
        self.seed = seed
        self.iterations = iterations

        self._model = load_hubert(self.model_path, layer)
        config = self._model.config
        self.layer = layer
        self.hidden_size = int(config.hidden_size)
        self.hop_length = math.prod(int(stride) for stride in config.conv_stride)
        self.receptive_field = _receptive_field(list(config.conv_kernel), list(config.conv_stride))
        self.sample_rate, self.normalize = _preprocessor_settings(self.model_path)
        self.frame_rate = self.sample_rate / (self.hop_length * downsample)
        self._model_digest = _file_digest(self.model_path / "model.safetensors")

        self._centroids: torch.Tensor | None = None
        if self.centroids_path is not None:
            self._centroids = self._read_centroids(self.centroids_path)
        log.info(
            "HuBERT %s: layer %d of %d, %d Hz input, %.1f units per second, %s",
            self.model_path,
            layer,
            config.num_hidden_layers,
            self.sample_rate,
            self.frame_rate,
            f"centroids from {self.centroids_path}" if self.centroids_path else "no centroids yet",
        )

    def is_fitted(self) -> bool:
        """Return True once centroids are read from ``centroids_path``, fitted or loaded."""
        return self._centroids is not None

    def features(self, waveform: torch.Tensor) -> torch.Tensor:
        """Return the (frames, hidden_size) float32 features of a (samples,) waveform, after ``downsample``."""
        if waveform.dim() != 1:
            raise ValueError(f"waveform must be a mono tensor of shape (samples,), got shape {tuple(waveform.shape)}")
        if waveform.numel() < self.receptive_field:
            return torch.zeros(0, self.hidden_size)
        inputs = waveform.float()
        if self.normalize:
            inputs = (inputs - inputs.mean()) / torch.sqrt(inputs.var(correction=0) + 1e-7)

        with torch.inference_mode():
            output = self._model(inputs.unsqueeze(0), output_hidden_states=True)
        hidden = output.hidden_states[self.layer][0].float()

        frames = hidden.shape[0] // self.downsample
        # (frames * downsample, hidden) -> (frames, downsample, hidden), averaged over the middle axis.
        return hidden[: frames * self.downsample].reshape(frames, self.downsample, self.hidden_size).mean(dim=1)

    def encode(self, waveform: torch.Tensor) -> torch.Tensor:
        """Return the nearest-centroid unit (frames,) int64 of each feature vector of a (samples,) waveform."""
        if self._centroids is None:
            raise RuntimeError(
                f"{type(self).__name__} has no centroids; set centroids_path, or run fit(waveforms) "
                "(diffuspeech fit-tokenizer RECIPE writes a centroid file)"
            )
        vectors = self.features(waveform).double()
        if vectors.shape[0] == 0:
            return torch.zeros(0, dtype=torch.int64)
        centroids = self._centroids.double()
        # ||x - c||^2 = ||x||^2 - 2 x.c + ||c||^2, and ||x||^2 does not change the argmin.
        distances = (centroids * centroids).sum(dim=1) - 2.0 * vectors @ centroids.T
        return distances.argmin(dim=1)

    def fit(self, waveforms: Iterable[torch.Tensor]) -> None:
        """Learn the centroids with scikit-learn ``MiniBatchKMeans`` on up to ``max_fit_frames`` feature vectors.

        Vectors are drawn uniformly from the corpus by reservoir sampling. Raises
        ``ValueError`` when the corpus gives fewer vectors than ``num_units``.
        """
        started = time.perf_counter()
        generator = torch.Generator().manual_seed(self.seed)
        sample = torch.empty(self.max_fit_frames, self.hidden_size)
        seen = 0
        utterances = 0
        for waveform in waveforms:
            seen = _reservoir_add(sample, seen, self.features(waveform), generator)
            utterances += 1

        sample_size = min(seen, self.max_fit_frames)
        if sample_size < self.num_units:
            raise ValueError(
                f"fit received {utterances} waveforms with {sample_size} HuBERT frames, fewer than "
                f"num_units={self.num_units}; pass more audio or lower num_units"
            )
        features_done = time.perf_counter()

        kmeans = MiniBatchKMeans(
            n_clusters=self.num_units, batch_size=4096, max_iter=self.iterations, n_init=1, random_state=self.seed
        )
        kmeans.fit(sample[:sample_size].numpy())
        self._centroids = torch.from_numpy(np.asarray(kmeans.cluster_centers_, dtype=np.float32))
        log.info(
            "fitted %d units on %d of %d HuBERT frames from %d waveforms (features %.1f s, k-means %.1f s)",
            self.num_units,
            sample_size,
            seen,
            utterances,
            features_done - started,
            time.perf_counter() - features_done,
        )

    def save_centroids(self, path: Path) -> None:
        """Write the centroids to ``path`` (.safetensors with tensor ``centroids``, or .npy)."""
        if self._centroids is None:
            raise RuntimeError(f"{type(self).__name__} has no centroids to save; run fit(waveforms) first")
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix == ".npy":
            np.save(path, self._centroids.numpy())
        elif path.suffix == ".safetensors":
            save_file({CENTROIDS_TENSOR: self._centroids.contiguous()}, str(path))
        else:
            raise ValueError(f"centroid file {path} must end in {' or '.join(CENTROID_SUFFIXES)}")

    def state_dict(self) -> dict[str, Any]:
        """Return the centroids and a SHA-256 digest of ``model.safetensors``.

        The digest puts the HuBERT weights into the unit cache's fingerprint, and
        ``load_state_dict`` checks it. An unfitted tokenizer returns an empty dict.
        """
        if self._centroids is None:
            return {}
        return {CENTROIDS_TENSOR: self._centroids.clone(), "model_digest": self._model_digest}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned, checking the centroid shape and the HuBERT weights' digest."""
        if not state:
            return
        missing = {CENTROIDS_TENSOR, "model_digest"} - set(state)
        if missing:
            raise ValueError(f"{type(self).__name__} state is missing keys {sorted(missing)}")
        if state["model_digest"] != self._model_digest:
            raise CheckpointError(
                f"{self.model_path / 'model.safetensors'} differs from the HuBERT weights these units were made "
                "with (SHA-256 mismatch); point speech_tokenizer.args.model_path at the original folder"
            )
        centroids = torch.as_tensor(state[CENTROIDS_TENSOR], dtype=torch.float32)
        self._check_centroid_shape(centroids, "the saved state")
        self._centroids = centroids.clone()

    def _read_centroids(self, path: Path) -> torch.Tensor:
        if not path.is_file():
            raise CheckpointError(
                f"centroid file {path} not found; run `diffuspeech fit-tokenizer RECIPE` to fit and write it, "
                "or set speech_tokenizer.args.centroids_path=null to fit centroids during training"
            )
        if path.suffix == ".npy":
            try:
                array = np.load(path, allow_pickle=False)
            except (OSError, ValueError) as error:
                raise CheckpointError(
                    f"centroid file {path}: cannot read it as a .npy array without pickle ({error})"
                ) from error
            centroids = torch.from_numpy(np.asarray(array, dtype=np.float32))
        elif path.suffix == ".safetensors":
            try:
                tensors = load_file(str(path))
            except (OSError, SafetensorError) as error:
                raise CheckpointError(f"centroid file {path}: cannot read it as safetensors ({error})") from error
            if CENTROIDS_TENSOR not in tensors:
                raise CheckpointError(
                    f"centroid file {path}: tensor {CENTROIDS_TENSOR!r} is missing (found {sorted(tensors)})"
                )
            centroids = tensors[CENTROIDS_TENSOR].float()
        else:
            raise CheckpointError(
                f"centroid file {path}: unsupported format; use {' or '.join(CENTROID_SUFFIXES)} "
                "(pickled k-means files are not read)"
            )
        self._check_centroid_shape(centroids, f"centroid file {path}")
        return centroids

    def _check_centroid_shape(self, centroids: torch.Tensor, source: str) -> None:
        expected = (self.num_units, self.hidden_size)
        if tuple(centroids.shape) != expected:
            raise CheckpointError(
                f"{source}: tensor {CENTROIDS_TENSOR!r} has shape {tuple(centroids.shape)}, expected {expected} "
                f"(num_units, hidden_size of {self.model_path}); set speech_tokenizer.args.num_units to the file's "
                "unit count or refit the centroids"
            )
        if not bool(torch.isfinite(centroids).all()):
            raise CheckpointError(f"{source}: tensor {CENTROIDS_TENSOR!r} contains NaN or infinite values")


def load_hubert(model_path: Path, layer: int) -> Any:
    """Load a ``transformers.HubertModel`` in eval mode from a local folder, checking every tensor.

    Only the first ``layer`` transformer layers are kept when the model normalizes
    before the layers (HuBERT-base), so that the later layers cost nothing. Raises
    :class:`CheckpointError` naming the file and the tensor.
    """
    try:
        from transformers import HubertConfig, HubertModel
        from transformers.utils import logging as transformers_logging
    except ImportError as error:
        raise ImportError("hubert_kmeans needs the transformers package: pip install transformers") from error

    config_file = model_path / "config.json"
    weights_file = model_path / "model.safetensors"
    for path in (config_file, weights_file):
        if not path.is_file():
            raise CheckpointError(
                f"HuBERT file {path} not found; model_path must be a local Hugging Face HuBERT folder "
                "with config.json and model.safetensors"
            )
    try:
        config = HubertConfig.from_json_file(str(config_file))
    except (OSError, ValueError, json.JSONDecodeError) as error:
        raise CheckpointError(f"HuBERT config {config_file} cannot be read: {error}") from error
    if not 0 <= layer <= config.num_hidden_layers:
        raise CheckpointError(
            f"layer {layer} is out of range for {config_file}, which has num_hidden_layers="
            f"{config.num_hidden_layers}; choose a layer from 0 to {config.num_hidden_layers}"
        )

    # transformers' weight loading reports by progress bar and log lines; the checks below replace them.
    transformers_logging.disable_progress_bar()
    verbosity = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()
    try:
        loaded: Any = HubertModel.from_pretrained(
            str(model_path),
            config=config,
            local_files_only=True,
            use_safetensors=True,
            ignore_mismatched_sizes=True,
            output_loading_info=True,
        )
    except (OSError, ValueError, RuntimeError, SafetensorError) as error:
        raise CheckpointError(f"HuBERT weights {weights_file} cannot be loaded: {error}") from error
    finally:
        transformers_logging.set_verbosity(verbosity)
    model, info = loaded

    for name, found, expected in sorted(info["mismatched_keys"]):
        raise CheckpointError(
            f"HuBERT weights {weights_file}: tensor {name!r} has shape {tuple(found)}, expected {tuple(expected)} "
            f"from {config_file}; the config does not describe these weights"
        )
    missing = sorted(set(info["missing_keys"]) - UNUSED_TENSORS)
    if missing:
        raise CheckpointError(
            f"HuBERT weights {weights_file}: tensor {missing[0]!r} is missing"
            + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
            + "; the file is incomplete or is not a HubertModel checkpoint"
        )
    unexpected = sorted(info["unexpected_keys"])
    if unexpected:
        raise CheckpointError(
            f"HuBERT weights {weights_file}: unexpected tensor {unexpected[0]!r}"
            + (f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else "")
            + "; save the bare HubertModel, without a task head or a 'hubert.' prefix"
        )

    if not config.do_stable_layer_norm:
        model.encoder.layers = model.encoder.layers[:layer]
    return model.eval()


def _receptive_field(kernels: list[int], strides: list[int]) -> int:
    """Return the receptive field, in samples, of one output frame of a stack of strided 1-D convolutions."""
    field = 1
    for kernel, stride in zip(reversed(kernels), reversed(strides), strict=True):
        field = (field - 1) * stride + kernel
    return field


def _preprocessor_settings(model_path: Path) -> tuple[int, bool]:
    """Return (sample rate, zero-mean unit-variance normalization) from ``preprocessor_config.json``."""
    path = model_path / "preprocessor_config.json"
    if not path.is_file():
        return 16000, False
    try:
        settings = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise CheckpointError(f"HuBERT preprocessor config {path} cannot be read: {error}") from error
    return int(settings.get("sampling_rate", 16000)), bool(settings.get("do_normalize", False))


def _file_digest(path: Path) -> str:
    """Return the SHA-256 hex digest of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
