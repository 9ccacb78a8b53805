"""Fixtures shared by the core's unit tests."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from diffuspeech.layouts import Budgets
from diffuspeech.vocabulary import Vocabulary


@pytest.fixture
def vocabulary() -> Vocabulary:
    """A small vocabulary: text ids 0-11, special tokens 12-22 (mask 21, pad 22), units 23-30."""
    return Vocabulary(text_size=12, num_units=8)


@pytest.fixture
def budgets() -> Budgets:
    """Short target budgets, closing markers included."""
    return Budgets(transcript=4, thought=4, answer=3, reply_units=5)


# Pretrained parts in their published layouts, made small and written locally, and a small real corpus.


SMALL_CORPUS = [
    "corpus.voices=[awb]",
    "corpus.unseen_voice=rms",
    "corpus.synthesizer.args.voices=[awb,rms]",
    "corpus.arithmetic.max_operand=1",
    "corpus.arithmetic.test_fraction=0.3",
    "corpus.arithmetic.valid_fraction=0.1",
]
"""Overrides of the tiny recipe that ``flite_corpus`` is made with."""


@pytest.fixture(scope="session")
def flite_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A flite arithmetic corpus (operands 0 and 1, voice awb; about 50 clips), made once per session."""
    from diffuspeech.data.corpus import prepare_corpus
    from diffuspeech.recipe import build_component, load_recipe

    data_dir = tmp_path_factory.mktemp("flite_corpus")
    recipe = load_recipe("tiny", [f"data_dir={data_dir}", *SMALL_CORPUS])
    return prepare_corpus(recipe, build_component(recipe, "corpus.synthesizer", "speech_synthesizer"))


@pytest.fixture(scope="session")
def tiny_hubert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialized 2-layer HuBERT (hidden size 32, HuBERT-base strides) saved by ``save_pretrained``."""
    from transformers import HubertConfig, HubertModel

    folder = tmp_path_factory.mktemp("tiny_hubert")
    torch.manual_seed(0)
    config = HubertConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        conv_dim=(16,) * 7,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4,
    )
    HubertModel(config).save_pretrained(folder)
    return folder


def write_unit_hifigan(folder: Path, num_units: int, upsample_factors: list[int], seed: int = 0) -> Path:
    """Write a randomly initialized SpeechBrain unit HiFi-GAN folder (hyperparams.yaml, generator.ckpt).

    The YAML follows SpeechBrain's published models: top-level values referenced
    with ``!ref`` from a ``!new:`` generator node, plus modules and a pretrainer.
    """
    from speechbrain.lobes.models.HifiGAN import UnitHifiganGenerator

    kernels = [factor * 2 for factor in upsample_factors]
    arguments = {
        "in_channels": 16,
        "out_channels": 1,
        "resblock_type": "1",
        "resblock_dilation_sizes": [[1, 3, 5]],
        "resblock_kernel_sizes": [3],
        "upsample_kernel_sizes": kernels,
        "upsample_initial_channel": 32,
        "upsample_factors": upsample_factors,
        "vocab_size": num_units + 1,
        "embedding_dim": 16,
    }
    torch.manual_seed(seed)
    generator = UnitHifiganGenerator(**arguments)
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(generator.state_dict(), folder / "generator.ckpt")
    lines = ["sample_rate: 16000", f"vocab_size: {num_units + 1}", "embedding_dim: 16"]
    lines.append("generator: !new:speechbrain.lobes.models.HifiGAN.UnitHifiganGenerator")
    for key, value in arguments.items():
        lines.append(f"  {key}: !ref <{key}>" if key in ("vocab_size", "embedding_dim") else f"  {key}: {value!r}")
    lines += [
        "modules:",
        "  generator: !ref <generator>",
        "pretrainer: !new:speechbrain.utils.parameter_transfer.Pretrainer",
        "  loadables:",
        "    generator: !ref <generator>",
    ]
    (folder / "hyperparams.yaml").write_text("\n".join(lines).replace("'", '"') + "\n", encoding="utf-8")
    return folder


@pytest.fixture
def unit_hifigan_writer() -> Callable[..., Path]:
    """Return :func:`write_unit_hifigan`, for tests in any folder."""
    return write_unit_hifigan


SMALL_MEL_UNITS = ["speech_tokenizer.args.num_units=32"]
"""Tokenizer overrides that the small vocoder and the codec smoke tests share, so their fitted units match."""


@pytest.fixture(scope="session")
def small_vocoder_run(tmp_path_factory: pytest.TempPathFactory, flite_corpus: Path) -> Path:
    """Run diffuspeech train-vocoder for 3 batches on ``flite_corpus`` and return its output folder.

    The last batch trains against the discriminator, so both GAN paths run.
    """
    from diffuspeech.recipe import load_recipe
    from diffuspeech.training.vocoder import train_vocoder

    output_dir = tmp_path_factory.mktemp("vocoder_run")
    overrides = [
        f"data_dir={flite_corpus}",
        f"output_dir={output_dir}",
        *SMALL_CORPUS,
        *SMALL_MEL_UNITS,
        "vocoder_training.max_steps=3",
        "vocoder_training.batch_size=1",
        "vocoder_training.segment_units=4",
        "vocoder_training.adversarial_start_step=2",
        "vocoder_training.log_every_n_steps=1",
        "vocoder_training.accelerator=cpu",
    ]
    # mlflow.set_tracking_uri (mlflow 3.17) exports MLFLOW_TRACKING_URI, which later runs in this process would use.
    saved = os.environ.get("MLFLOW_TRACKING_URI")
    try:
        train_vocoder(load_recipe("vocoder/tiny", overrides))
    finally:
        if saved is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = saved
    return output_dir
