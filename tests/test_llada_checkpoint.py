"""Tests for loading LLaDA checkpoints in the published Hugging Face layout.

Each test writes a tiny checkpoint the way GSAI-ML publishes LLaDA-8B:
``config.json`` with LLaDA's field names, safetensors shards whose tensors
are named ``model.transformer.*``, and ``model.safetensors.index.json``. The
loaded backbone is checked against ``reference_logits``, a forward pass
written here directly from ``config.json`` in float64.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import save_file

from diffuspeech.recipe import build_component
from diffuspeech_plugins.backbones.llada_checkpoint import NEW_ROW_NOISE
from diffuspeech_plugins.backbones.llada_presets import CheckpointError
from diffuspeech_plugins.backbones.llada_pretrained import LLaDAPretrainedBackbone

# A config.json with every field of LLaDA-8B's, at a tiny size, with grouped-query attention
# and an embedding larger than the tokenizer's vocabulary (as LLaDA pads its embedding).
TINY_CONFIG: dict[str, Any] = {
    "activation_type": "silu",
    "alibi": False,
    "alibi_bias_max": 8.0,
    "architectures": ["LLaDAModelLM"],
    "attention_dropout": 0.0,
    "attention_layer_norm": False,
    "attention_layer_norm_with_affine": True,
    "auto_map": {
        "AutoConfig": "configuration_llada.LLaDAConfig",
        "AutoModelForCausalLM": "modeling_llada.LLaDAModelLM",
        "AutoModel": "modeling_llada.LLaDAModelLM",
    },
    "bias_for_layer_norm": False,
    "block_group_size": 1,
    "block_type": "llama",
    "d_model": 32,
    "embedding_dropout": 0.0,
    "embedding_size": 64,
    "eos_token_id": 50,
    "flash_attention": False,
    "include_bias": False,
    "include_qkv_bias": False,
    "init_cutoff_factor": None,
    "init_device": "meta",
    "init_fn": "mitchell",
    "init_std": 0.02,
    "input_emb_norm": False,
    "layer_norm_type": "rms",
    "layer_norm_with_affine": True,
    "mask_token_id": 55,
    "max_sequence_length": 4096,
    "mlp_hidden_size": 48,
    "mlp_ratio": 4,
    "model_type": "llada",
    "multi_query_attention": None,
    "n_heads": 4,
    "n_kv_heads": 2,
    "n_layers": 2,
    "pad_token_id": 50,
    "precision": "amp_bf16",
    "residual_dropout": 0.0,
    "rms_norm_eps": 1e-05,
    "rope": True,
    "rope_full_precision": True,
    "rope_theta": 500000.0,
    "scale_logits": False,
    "transformers_version": "4.46.3",
    "use_cache": False,
    "vocab_size": 60,
    "weight_tying": False,
}

VOCAB_SIZE = 64 + 9 + 12
"""The unified vocabulary of the tests: 64 text rows, 9 special tokens, 12 speech units."""


def checkpoint_tensors(config: dict[str, Any], seed: int = 0) -> dict[str, torch.Tensor]:
    """Return random float32 tensors named and shaped as LLaDA's checkpoint for ``config``."""
    generator = torch.Generator().manual_seed(seed)
    d, rows, hidden = config["d_model"], config["embedding_size"], config["mlp_hidden_size"]
    kv = config["n_kv_heads"] * d // config["n_heads"]

    def linear(out_features: int, in_features: int) -> torch.Tensor:
        return torch.randn(out_features, in_features, generator=generator) / math.sqrt(in_features)

    def norm() -> torch.Tensor:
        return 1 + 0.1 * torch.randn(d, generator=generator)

    tensors = {"model.transformer.wte.weight": torch.randn(rows, d, generator=generator)}
    for layer in range(config["n_layers"]):
        prefix = f"model.transformer.blocks.{layer}."
        tensors |= {
            prefix + "attn_norm.weight": norm(),
            prefix + "q_proj.weight": linear(d, d),
            prefix + "k_proj.weight": linear(kv, d),
            prefix + "v_proj.weight": linear(kv, d),
            prefix + "attn_out.weight": linear(d, d),
            prefix + "ff_norm.weight": norm(),
            prefix + "ff_proj.weight": linear(hidden, d),
            prefix + "up_proj.weight": linear(hidden, d),
            prefix + "ff_out.weight": linear(d, hidden),
        }
    tensors["model.transformer.ln_f.weight"] = norm()
    tensors["model.transformer.ff_out.weight"] = linear(rows, d)
    return tensors


