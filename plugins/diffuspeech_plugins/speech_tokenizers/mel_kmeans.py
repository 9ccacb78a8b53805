"""Speech tokenizer that assigns stacked log-mel frames to k-means centroids."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from sklearn.cluster import MiniBatchKMeans
from speechbrain.lobes.features import Fbank
from speechbrain.processing.features import Filterbank

from diffuspeech.interfaces.speech_tokenizer import SpeechTokenizer

log = logging.getLogger(__name__)

NORMALIZATIONS = ("none", "utterance")


@dataclass(frozen=True)
class MelSpec:
    """Parameters of speechbrain's ``Fbank`` log-mel features, enough to invert them.

    Values checked against speechbrain 1.1 (``speechbrain.lobes.features.Fbank``
    with ``deltas=False, context=False``):

    1. ``torch.stft`` with ``n_fft``, ``hop_length`` and ``win_length`` (all in
       samples), a Hamming window, ``center=True`` with zero padding, no
       normalization. A waveform of ``n`` samples gives ``n // hop_length + 1``
       frames.
    2. Power spectrum ``|STFT|**2`` (speechbrain's ``spectral_magnitude`` with
       ``power=1``), shape (frames, n_fft // 2 + 1).
    3. Triangular mel filters on the HTK mel scale between ``f_min`` and
       ``f_max`` Hz, unnormalized, as returned by :meth:`filterbank`.
    4. ``log_mel = db_multiplier * log10(max(mel_power, amin))`` with a reference
       of 1.0, then every value below ``max(log_mel) - top_db`` is raised to
       that floor, where the max is taken over the whole utterance.
    """

    sample_rate: int
    n_fft: int
    win_length: int
    hop_length: int
    f_min: float
    f_max: float
    n_mels: int
    window: str = "hamming"
    power: float = 2.0
    db_multiplier: float = 10.0
    amin: float = 1e-10
    top_db: float = 80.0

    @property
    def n_stft(self) -> int:
        """Number of one-sided STFT bins, ``n_fft // 2 + 1``."""
        return self.n_fft // 2 + 1

    def filterbank(self) -> torch.Tensor:
        """Build the mel filter matrix (n_stft, n_mels) that maps a power spectrum to mel power.

        The matrix comes from speechbrain's own ``Filterbank`` applied to an identity
        spectrogram, so it matches the features bit for bit.
        """
        filterbank = Filterbank(
            n_mels=self.n_mels,
            log_mel=False,
            f_min=self.f_min,
            f_max=self.f_max,
            n_fft=self.n_fft,
            sample_rate=self.sample_rate,
        )
        with torch.no_grad():
            matrix: torch.Tensor = filterbank(torch.eye(self.n_stft).unsqueeze(0))[0]
        return matrix

    def window_tensor(self) -> torch.Tensor:
        """Build the analysis window (win_length,) that ``Fbank`` uses."""
        return torch.hamming_window(self.win_length)


class MelKMeansTokenizer(SpeechTokenizer):
    """Quantizes stacked 10 ms log-mel frames to the nearest of ``num_units`` k-means centroids.

    Features are speechbrain ``Fbank`` log-mels in dB (see :class:`MelSpec`), one
    frame per 10 ms. ``stack`` consecutive frames are concatenated into one vector
    of ``stack * n_mels`` values, so ``frame_rate`` is ``sample_rate / (hop_length
    * stack)`` units per second (50 Hz at 16 kHz with ``stack=2``). A waveform of
    ``n`` samples yields ``(n // hop_length + 1) // stack`` units, because a trailing
    group of fewer than ``stack`` frames is dropped.

    With ``normalization="utterance"`` each utterance's mean over time is
    subtracted from every mel bin before stacking. ``fit`` stores the corpus mean
    per mel bin in either mode, and :meth:`unit_log_mels` adds it back in
    ``"utterance"`` mode so that a vocoder receives absolute log-mels.

    ``fit`` runs scikit-learn ``MiniBatchKMeans`` for up to ``iterations`` passes on
    at most ``max_fit_frames`` stacked vectors, drawn uniformly from the corpus
    by reservoir sampling so memory stays bounded on large corpora.
    """

    description: ClassVar[str] = "k-means units over stacked speechbrain log-mel frames (fitted on the corpus)"

    def __init__(
        self,
        num_units: int = 1024,
        sample_rate: int = 16000,
        n_mels: int = 80,
        stack: int = 2,
        normalization: str = "none",
        max_fit_frames: int = 200000,
        seed: int = 0,
        iterations: int = 20,
    ) -> None:
        for name, value in (
            ("num_units", num_units),
            ("sample_rate", sample_rate),
            ("n_mels", n_mels),
            ("stack", stack),
            ("max_fit_frames", max_fit_frames),
            ("iterations", iterations),
        ):
            if value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value}")
        if normalization not in NORMALIZATIONS:
            raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
        if max_fit_frames < num_units:
            raise ValueError(
                f"max_fit_frames ({max_fit_frames}) must be at least num_units ({num_units}), "
                "because k-means needs one vector per centroid"
            )

        self.num_units = num_units
        self.sample_rate = sample_rate
        self.n_mels = n_mels
        self.stack = stack
        self.normalization = normalization
        self.max_fit_frames = max_fit_frames
        self.seed = seed
        self.iterations = iterations

        # Fbank takes its window and hop in milliseconds, so its STFT reports the rounded sample counts.
        win_ms, hop_ms = 25.0, 10.0
        self._fbank = Fbank(
            sample_rate=sample_rate,
            n_fft=round(sample_rate * win_ms / 1000),
            n_mels=n_mels,
            f_min=0,
            f_max=sample_rate // 2,
            win_length=win_ms,
            hop_length=hop_ms,
        )
        win_length = int(self._fbank.compute_STFT.win_length)
        hop_length = int(self._fbank.compute_STFT.hop_length)
        self._mel_spec = MelSpec(
            sample_rate=sample_rate,
            n_fft=int(self._fbank.compute_STFT.n_fft),
            win_length=win_length,
            hop_length=hop_length,
            f_min=0.0,
            f_max=float(sample_rate // 2),
            n_mels=n_mels,
        )
        self.frame_rate = sample_rate / (hop_length * stack)

        self._centroids: torch.Tensor | None = None
        self._global_mean = torch.zeros(n_mels)

    @property
    def mel_spec(self) -> MelSpec:
        """Feature parameters that a vocoder needs to turn log-mels back into audio."""
        return self._mel_spec

    @property
    def vector_size(self) -> int:
        """Length of one stacked vector, ``stack * n_mels``."""
        return self.stack * self.n_mels

    def is_fitted(self) -> bool:
        """Return True once ``fit`` or ``load_state_dict`` has set the centroids."""
        return self._centroids is not None

    def log_mels(self, waveform: torch.Tensor) -> torch.Tensor:
        """Compute the ``Fbank`` log-mels (frames, n_mels) in dB of a (samples,) waveform.

        No normalization is applied. An empty waveform gives zero frames.
        """
        if waveform.dim() != 1:
            raise ValueError(f"waveform must be a mono tensor of shape (samples,), got shape {tuple(waveform.shape)}")
        if waveform.numel() == 0:
            return torch.zeros(0, self.n_mels)
        with torch.no_grad():
            features: torch.Tensor = self._fbank(waveform.float().unsqueeze(0))[0]
        return features

    def _stacked_vectors(self, log_mels: torch.Tensor) -> torch.Tensor:
        """Normalize (frames, n_mels) log-mels and stack them into (units, stack * n_mels)."""
        if self.normalization == "utterance" and log_mels.shape[0] > 0:
            log_mels = log_mels - log_mels.mean(dim=0, keepdim=True)
        units = log_mels.shape[0] // self.stack
        return log_mels[: units * self.stack].reshape(units, self.vector_size)

    def fit(self, waveforms: Iterable[torch.Tensor]) -> None:
        """Learn the centroids from (samples,) float waveforms at ``sample_rate``.

        Raises ``ValueError`` when the corpus has fewer stacked vectors than ``num_units``.

        NOTE: ``MiniBatchKMeans`` runs on every core through OpenMP. On a 2-core machine
        shared with other busy processes, 1024 units on 44,000 vectors took 58 s with
        2 threads and 5 s with 1, so wrap ``fit`` in ``threadpoolctl.threadpool_limits(1)``
        when the cores are shared.
        """
        started = time.perf_counter()
        generator = torch.Generator().manual_seed(self.seed)
        sample = torch.empty(self.max_fit_frames, self.vector_size)
        seen = 0
        mel_sum = torch.zeros(self.n_mels, dtype=torch.float64)
        mel_frames = 0
        utterances = 0

        for waveform in waveforms:
            log_mels = self.log_mels(waveform)
            mel_sum += log_mels.sum(dim=0, dtype=torch.float64)
            mel_frames += log_mels.shape[0]
            utterances += 1
            vectors = self._stacked_vectors(log_mels)
            seen = _reservoir_add(sample, seen, vectors, generator)

        sample_size = min(seen, self.max_fit_frames)
        if sample_size < self.num_units:
            raise ValueError(
                f"fit received {utterances} waveforms with {sample_size} stacked frames, fewer than "
                f"num_units={self.num_units}; pass more audio or lower num_units"
            )
        features_done = time.perf_counter()

        kmeans = MiniBatchKMeans(
            n_clusters=self.num_units,
            batch_size=4096,
            max_iter=self.iterations,
            n_init=1,
            random_state=self.seed,
        )
        kmeans.fit(sample[:sample_size].numpy())
        self._centroids = torch.from_numpy(np.asarray(kmeans.cluster_centers_, dtype=np.float32))
        self._global_mean = (mel_sum / max(mel_frames, 1)).float()
        log.info(
            "fitted %d units on %d of %d stacked frames from %d waveforms "
            "(features %.1f s, k-means %.1f s, inertia per vector %.1f)",
            self.num_units,
            sample_size,
            seen,
            utterances,
            features_done - started,
            time.perf_counter() - features_done,
            kmeans.inertia_ / sample_size,
        )

    def _require_centroids(self) -> torch.Tensor:
        if self._centroids is None:
            raise RuntimeError(
                f"{type(self).__name__} has no centroids yet; call fit(waveforms) or load_state_dict first"
            )
        return self._centroids

    def encode(self, waveform: torch.Tensor) -> torch.Tensor:
        """Return the nearest-centroid unit (units,) int64 of each stacked frame of a (samples,) waveform.

        Distances are squared Euclidean, computed in float64. A waveform too short
        for one full stack returns an empty tensor.
        """
        centroids = self._require_centroids().double()
        vectors = self._stacked_vectors(self.log_mels(waveform)).double()
        if vectors.shape[0] == 0:
            return torch.zeros(0, dtype=torch.int64)
        # ||x - c||^2 = ||x||^2 - 2 x.c + ||c||^2, and ||x||^2 does not change the argmin.
        distances = (centroids * centroids).sum(dim=1) - 2.0 * vectors @ centroids.T
        return distances.argmin(dim=1)

    def unit_log_mels(self) -> torch.Tensor:
        """Return each unit's log-mels (num_units, stack, n_mels) in Fbank's dB scale.

        In ``"utterance"`` mode the corpus mean per mel bin is added back.
        """
        centroids = self._require_centroids().reshape(self.num_units, self.stack, self.n_mels)
        if self.normalization == "utterance":
            centroids = centroids + self._global_mean
        return centroids.clone()

    def state_dict(self) -> dict[str, Any]:
        """Return the centroids (num_units, stack * n_mels) and the corpus mean log-mel (n_mels,).

        An unfitted tokenizer has nothing to save and returns an empty dict.
        """
        if self._centroids is None:
            return {}
        return {"centroids": self._centroids.clone(), "global_mean": self._global_mean.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore centroids and corpus mean saved by ``state_dict``, checking their shapes.

        An empty dict, as saved by an unfitted tokenizer, leaves the tokenizer unfitted.
        """
        if not state:
            return
        missing = {"centroids", "global_mean"} - set(state)
        if missing:
            raise ValueError(f"{type(self).__name__} state is missing keys {sorted(missing)}")
        centroids = torch.as_tensor(state["centroids"], dtype=torch.float32)
        global_mean = torch.as_tensor(state["global_mean"], dtype=torch.float32)
        expected = (self.num_units, self.vector_size)
        if tuple(centroids.shape) != expected:
            raise ValueError(
                f"centroids have shape {tuple(centroids.shape)}, expected {expected} "
                f"(num_units, stack * n_mels); build the tokenizer with the settings it was fitted with"
            )
        if tuple(global_mean.shape) != (self.n_mels,):
            raise ValueError(f"global_mean has shape {tuple(global_mean.shape)}, expected ({self.n_mels},) (n_mels)")
        self._centroids = centroids.clone()
        self._global_mean = global_mean.clone()


def _reservoir_add(sample: torch.Tensor, seen: int, vectors: torch.Tensor, generator: torch.Generator) -> int:
    """Add ``vectors`` to the uniform reservoir ``sample`` in place and return the new count seen.

    ``sample`` has room for ``capacity = sample.shape[0]`` rows and already holds a
    uniform draw of ``min(seen, capacity)`` of the ``seen`` rows offered so far.
    """
    capacity = sample.shape[0]
    count = vectors.shape[0]
    direct = max(0, min(count, capacity - seen))
    if direct:
        sample[seen : seen + direct] = vectors[:direct]
    rest = vectors[direct:]
    if rest.shape[0]:
        # Row i of the whole stream replaces a random slot with probability capacity / (i + 1).
        positions = torch.arange(seen + direct, seen + count, dtype=torch.float64)
        slots = (torch.rand(rest.shape[0], generator=generator, dtype=torch.float64) * (positions + 1)).long()
        chosen = torch.nonzero(slots < capacity).squeeze(1)
        if chosen.numel():
            # When two rows draw the same slot, the later one must win, as in the sequential algorithm.
            chosen_slots = slots[chosen].numpy()
            _, last_from_end = np.unique(chosen_slots[::-1], return_index=True)
            keep = chosen.numpy()[len(chosen_slots) - 1 - last_from_end]
            sample[torch.from_numpy(slots.numpy()[keep])] = rest[torch.from_numpy(keep)]
    return seen + count
