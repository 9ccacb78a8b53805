"""Tests for the HuBERT k-means speech tokenizer on a tiny local HuBERT folder and flite speech."""

from __future__ import annotations

import json
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio
from safetensors.torch import load_file, save_file
from transformers import HubertModel

from diffuspeech.data.tokenizer_fitting import fit_tokenizer_file
from diffuspeech.errors import RecipeError
from diffuspeech.recipe import build_component, load_recipe
from diffuspeech_plugins.checkpoint_error import CheckpointError
from diffuspeech_plugins.speech_tokenizers.hubert_kmeans import HubertKMeansTokenizer

NUM_UNITS = 8
HIDDEN = 32
SENTENCES = [("awb", "what is seven plus five"), ("rms", "nine plus three is twelve"), ("slt", "four")]


def speak(text: str, voice: str, path: Path) -> torch.Tensor:
    """Synthesize ``text`` with flite and return a float32 (samples,) waveform at 16 kHz."""
    subprocess.run(["flite", "-voice", voice, "-t", text, "-o", str(path)], check=True)
    samples, rate = sf.read(path, dtype="float32")
    waveform = torch.from_numpy(samples)
    return torchaudio.functional.resample(waveform, rate, 16000) if rate != 16000 else waveform


@pytest.fixture(scope="module")
def waveforms(tmp_path_factory: pytest.TempPathFactory) -> list[torch.Tensor]:
    """Three flite utterances at 16 kHz, the last one a single short word."""
    directory = tmp_path_factory.mktemp("flite")
    return [speak(text, voice, directory / f"{index}.wav") for index, (voice, text) in enumerate(SENTENCES)]


@pytest.fixture(scope="module")
def centroids_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Eight random centroids of size 32 in a safetensors file."""
    path = tmp_path_factory.mktemp("centroids") / "centroids.safetensors"
    save_file({"centroids": torch.randn(NUM_UNITS, HIDDEN, generator=torch.Generator().manual_seed(1))}, str(path))
    return path


def reference_features(folder: Path, waveform: torch.Tensor, layer: int) -> torch.Tensor:
    """Run the full, untruncated HubertModel directly and return hidden_states[layer] (frames, hidden)."""
    model = HubertModel.from_pretrained(str(folder), local_files_only=True).eval()
    with torch.no_grad():
        output = model(waveform.unsqueeze(0), output_hidden_states=True)
    return output.hidden_states[layer][0].double()


def nearest_by_hand(vectors: torch.Tensor, centroids: torch.Tensor) -> list[int]:
    """Return the index of the nearest centroid of each vector, by explicit loops over squared distances."""
    units = []
    for vector in vectors.tolist():
        distances = [
            sum((a - b) ** 2 for a, b in zip(vector, centroid, strict=True)) for centroid in centroids.tolist()
        ]
        units.append(int(np.argmin(distances)))
    return units


def copy_folder(source: Path, target: Path) -> Path:
    """Copy a model folder so a test can damage its copy."""
    shutil.copytree(source, target)
    return target


@pytest.mark.parametrize("layer", [1, 2])
def test_units_match_nearest_centroid(
    tiny_hubert: Path, centroids_file: Path, waveforms: list[torch.Tensor], layer: int
) -> None:
    """Units equal the nearest centroid, by hand, of the transformers model's layer features."""
    tokenizer = HubertKMeansTokenizer(str(tiny_hubert), str(centroids_file), layer=layer, num_units=NUM_UNITS)
    centroids = load_file(str(centroids_file))["centroids"].double()

    for waveform in waveforms:
        expected = nearest_by_hand(reference_features(tiny_hubert, waveform, layer), centroids)
        units = tokenizer.encode(waveform)
        assert units.dtype == torch.int64
        assert units.tolist() == expected
        assert len(set(expected)) > 1


def test_downsample_averages_frame_pairs(
    tiny_hubert: Path, centroids_file: Path, waveforms: list[torch.Tensor]
) -> None:
    """downsample=2 halves the frame rate and quantizes the mean of each pair of frames."""
    tokenizer = HubertKMeansTokenizer(str(tiny_hubert), str(centroids_file), layer=2, num_units=NUM_UNITS, downsample=2)
    features = reference_features(tiny_hubert, waveforms[0], 2)
    pairs = features.shape[0] // 2
    averaged = features[: pairs * 2].reshape(pairs, 2, HIDDEN).mean(dim=1)

    assert tokenizer.frame_rate == 25.0
    assert tokenizer.encode(waveforms[0]).tolist() == nearest_by_hand(
        averaged, load_file(str(centroids_file))["centroids"]
    )


def test_frame_rate_and_count(tiny_hubert: Path, centroids_file: Path, waveforms: list[torch.Tensor]) -> None:
    """HuBERT-base strides give 50 Hz and (n - 400) // 320 + 1 units; short input gives none."""
    tokenizer = HubertKMeansTokenizer(str(tiny_hubert), str(centroids_file), layer=1, num_units=NUM_UNITS)

    assert tokenizer.sample_rate == 16000
    assert tokenizer.frame_rate == 50.0
    assert tokenizer.receptive_field == 400
    for waveform in waveforms:
        assert tokenizer.encode(waveform).numel() == (waveform.numel() - 400) // 320 + 1
    assert tokenizer.encode(torch.zeros(399)).numel() == 0
    assert tokenizer.encode(torch.zeros(400)).numel() == 1


