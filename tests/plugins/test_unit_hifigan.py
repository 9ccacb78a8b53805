"""Tests for the unit HiFi-GAN vocoder on tiny SpeechBrain model folders written locally."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from speechbrain.lobes.models.HifiGAN import UnitHifiganGenerator

from diffuspeech.errors import RecipeError
from diffuspeech.recipe import build_component, load_recipe
from diffuspeech_plugins.checkpoint_error import CheckpointError
from diffuspeech_plugins.vocoders.unit_hifigan import UnitHifiganVocoder, read_generator_hyperparams

NUM_UNITS = 12
FACTORS = [4, 4, 4, 5]  # 320 samples per unit: 50 Hz at 16 kHz


@pytest.fixture
def folder(tmp_path: Path, unit_hifigan_writer: Callable[..., Path]) -> Path:
    """A randomly initialized 12-unit, 50 Hz SpeechBrain unit HiFi-GAN folder."""
    return unit_hifigan_writer(tmp_path / "hifigan", NUM_UNITS, FACTORS)


def reference_generator(folder: Path) -> UnitHifiganGenerator:
    """Build SpeechBrain's generator directly from known arguments and load generator.ckpt into it."""
    generator = UnitHifiganGenerator(
        in_channels=16,
        out_channels=1,
        resblock_type="1",
        resblock_dilation_sizes=[[1, 3, 5]],
        resblock_kernel_sizes=[3],
        upsample_kernel_sizes=[factor * 2 for factor in FACTORS],
        upsample_initial_channel=32,
        upsample_factors=FACTORS,
        vocab_size=NUM_UNITS + 1,
        embedding_dim=16,
    )
    generator.load_state_dict(torch.load(folder / "generator.ckpt", weights_only=True))
    return generator.eval()


def test_decode_matches_speechbrain_generator(folder: Path) -> None:
    """decode equals SpeechBrain's generator inference on the same weights with units shifted by one."""
    vocoder = UnitHifiganVocoder(str(folder), num_units=NUM_UNITS, frame_rate=50.0)
    units = torch.tensor([0, 3, 3, 11, 7, 7, 7, 1, 0, 5])

    waveform = vocoder.decode(units)
    with torch.no_grad():
        expected = reference_generator(folder).inference((units + 1).view(1, -1, 1)).reshape(-1)

    assert waveform.dtype == torch.float32
    assert waveform.shape == (units.numel() * 320,)
    # An odd kernel-minus-stride difference adds one sample per odd upsampling layer; decode cuts it off.
    assert expected.numel() - waveform.numel() in (0, 1)
    torch.testing.assert_close(waveform, expected[: waveform.numel()], atol=1e-5, rtol=1e-4)
    assert float(waveform.abs().max()) <= 1.0
    assert float(waveform.std()) > 0


def test_short_and_empty_units(folder: Path) -> None:
    """Fewer than 4 units still give frames * hop samples, and no units give an empty waveform."""
    vocoder = UnitHifiganVocoder(str(folder), num_units=NUM_UNITS, frame_rate=50.0)

    assert vocoder.decode(torch.tensor([5])).shape == (320,)
    assert vocoder.decode(torch.tensor([5, 6, 7])).shape == (960,)
    assert vocoder.decode(torch.zeros(0, dtype=torch.int64)).shape == (0,)


def test_invalid_units_rejected(folder: Path) -> None:
    """Units outside [0, num_units), float units and 2-D input fail with the value named."""
    vocoder = UnitHifiganVocoder(str(folder), num_units=NUM_UNITS, frame_rate=50.0)

    with pytest.raises(ValueError, match=r"units must be in \[0, 12\), got values from 0 to 12"):
        vocoder.decode(torch.tensor([0, 12, 3, 4]))
    with pytest.raises(ValueError, match="integer tensor"):
        vocoder.decode(torch.zeros(5))
    with pytest.raises(ValueError, match=r"shape \(frames,\)"):
        vocoder.decode(torch.zeros(1, 5, dtype=torch.int64))


def test_legacy_weight_norm_names_load(folder: Path) -> None:
    """A checkpoint with weight_g/weight_v names, as older PyTorch saved, decodes the same."""
    vocoder = UnitHifiganVocoder(str(folder), num_units=NUM_UNITS, frame_rate=50.0)
    state = torch.load(folder / "generator.ckpt", weights_only=True)
    legacy = {
        name.replace(".parametrizations.weight.original0", ".weight_g").replace(
            ".parametrizations.weight.original1", ".weight_v"
        ): tensor
        for name, tensor in state.items()
    }
    assert any(name.endswith(".weight_g") for name in legacy)
    torch.save(legacy, folder / "generator.ckpt")

    units = torch.tensor([1, 2, 3, 4, 5, 6])
    torch.testing.assert_close(
        UnitHifiganVocoder(str(folder), num_units=NUM_UNITS, frame_rate=50.0).decode(units), vocoder.decode(units)
    )


def test_hyperparams_references_resolved(folder: Path) -> None:
    """!ref <key> arguments resolve to top-level values, and the top-level sample rate is kept."""
    hyperparams = read_generator_hyperparams(folder / "hyperparams.yaml")

    assert hyperparams["vocab_size"] == NUM_UNITS + 1
    assert hyperparams["embedding_dim"] == 16
    assert hyperparams["upsample_factors"] == FACTORS
    assert hyperparams["_sample_rate"] == 16000


