"""Plots of a run: training curves from MLflow and spectrograms of generated speech."""

from __future__ import annotations

import logging
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt
import torch
from mlflow.tracking import MlflowClient

log = logging.getLogger(__name__)

CURVES = (
    ("train/loss", "training loss"),
    ("valid/loss", "validation loss"),
    ("valid/s2t_accuracy", "validation speech-to-text QA accuracy"),
    ("valid/asr_exact_match", "validation ASR exact match"),
)


def plot_training_curves(tracking_uri: str, run_id: str, path: Path) -> Path:
    """Plot loss and validation accuracy against steps from the MLflow run into ``path`` (PNG)."""
    client = MlflowClient(tracking_uri=tracking_uri)
    figure, axes = plt.subplots(1, 2, figsize=(11, 4))
    for key, label in CURVES:
        history = sorted(client.get_metric_history(run_id, key), key=lambda point: point.step)
        if not history:
            continue
        axis = axes[0] if key.endswith("loss") else axes[1]
        axis.plot(
            [p.step for p in history], [p.value for p in history], label=label, marker="." if "valid" in key else None
        )
    axes[0].set(xlabel="step", ylabel="loss", title="loss", yscale="log")
    axes[1].set(xlabel="step", ylabel="fraction", title="validation samples", ylim=(0, 1.02))
    for axis in axes:
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def plot_spectrogram(waveform: torch.Tensor, sample_rate: int, path: Path, title: str) -> Path:
    """Plot the log-power spectrogram of ``waveform`` (samples,) into ``path`` (PNG)."""
    n_fft = 512
    spectrum = torch.stft(
        waveform.float(), n_fft=n_fft, hop_length=n_fft // 4, window=torch.hann_window(n_fft), return_complex=True
    )
    power_db = 10 * torch.log10(spectrum.abs().pow(2).clamp_min(1e-10))
    figure, axis = plt.subplots(figsize=(8, 3))
    duration = waveform.numel() / sample_rate
    axis.imshow(
        power_db.numpy(),
        origin="lower",
        aspect="auto",
        extent=(0.0, duration, 0.0, sample_rate / 2000),
        vmin=float(power_db.max()) - 80,
        cmap="magma",
    )
    axis.set(xlabel="time (s)", ylabel="frequency (kHz)", title=title)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