def test_npy_centroids_read_without_pickle(tiny_hubert: Path, centroids_file: Path, tmp_path: Path) -> None:
    """A .npy centroid file gives the same units; a pickled file is rejected with its name."""
    array = load_file(str(centroids_file))["centroids"].numpy()
    np.save(tmp_path / "centroids.npy", array)
    waveform = torch.randn(8000, generator=torch.Generator().manual_seed(3)) * 0.1
    from_npy = HubertKMeansTokenizer(str(tiny_hubert), str(tmp_path / "centroids.npy"), layer=1, num_units=NUM_UNITS)
    from_safetensors = HubertKMeansTokenizer(str(tiny_hubert), str(centroids_file), layer=1, num_units=NUM_UNITS)
    assert torch.equal(from_npy.encode(waveform), from_safetensors.encode(waveform))

    np.save(tmp_path / "pickled.npy", np.array([{"centers": array}], dtype=object), allow_pickle=True)
    with pytest.raises(CheckpointError, match=r"pickled\.npy: cannot read it as a \.npy array without pickle"):
        HubertKMeansTokenizer(str(tiny_hubert), str(tmp_path / "pickled.npy"), num_units=NUM_UNITS, layer=1)
    (tmp_path / "km.bin").write_bytes(pickle.dumps(array))
    with pytest.raises(CheckpointError, match=r"km\.bin: unsupported format"):
        HubertKMeansTokenizer(str(tiny_hubert), str(tmp_path / "km.bin"), num_units=NUM_UNITS, layer=1)


def test_wrong_unit_count_names_file_and_tensor(tiny_hubert: Path, centroids_file: Path) -> None:
    """Centroids for 8 units with num_units=10 fail naming the file, the tensor and both shapes."""
    with pytest.raises(
        CheckpointError, match=r"centroids\.safetensors: tensor 'centroids' has shape \(8, 32\), expected \(10, 32\)"
    ):
        HubertKMeansTokenizer(str(tiny_hubert), str(centroids_file), layer=1, num_units=10)


def test_missing_centroid_tensor_named(tiny_hubert: Path, tmp_path: Path) -> None:
    """A safetensors file without the centroids tensor fails naming the file and the tensor."""
    path = tmp_path / "other.safetensors"
    save_file({"weights": torch.zeros(NUM_UNITS, HIDDEN)}, str(path))

    with pytest.raises(CheckpointError, match=r"other\.safetensors: tensor 'centroids' is missing"):
        HubertKMeansTokenizer(str(tiny_hubert), str(path), layer=1, num_units=NUM_UNITS)


def test_missing_centroid_file_suggests_fit(tiny_hubert: Path, tmp_path: Path) -> None:
    """A centroid path that does not exist names the file and the fit-tokenizer command."""
    with pytest.raises(CheckpointError, match=r"absent\.npy not found; run `diffuspeech fit-tokenizer RECIPE`"):
        HubertKMeansTokenizer(str(tiny_hubert), str(tmp_path / "absent.npy"), layer=1, num_units=NUM_UNITS)


def test_missing_hubert_tensor_named(tiny_hubert: Path, tmp_path: Path) -> None:
    """A weight file without one tensor fails naming the file and that tensor."""
    folder = copy_folder(tiny_hubert, tmp_path / "hubert")
    weights = load_file(str(folder / "model.safetensors"))
    del weights["encoder.layers.1.attention.k_proj.weight"]
    save_file(weights, str(folder / "model.safetensors"), metadata={"format": "pt"})

    with pytest.raises(
        CheckpointError, match=r"model\.safetensors: tensor 'encoder\.layers\.1\.attention\.k_proj\.weight' is missing"
    ):
        HubertKMeansTokenizer(str(folder), num_units=NUM_UNITS, layer=1)


def test_wrong_hubert_shape_named(tiny_hubert: Path, tmp_path: Path) -> None:
    """A tensor of the wrong shape fails naming the file, the tensor and both shapes."""
    folder = copy_folder(tiny_hubert, tmp_path / "hubert")
    weights = load_file(str(folder / "model.safetensors"))
    weights["encoder.layers.0.feed_forward.intermediate_dense.weight"] = torch.zeros(5, 5)
    save_file(weights, str(folder / "model.safetensors"), metadata={"format": "pt"})

    with pytest.raises(
        CheckpointError,
        match=r"tensor 'encoder\.layers\.0\.feed_forward\.intermediate_dense\.weight' "
        r"has shape \(5, 5\), expected \(64, 32\)",
    ):
        HubertKMeansTokenizer(str(folder), num_units=NUM_UNITS, layer=1)