def write_checkpoint(
    folder: Path,
    config: dict[str, Any] | None = None,
    tensors: dict[str, torch.Tensor] | None = None,
    dtype: torch.dtype = torch.bfloat16,
) -> dict[str, torch.Tensor]:
    """Write ``config.json``, two safetensors shards and their index into ``folder``; return the tensors."""
    config = TINY_CONFIG if config is None else config
    tensors = checkpoint_tensors(config) if tensors is None else tensors
    stored = {name: tensor.to(dtype).contiguous() for name, tensor in tensors.items()}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")

    names = sorted(stored)
    shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    weight_map = {}
    for shard, shard_names in shards.items():
        save_file({name: stored[name] for name in shard_names}, str(folder / shard), metadata={"format": "pt"})
        weight_map |= dict.fromkeys(shard_names, shard)
    total = sum(tensor.numel() * tensor.element_size() for tensor in stored.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2), encoding="utf-8")
    return {name: tensor.double() for name, tensor in stored.items()}


def reference_logits(config: dict[str, Any], tensors: dict[str, torch.Tensor], tokens: torch.Tensor) -> torch.Tensor:
    """Compute LLaDA's forward pass from ``config.json`` fields and checkpoint tensors, in float64.

    Pre-norm blocks with RMSNorm, rotary embeddings on the two halves of each
    head (LLaDA's rotate_half), bidirectional softmax attention with key
    heads shared by ``n_heads / n_kv_heads`` query heads, SwiGLU, final norm
    and the untied output matrix. ``tokens`` is (n,); returns (n, embedding_size).
    """
    d, heads, kv_heads = config["d_model"], config["n_heads"], config["n_kv_heads"]
    head_dim = d // heads
    eps = config["rms_norm_eps"]

    def weight(name: str) -> torch.Tensor:
        return tensors["model.transformer." + name]

    def rms_norm(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        return x / torch.sqrt((x * x).mean(dim=-1, keepdim=True) + eps) * scale

    n = tokens.shape[0]
    half = head_dim // 2
    frequencies = config["rope_theta"] ** (-torch.arange(half, dtype=torch.float64) * 2 / head_dim)
    angles = torch.arange(n, dtype=torch.float64)[:, None] * frequencies[None, :]  # (n, half)

    def rotate(x: torch.Tensor) -> torch.Tensor:  # (heads, n, head_dim)
        first, second = x[..., :half], x[..., half:]
        return torch.cat(
            [first * angles.cos() - second * angles.sin(), second * angles.cos() + first * angles.sin()], dim=-1
        )

    x = weight("wte.weight")[tokens]
    for layer in range(config["n_layers"]):
        block = f"blocks.{layer}."
        h = rms_norm(x, weight(block + "attn_norm.weight"))
        q = (h @ weight(block + "q_proj.weight").T).view(n, heads, head_dim).transpose(0, 1)
        k = (h @ weight(block + "k_proj.weight").T).view(n, kv_heads, head_dim).transpose(0, 1)
        v = (h @ weight(block + "v_proj.weight").T).view(n, kv_heads, head_dim).transpose(0, 1)
        q, k = rotate(q), rotate(k)
        group = heads // kv_heads
        outputs = []
        for head in range(heads):
            scores = q[head] @ k[head // group].T / math.sqrt(head_dim)
            outputs.append(torch.softmax(scores, dim=-1) @ v[head // group])
        x = x + torch.cat(outputs, dim=-1) @ weight(block + "attn_out.weight").T

        h = rms_norm(x, weight(block + "ff_norm.weight"))
        gate = h @ weight(block + "ff_proj.weight").T
        up = h @ weight(block + "up_proj.weight").T
        x = x + (gate * torch.sigmoid(gate) * up) @ weight(block + "ff_out.weight").T
    return rms_norm(x, weight("ln_f.weight")) @ weight("ff_out.weight").T


def build_from_recipe(args: dict[str, Any], vocab_size: int = VOCAB_SIZE) -> LLaDAPretrainedBackbone:
    """Build the backbone through the registry, as training does."""
    recipe = OmegaConf.create({"backbone": {"name": "llada_pretrained", "args": args}})
    backbone = build_component(recipe, "backbone", "backbone", vocab_size=vocab_size)
    assert isinstance(backbone, LLaDAPretrainedBackbone)
    return backbone


def test_loaded_logits_match_reference(tmp_path: Path) -> None:
    """Logits over the text rows equal the float64 forward written from config.json."""
    tensors = write_checkpoint(tmp_path / "llada")
    backbone = build_from_recipe({"path": str(tmp_path / "llada")}).eval()
    tokens = torch.tensor([3, 17, 55, 0, 63, 8, 50, 21, 9])

    with torch.no_grad():
        logits = backbone(tokens[None], torch.ones(1, len(tokens), dtype=torch.bool))[0]
    expected = reference_logits(TINY_CONFIG, tensors, tokens)

    assert logits.shape == (len(tokens), VOCAB_SIZE)
    torch.testing.assert_close(logits[:, :64].double(), expected, rtol=1e-4, atol=1e-4)


def test_loaded_architecture_from_config(tmp_path: Path) -> None:
    """The architecture comes from config.json and every pretrained tensor is kept exactly."""
    tensors = write_checkpoint(tmp_path / "llada")
    backbone = build_from_recipe({"path": str(tmp_path / "llada")})
    state = backbone.state_dict()

    assert backbone.text_rows == 64
    assert backbone.head_dim == 8
    assert state["transformer.blocks.0.k_proj.weight"].shape == (16, 32)
    for name, tensor in tensors.items():
        module_name = name.removeprefix("model.")
        loaded = (
            state[module_name][:64]
            if module_name.endswith(("wte.weight", "transformer.ff_out.weight"))
            else state[module_name]
        )
        torch.testing.assert_close(loaded.double(), tensor, rtol=0, atol=0)


def test_new_rows_start_near_the_mean(tmp_path: Path) -> None:
    """Added embedding and output rows are the pretrained mean plus noise, each row distinct."""
    tensors = write_checkpoint(tmp_path / "llada")
    backbone = build_from_recipe({"path": str(tmp_path / "llada")})

    for name in ("wte.weight", "ff_out.weight"):
        pretrained = tensors["model.transformer." + name].float()
        added = backbone.state_dict()["transformer." + name][64:]
        assert added.shape == (VOCAB_SIZE - 64, 32)
        deviation = (added - pretrained.mean(dim=0)) / pretrained.std(dim=0)
        assert float(deviation.abs().max()) < 6 * NEW_ROW_NOISE
        assert float(deviation.std()) > 0.5 * NEW_ROW_NOISE
        assert len({tuple(row.tolist()) for row in added}) == len(added)


def test_loaded_parameters_train(tmp_path: Path) -> None:
    """Every loaded parameter receives a gradient, the added rows included."""
    write_checkpoint(tmp_path / "llada")
    backbone = build_from_recipe({"path": str(tmp_path / "llada")})
    tokens = torch.tensor([[1, 70, 80, 5]])

    backbone(tokens, torch.ones_like(tokens, dtype=torch.bool)).logsumexp(-1).sum().backward()

    for name, parameter in backbone.named_parameters():
        assert parameter.grad is not None, name
    assert float(backbone.transformer["wte"].weight.grad[70].abs().sum()) > 0


def test_bfloat16_dtype_reads_bfloat16(tmp_path: Path) -> None:
    """dtype=bfloat16 keeps the weights in bfloat16, as stored."""
    write_checkpoint(tmp_path / "llada")
    backbone = build_from_recipe({"path": str(tmp_path / "llada"), "dtype": "bfloat16"})

    assert {parameter.dtype for parameter in backbone.parameters()} == {torch.bfloat16}


def test_single_file_checkpoint(tmp_path: Path) -> None:
    """A folder with one model.safetensors and no index loads too."""
    tensors = checkpoint_tensors(TINY_CONFIG)
    folder = tmp_path / "single"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(TINY_CONFIG), encoding="utf-8")
    save_file(tensors, str(folder / "model.safetensors"))

    backbone = build_from_recipe({"path": str(folder)})

    torch.testing.assert_close(
        backbone.state_dict()["transformer.ln_f.weight"], tensors["model.transformer.ln_f.weight"]
    )


def test_preset_sizes() -> None:
    """The 8b preset is LLaDA-8B: 8,015,581,184 parameters with its own 126,464 rows (meta device)."""
    with torch.device("meta"):
        backbone = build_from_recipe({"preset": "8b"}, vocab_size=126464)
        tiny = build_from_recipe({"preset": "tiny"}, vocab_size=100)

    assert sum(parameter.numel() for parameter in backbone.parameters()) == 8_015_581_184
    assert tiny.transformer["wte"].weight.shape == (100, 128)


def test_preset_must_match_config(tmp_path: Path) -> None:
    """A preset that disagrees with config.json names the field and both values."""
    write_checkpoint(tmp_path / "llada")

    with pytest.raises(CheckpointError, match=r"config.json: field 'd_model' is 32 but preset 'tiny' has 128"):
        build_from_recipe({"path": str(tmp_path / "llada"), "preset": "tiny"})


def drop_tensor(folder: Path, name: str) -> None:
    """Remove tensor ``name`` from its shard and from the index."""
    from safetensors.torch import load_file

    index_path = folder / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    shard = folder / index["weight_map"].pop(name)
    index_path.write_text(json.dumps(index))
    remaining = {key: value for key, value in load_file(str(shard)).items() if key != name}
    save_file(remaining, str(shard))


def test_missing_tensor_names_file_and_tensor(tmp_path: Path) -> None:
    """A tensor absent from the index fails naming the index file and the tensor."""
    write_checkpoint(tmp_path / "llada")
    drop_tensor(tmp_path / "llada", "model.transformer.blocks.1.up_proj.weight")

    with pytest.raises(
        CheckpointError,
        match=r"model\.safetensors\.index\.json: tensor 'model\.transformer\.blocks\.1\.up_proj\.weight' is missing",
    ):
        build_from_recipe({"path": str(tmp_path / "llada")})


def test_tensor_missing_from_shard(tmp_path: Path) -> None:
    """A tensor listed in the index but absent from its shard names the shard and the tensor."""
    write_checkpoint(tmp_path / "llada")
    index_path = tmp_path / "llada" / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    drop_tensor(tmp_path / "llada", "model.transformer.ln_f.weight")
    index_path.write_text(json.dumps(index))

    with pytest.raises(
        CheckpointError,
        match=r"model-0000\d-of-00002\.safetensors: tensor 'model\.transformer\.ln_f\.weight' is missing",
    ):
        build_from_recipe({"path": str(tmp_path / "llada")})


def test_wrong_shape_names_file_and_tensor(tmp_path: Path) -> None:
    """A tensor whose shape disagrees with config.json names the shard, the tensor and both shapes."""
    tensors = checkpoint_tensors(TINY_CONFIG)
    tensors["model.transformer.blocks.0.ff_proj.weight"] = torch.zeros(40, 32)
    write_checkpoint(tmp_path / "llada", tensors=tensors)

    with pytest.raises(
        CheckpointError,
        match=r"safetensors: tensor 'model\.transformer\.blocks\.0\.ff_proj\.weight' has shape \[40, 32\], "
        r"but config\.json gives \[48, 32\]",
    ):
        build_from_recipe({"path": str(tmp_path / "llada")})


def test_unexpected_tensor_rejected(tmp_path: Path) -> None:
    """A tensor the backbone does not have (a bias) fails naming it."""
    tensors = checkpoint_tensors(TINY_CONFIG)
    tensors["model.transformer.blocks.0.q_proj.bias"] = torch.zeros(32)
    write_checkpoint(tmp_path / "llada", tensors=tensors)

    with pytest.raises(CheckpointError, match=r"unexpected tensor\(s\) model\.transformer\.blocks\.0\.q_proj\.bias"):
        build_from_recipe({"path": str(tmp_path / "llada")})


def test_missing_shard_file(tmp_path: Path) -> None:
    """A shard named by the index but absent fails naming the index, the tensor and the shard."""
    write_checkpoint(tmp_path / "llada")
    (tmp_path / "llada" / "model-00002-of-00002.safetensors").unlink()

    with pytest.raises(
        CheckpointError,
        match=r"index\.json maps tensor '.*' to .*model-00002-of-00002\.safetensors, which does not exist",
    ):
        build_from_recipe({"path": str(tmp_path / "llada")})


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("include_bias", True, r"field 'include_bias' is True, but the llada backbone supports only False"),
        ("block_type", "sequential", r"field 'block_type' is 'sequential'"),
        ("weight_tying", True, r"field 'weight_tying' is True"),
        ("d_model", "32", r"field 'd_model' must be a positive integer, got '32'"),
    ],
)
def test_unsupported_config_rejected(tmp_path: Path, field: str, value: Any, message: str) -> None:
    """config.json settings the backbone does not compute fail naming the file and the field."""
    write_checkpoint(tmp_path / "llada", config={**TINY_CONFIG, field: value}, tensors=checkpoint_tensors(TINY_CONFIG))

    with pytest.raises(CheckpointError, match=r"config\.json: " + message):
        build_from_recipe({"path": str(tmp_path / "llada")})


def test_missing_folder(tmp_path: Path) -> None:
    """A path without config.json fails naming the file and what the folder must hold."""
    with pytest.raises(CheckpointError, match=r"missing/config\.json not found: point backbone\.args\.path"):
        build_from_recipe({"path": str(tmp_path / "missing"), "preset": "8b"})


def test_meta_device_skips_missing_weights(tmp_path: Path) -> None:
    """On the meta device a missing folder falls back to the preset and nothing is read."""
    with torch.device("meta"):
        backbone = build_from_recipe({"path": str(tmp_path / "missing"), "preset": "tiny"})

    assert backbone.transformer["wte"].weight.is_meta


def test_vocabulary_smaller_than_checkpoint(tmp_path: Path) -> None:
    """A unified vocabulary with fewer ids than the checkpoint's text rows is rejected."""
    write_checkpoint(tmp_path / "llada")

    with pytest.raises(CheckpointError, match="embedding_size is 64 but the unified vocabulary has only 40 ids"):
        build_from_recipe({"path": str(tmp_path / "llada")}, vocab_size=40)


def test_neither_preset_nor_path() -> None:
    """Giving neither preset nor path is a recipe error listing the presets."""
    from diffuspeech.errors import RecipeError

    with pytest.raises(RecipeError, match=r"give backbone\.args\.preset \(one of tiny, small, base, 1b, 8b\)"):
        build_from_recipe({})


def test_init_from_trained_checkpoint(tmp_path: Path) -> None:
    """init_from replaces the pretrained weights with a training checkpoint's backbone weights."""
    write_checkpoint(tmp_path / "llada")
    trained = build_from_recipe({"path": str(tmp_path / "llada")})
    with torch.no_grad():
        for parameter in trained.parameters():
            parameter.add_(0.5)
    stored = {"state_dict": {f"backbone.{name}": tensor for name, tensor in trained.state_dict().items()}}
    torch.save(stored, tmp_path / "last.ckpt")

    stage2 = build_from_recipe({"path": str(tmp_path / "llada"), "init_from": str(tmp_path / "last.ckpt")})

    for name, tensor in trained.state_dict().items():
        torch.testing.assert_close(stage2.state_dict()[name], tensor, rtol=0, atol=0)
    assert all(parameter.requires_grad for parameter in stage2.parameters())


def test_init_from_other_vocabulary(tmp_path: Path) -> None:
    """A training checkpoint with another vocabulary size fails naming the file and the tensor."""
    write_checkpoint(tmp_path / "llada")
    trained = build_from_recipe({"path": str(tmp_path / "llada")}, vocab_size=VOCAB_SIZE + 4)
    stored = {"state_dict": {f"backbone.{name}": tensor for name, tensor in trained.state_dict().items()}}
    torch.save(stored, tmp_path / "last.ckpt")

    with pytest.raises(
        CheckpointError, match=r"last\.ckpt: tensor 'backbone\.transformer\.wte\.weight' has shape \[89, 32\]"
    ):
        build_from_recipe({"path": str(tmp_path / "llada"), "init_from": str(tmp_path / "last.ckpt")})


def test_init_from_missing_file(tmp_path: Path) -> None:
    """A missing earlier-stage checkpoint names the key and the path."""
    write_checkpoint(tmp_path / "llada")

    with pytest.raises(CheckpointError, match=r"backbone\.args\.init_from: .*stage1\.ckpt not found"):
        build_from_recipe({"path": str(tmp_path / "llada"), "init_from": str(tmp_path / "stage1.ckpt")})


def test_preset_with_overrides() -> None:
    """Architecture arguments override a preset when no checkpoint is loaded."""
    backbone = build_from_recipe({"preset": "tiny", "n_layers": 1, "d_model": 64}, vocab_size=50)

    assert len(backbone.transformer["blocks"]) == 1
    assert backbone.transformer["wte"].weight.shape == (50, 64)


def test_override_disagrees_with_config(tmp_path: Path) -> None:
    """An architecture argument that contradicts config.json names both values."""
    write_checkpoint(tmp_path / "llada")

    with pytest.raises(CheckpointError, match=r"backbone\.args\.n_layers=3 disagrees with .*config\.json \(2\)"):
        build_from_recipe({"path": str(tmp_path / "llada"), "n_layers": 3})


WORDS = ["zero", "one", "two", "three", "plus", "what", "is"]


def write_word_tokenizer(folder: Path) -> None:
    """Write a word-level tokenizer.json with LLaDA's special ids of TINY_CONFIG (eos/pad 50, mask 55)."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {word: i for i, word in enumerate(WORDS)}
    vocab |= {f"<|reserved_{i}|>": i for i in range(len(WORDS), TINY_CONFIG["vocab_size"])}
    vocab |= {"<|endoftext|>": 50, "<|mdm_mask|>": 55, "<unk>": 59}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.save(str(folder / "tokenizer.json"))


def write_tone_corpus(data_dir: Path) -> None:
    """Write train and valid manifests of 'what is A plus B' with one tone per word."""
    import soundfile as sf

    def tone(path: Path, words: list[str]) -> float:
        t = torch.arange(1920) / 16000
        waveform = torch.cat([0.3 * torch.sin(2 * math.pi * (200 + 90 * WORDS.index(w)) * t) for w in words])
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, waveform.numpy(), 16000)
        return len(waveform) / 16000

    splits = {"train": [(a, b) for a in range(3) for b in range(3)][:7], "valid": [(1, 1), (0, 2)]}
    for split, pairs in splits.items():
        rows = []
        for a, b in pairs:
            question = f"what is {WORDS[a]} plus {WORDS[b]}"
            answer = WORDS[min(a + b, 3)]
            audio, reply = data_dir / f"audio/{split}-{a}-{b}.wav", data_dir / f"audio/answer-{answer}.wav"
            row = {
                "id": f"{split}-{a}-{b}",
                "tasks": ["asr", "s2t", "s2s", "t2t", "tts"],
                "question": question,
                "thought": f"{WORDS[a]} plus {WORDS[b]} is {answer}",
                "answer": answer,
                "transcript": question,
                "audio": str(audio),
                "duration": tone(audio, question.split()),
                "reply_audio": str(reply),
                "reply_duration": tone(reply, [answer]),
            }
            rows.append(json.dumps(row) + "\n")
        (data_dir / "manifests").mkdir(parents=True, exist_ok=True)
        (data_dir / "manifests" / f"{split}.jsonl").write_text("".join(rows), encoding="utf-8")


@pytest.mark.slow
def test_pretrained_parts_train(tmp_path: Path) -> None:
    """The tiny recipe trains on a LLaDA folder (weights and tokenizer.json) and the checkpoint reloads."""
    from diffuspeech.inference import load_checkpoint
    from diffuspeech.recipe import load_recipe
    from diffuspeech.training.run import train

    folder = tmp_path / "llada"
    write_checkpoint(folder)
    write_word_tokenizer(folder)
    write_tone_corpus(tmp_path / "data")
    recipe_path = tmp_path / "pretrained.yaml"
    recipe_path.write_text(
        f"extends: {Path(__file__).parents[1] / 'recipes' / 'tiny.yaml'}\n"
        f"text_tokenizer:\n  name: hf_tokenizers\n  args: {{path: {folder}, vocab_size: 64, mask_id: 55, pad_id: 50}}\n"
        f"backbone:\n  name: llada_pretrained\n  args: {{path: {folder}}}\n",
        encoding="utf-8",
    )
    overrides = [
        f"data_dir={tmp_path / 'data'}",
        f"output_dir={tmp_path / 'run'}",
        "speech_tokenizer.args.num_units=12",
        "layout.transcript=8",
        "layout.thought=8",
        "layout.answer=3",
        "layout.reply_units=12",
        "training.max_steps=3",
        "training.batch_size=4",
        "training.batches_per_epoch=3",
        "training.warmup_steps=1",
        "training.validation_interval=100",
        "training.validation_items_per_task=1",
        "training.validation_samples=0",
        "training.validation_audio_samples=0",
        "training.log_every_n_steps=1",
    ]

    checkpoint = train(load_recipe(recipe_path, overrides))
    # The trained weights replace the pretrained ones, so loading must not read the shards again.
    for shard in folder.glob("*.safetensors"):
        shard.unlink()
    model = load_checkpoint(checkpoint)
    trained = torch.load(checkpoint, weights_only=True)["state_dict"]["backbone.transformer.wte.weight"]

    assert model.system.vocabulary.size == 64 + 9 + 12
    assert model.system.vocabulary.mask_id == 55
    assert model.backbone.transformer["wte"].weight.shape == (64 + 9 + 12, 32)
    assert torch.equal(model.backbone.transformer["wte"].weight, trained)
    assert model.system.text_tokenizer.encode("what is two") == [5, 6, 2]
