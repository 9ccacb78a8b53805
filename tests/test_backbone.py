"""Tests for the LLaDA backbone: shapes, padding, bidirectional attention and the reference size."""

from __future__ import annotations

import pytest
import torch

from diffuspeech.interfaces import Backbone
from diffuspeech_plugins.backbones.llada import LLaDABackbone

VOCAB_SIZE = 40


def small_backbone(n_kv_heads: int | None = None, seed: int = 0) -> LLaDABackbone:
    """Return a 2-layer backbone with random weights in eval mode."""
    torch.manual_seed(seed)
    backbone = LLaDABackbone(
        vocab_size=VOCAB_SIZE,
        d_model=32,
        n_layers=2,
        n_heads=4,
        n_kv_heads=n_kv_heads,
        mlp_hidden_size=64,
        init_std=0.1,
    )
    return backbone.eval()


def random_tokens(batch: int, length: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, VOCAB_SIZE, (batch, length), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("n_kv_heads", [None, 2, 1])
def test_output_shape(n_kv_heads: int | None) -> None:
    """Logits are float32 of shape (batch, length, vocab_size), with or without grouped-query attention."""
    backbone = small_backbone(n_kv_heads)
    tokens = random_tokens(3, 7)

    with torch.no_grad():
        logits = backbone(tokens, torch.ones(3, 7, dtype=torch.bool))

    assert isinstance(backbone, Backbone)
    assert logits.shape == (3, 7, VOCAB_SIZE)
    assert logits.dtype == torch.float32
    assert bool(torch.isfinite(logits).all())


@pytest.mark.parametrize("n_kv_heads", [None, 2])
def test_padding_leaves_real_positions(n_kv_heads: int | None) -> None:
    """A right-padded sequence in a batch gets the logits it gets alone at its real positions."""
    backbone = small_backbone(n_kv_heads)
    short = random_tokens(1, 6, seed=1)
    long = random_tokens(1, 10, seed=2)
    batch = torch.cat([torch.cat([short, torch.full((1, 4), 5)], dim=1), long])
    attention_mask = torch.ones(2, 10, dtype=torch.bool)
    attention_mask[0, 6:] = False

    with torch.no_grad():
        alone = backbone(short, torch.ones(1, 6, dtype=torch.bool))
        padded = backbone(batch, attention_mask)

    torch.testing.assert_close(padded[0, :6], alone[0], rtol=1e-5, atol=1e-5)


def test_padding_ids_do_not_leak() -> None:
    """Changing the ids at padded positions leaves the logits at real positions unchanged."""
    backbone = small_backbone()
    tokens = random_tokens(2, 9)
    attention_mask = torch.ones(2, 9, dtype=torch.bool)
    attention_mask[:, 5:] = False
    changed = tokens.clone()
    changed[:, 5:] = (changed[:, 5:] + 7) % VOCAB_SIZE

    with torch.no_grad():
        before = backbone(tokens, attention_mask)
        after = backbone(changed, attention_mask)

    torch.testing.assert_close(after[:, :5], before[:, :5], rtol=1e-6, atol=1e-6)


def test_no_causal_mask() -> None:
    """Changing the last token changes the logits at the first position."""
    backbone = small_backbone()
    tokens = random_tokens(1, 8)
    changed = tokens.clone()
    changed[0, -1] = (changed[0, -1] + 1) % VOCAB_SIZE
    attention_mask = torch.ones(1, 8, dtype=torch.bool)

    with torch.no_grad():
        before = backbone(tokens, attention_mask)
        after = backbone(changed, attention_mask)

    assert float((after[0, 0] - before[0, 0]).abs().max()) > 1e-4


def test_checkpoint_module_names() -> None:
    """Parameter names follow LLaDA's published checkpoint."""
    names = set(small_backbone().state_dict())

    for name in (
        "transformer.wte.weight",
        "transformer.blocks.0.attn_norm.weight",
        "transformer.blocks.0.q_proj.weight",
        "transformer.blocks.0.k_proj.weight",
        "transformer.blocks.0.v_proj.weight",
        "transformer.blocks.0.attn_out.weight",
        "transformer.blocks.0.ff_norm.weight",
        "transformer.blocks.0.ff_proj.weight",
        "transformer.blocks.0.up_proj.weight",
        "transformer.blocks.0.ff_out.weight",
        "transformer.ln_f.weight",
        "transformer.ff_out.weight",
    ):
        assert name in names


def test_reference_parameter_count() -> None:
    """LLaDA-8B's configuration gives 8,015,581,184 parameters (built on the meta device)."""
    with torch.device("meta"):
        backbone = LLaDABackbone(
            vocab_size=126464,
            d_model=4096,
            n_layers=32,
            n_heads=32,
            n_kv_heads=32,
            mlp_hidden_size=12288,
            rope_theta=500000.0,
        )

    assert sum(parameter.numel() for parameter in backbone.parameters()) == 8_015_581_184


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"d_model": 30, "n_heads": 4}, r"d_model \(30\) must be divisible by n_heads \(4\)"),
        ({"d_model": 32, "n_heads": 4, "n_kv_heads": 3}, r"n_heads \(4\) must be divisible by n_kv_heads \(3\)"),
        ({"d_model": 12, "n_heads": 4}, "head size d_model / n_heads = 3 must be even"),
    ],
)
def test_invalid_shapes(arguments: dict[str, int], message: str) -> None:
    """Head counts and sizes that cannot work raise ValueError naming the values."""
    with pytest.raises(ValueError, match=message):
        LLaDABackbone(vocab_size=VOCAB_SIZE, **arguments)


@pytest.mark.parametrize("size", ["d_model", "n_layers", "n_heads", "mlp_hidden_size"])
def test_non_positive_size_rejected(size: str) -> None:
    arguments = {"d_model": 16, "n_layers": 1, "n_heads": 2, "mlp_hidden_size": 32, size: 0}
    with pytest.raises(ValueError, match=f"{size} must be at least 1"):
        LLaDABackbone(10, **arguments)