def test_missing_files_and_bad_layer_named(tiny_hubert: Path, tmp_path: Path) -> None:
    """A folder without weights, and a layer past the model's depth, fail with the file named."""
    folder = copy_folder(tiny_hubert, tmp_path / "hubert")
    with pytest.raises(
        CheckpointError, match=r"config\.json.* layer 3 is out of range|layer 3 is out of range for .*config\.json"
    ):
        HubertKMeansTokenizer(str(folder), num_units=NUM_UNITS, layer=3)

    (folder / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"HuBERT file .*model\.safetensors not found"):
        HubertKMeansTokenizer(str(folder), num_units=NUM_UNITS, layer=1)


def test_preprocessor_config_read(tiny_hubert: Path, tmp_path: Path) -> None:
    """preprocessor_config.json sets the sample rate and per-utterance normalization."""
    folder = copy_folder(tiny_hubert, tmp_path / "hubert")
    (folder / "preprocessor_config.json").write_text(json.dumps({"sampling_rate": 8000, "do_normalize": True}))

    tokenizer = HubertKMeansTokenizer(str(folder), num_units=NUM_UNITS, layer=1)
    waveform = torch.randn(4000, generator=torch.Generator().manual_seed(5))

    assert tokenizer.sample_rate == 8000
    assert tokenizer.frame_rate == 25.0
    torch.testing.assert_close(
        tokenizer.features(waveform * 0.01 + 0.2), tokenizer.features(waveform), atol=1e-4, rtol=1e-4
    )


def test_fit_save_and_state_round_trip(tiny_hubert: Path, waveforms: list[torch.Tensor], tmp_path: Path) -> None:
    """fit learns centroids, save_centroids writes a file that loads back, and the state checks the weights."""
    tokenizer = HubertKMeansTokenizer(str(tiny_hubert), layer=2, num_units=NUM_UNITS)
    assert not tokenizer.is_fitted()
    tokenizer.fit(waveforms)
    assert tokenizer.is_fitted()
    tokenizer.save_centroids(tmp_path / "fitted.safetensors")

    reloaded = HubertKMeansTokenizer(
        str(tiny_hubert), str(tmp_path / "fitted.safetensors"), layer=2, num_units=NUM_UNITS
    )
    assert torch.equal(reloaded.encode(waveforms[1]), tokenizer.encode(waveforms[1]))
    restored = HubertKMeansTokenizer(str(tiny_hubert), layer=2, num_units=NUM_UNITS)
    restored.load_state_dict(tokenizer.state_dict())
    assert torch.equal(restored.encode(waveforms[0]), tokenizer.encode(waveforms[0]))

    state = tokenizer.state_dict()
    state["model_digest"] = "0" * 64
    with pytest.raises(CheckpointError, match=r"model\.safetensors differs from the HuBERT weights"):
        restored.load_state_dict(state)
    with pytest.raises(ValueError, match="fewer than num_units=8"):
        HubertKMeansTokenizer(str(tiny_hubert), layer=1, num_units=NUM_UNITS).fit([torch.zeros(1000)])


def test_recipe_error_names_key(tiny_hubert: Path, tmp_path: Path) -> None:
    """Through a recipe, a bad checkpoint surfaces as a RecipeError naming the component key and the file."""
    recipe = load_recipe(
        "variants/codec_hubert_kmeans_unit_hifigan",
        [
            f"speech_tokenizer.args.model_path={tiny_hubert}",
            f"speech_tokenizer.args.centroids_path={tmp_path / 'none.safetensors'}",
            "speech_tokenizer.args.layer=1",
            "speech_tokenizer.args.num_units=8",
        ],
    )
    with pytest.raises(
        RecipeError,
        match=r"speech_tokenizer: invalid arguments for HubertKMeansTokenizer: .*none\.safetensors not found",
    ):
        build_component(recipe, "speech_tokenizer", "speech_tokenizer")


@pytest.mark.slow
def test_fit_tokenizer_command(tiny_hubert: Path, flite_corpus: Path, tmp_path: Path) -> None:
    """`diffuspeech fit-tokenizer` fits on the corpus, writes centroids that load, and rejects overwriting."""
    from conftest import SMALL_CORPUS

    target = tmp_path / "units" / "centroids.safetensors"
    arguments = [
        "fit-tokenizer",
        "variants/codec_hubert_kmeans_unit_hifigan",
        f"data_dir={flite_corpus}",
        *SMALL_CORPUS,
        f"speech_tokenizer.args.model_path={tiny_hubert}",
        f"speech_tokenizer.args.centroids_path={target}",
        "speech_tokenizer.args.layer=2",
        "speech_tokenizer.args.num_units=16",
        "training.speech_tokenizer_fit_files=6",
    ]
    command = [sys.executable, "-m", "diffuspeech.cli", *arguments]

    first = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert first.returncode == 0, first.stderr[-2000:]
    assert f"centroids written to {target}" in first.stdout
    assert load_file(str(target))["centroids"].shape == (16, HIDDEN)
    assert HubertKMeansTokenizer(str(tiny_hubert), str(target), layer=2, num_units=16).is_fitted()

    recipe = load_recipe(arguments[1], arguments[2:])
    with pytest.raises(RecipeError, match=r"centroids\.safetensors already exists; pass --force to overwrite it"):
        fit_tokenizer_file(recipe, None, force=False)