def test_unit_count_mismatch_named(folder: Path) -> None:
    """A generator for 12 units with num_units=20 fails naming hyperparams.yaml and vocab_size."""
    with pytest.raises(
        CheckpointError, match=r"hyperparams\.yaml: generator\.vocab_size is 13, expected num_units \+ 1 = 21"
    ):
        UnitHifiganVocoder(str(folder), num_units=20, frame_rate=50.0)


def test_frame_rate_mismatch_named(folder: Path) -> None:
    """A 50 Hz generator with frame_rate 25 fails naming the upsampling factors."""
    with pytest.raises(CheckpointError, match=r"upsample_factors \[4, 4, 4, 5\] give 320 samples per unit"):
        UnitHifiganVocoder(str(folder), num_units=NUM_UNITS, frame_rate=25.0)


def test_missing_tensor_named(folder: Path) -> None:
    """A checkpoint without one tensor fails naming generator.ckpt and the tensor."""
    state = torch.load(folder / "generator.ckpt", weights_only=True)
    del state["unit_embedding.weight"]
    torch.save(state, folder / "generator.ckpt")

    with pytest.raises(CheckpointError, match=r"generator\.ckpt: tensor 'unit_embedding\.weight' is missing"):
        UnitHifiganVocoder(str(folder), num_units=NUM_UNITS, frame_rate=50.0)


def test_wrong_shape_named(folder: Path) -> None:
    """A tensor of the wrong shape fails naming the file, the tensor and both shapes."""
    state = torch.load(folder / "generator.ckpt", weights_only=True)
    state["unit_embedding.weight"] = torch.zeros(7, 16)
    torch.save(state, folder / "generator.ckpt")

    with pytest.raises(
        CheckpointError,
        match=r"generator\.ckpt: tensor 'unit_embedding\.weight' has shape \(7, 16\), expected \(13, 16\)",
    ):
        UnitHifiganVocoder(str(folder), num_units=NUM_UNITS, frame_rate=50.0)


def test_unexpected_tensor_named(folder: Path) -> None:
    """An extra tensor fails naming it."""
    state = torch.load(folder / "generator.ckpt", weights_only=True)
    state["speaker_embedding.weight"] = torch.zeros(2, 2)
    torch.save(state, folder / "generator.ckpt")

    with pytest.raises(CheckpointError, match=r"unexpected tensor 'speaker_embedding\.weight'"):
        UnitHifiganVocoder(str(folder), num_units=NUM_UNITS, frame_rate=50.0)


def test_missing_and_unsafe_files_named(folder: Path, tmp_path: Path) -> None:
    """Missing files, a pickled object and a YAML tag that would run code fail with the file named."""
    torch.save({"weights": [1, 2, 3]}, tmp_path / "list.ckpt")
    shutil.copy(tmp_path / "list.ckpt", folder / "generator.ckpt")
    with pytest.raises(CheckpointError, match=r"generator\.ckpt must contain a state dict"):
        UnitHifiganVocoder(str(folder), num_units=NUM_UNITS, frame_rate=50.0)

    (folder / "generator.ckpt").unlink()
    with pytest.raises(CheckpointError, match=r"generator\.ckpt not found"):
        UnitHifiganVocoder(str(folder), num_units=NUM_UNITS, frame_rate=50.0)

    text = (folder / "hyperparams.yaml").read_text()
    (folder / "hyperparams.yaml").write_text(
        text.replace("vocab_size: !ref <vocab_size>", "vocab_size: !apply:os.getpid []")
    )
    with pytest.raises(CheckpointError, match=r"generator\.vocab_size uses !apply:os\.getpid"):
        UnitHifiganVocoder(str(folder), num_units=NUM_UNITS, frame_rate=50.0)

    with pytest.raises(CheckpointError, match=r"absent/hyperparams\.yaml not found"):
        UnitHifiganVocoder(str(tmp_path / "absent"), num_units=NUM_UNITS, frame_rate=50.0)


def test_tokenizer_record_checked(folder: Path) -> None:
    """attach rejects a tokenizer whose fingerprint differs from speech_tokenizer.json."""
    from diffuspeech_plugins.speech_tokenizers.mel_kmeans import MelKMeansTokenizer

    tokenizer = MelKMeansTokenizer(num_units=NUM_UNITS, stack=2, max_fit_frames=100)
    tokenizer.fit([torch.randn(16000, generator=torch.Generator().manual_seed(0)) * 0.1])
    (folder / "speech_tokenizer.json").write_text(json.dumps({"class": "MelKMeansTokenizer", "fingerprint": "0" * 16}))
    vocoder = UnitHifiganVocoder(str(folder), num_units=NUM_UNITS, frame_rate=50.0)

    with pytest.raises(
        ValueError, match=r"speech_tokenizer\.json: the generator was trained on units of MelKMeansTokenizer"
    ):
        vocoder.attach(tokenizer)
    (folder / "speech_tokenizer.json").unlink()
    UnitHifiganVocoder(str(folder), num_units=NUM_UNITS, frame_rate=50.0).attach(tokenizer)


def test_recipe_error_names_key(folder: Path) -> None:
    """Through a recipe, a unit count mismatch is a RecipeError naming the vocoder key and the file."""
    recipe = load_recipe(
        "variants/codec_mel_kmeans_unit_hifigan",
        [f"vocoder.args.model_path={folder}", "speech_tokenizer.args.num_units=16", "vocoder.args.frame_rate=50.0"],
    )
    with pytest.raises(
        RecipeError, match=r"vocoder: invalid arguments for UnitHifiganVocoder: .*generator\.vocab_size is 13"
    ):
        build_component(recipe, "vocoder", "vocoder")
