"""A bidirectional transformer with LLaDA's architecture at any size.

LLaDA (Nie et al., 2025) is a LLaMA-style stack without the causal mask:
pre-norm RMSNorm, rotary position embeddings, SwiGLU feed-forward, no
biases, separate input embedding and output projection. Module names follow
LLaDA's published checkpoint (``transformer.wte``, ``blocks.N.q_proj``,
``attn_out``, ``ff_proj``, ``up_proj``, ``ff_out``, ``attn_norm``,
``ff_norm``, ``ln_f``) so that its weights map one to one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from diffuspeech.interfaces import Backbone, KeyValueCache, KeyValueCaching


class RMSNorm(nn.Module):
    """Root-mean-square normalization with a learned scale."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return (x.to(dtype)) * self.weight


def rotary_tables(length: int, head_dim: int, theta: float, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Return cos and sin tables of shape (length, head_dim) for rotary embeddings."""
    inverse_frequency = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=device).float() / head_dim))
    angles = torch.outer(torch.arange(length, device=device).float(), inverse_frequency)
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate (b, h, n, d) queries or keys by position (half-split convention, as in LLaMA)."""
    first, second = x.chunk(2, dim=-1)
    rotated = torch.cat([-second, first], dim=-1)
    return (x.float() * cos + rotated.float() * sin).to(x.dtype)


class LLaDABlock(nn.Module):
    """One pre-norm block: bidirectional attention, then SwiGLU."""

    def __init__(self, d_model: int, n_heads: int, n_kv_heads: int, mlp_hidden_size: int, eps: float) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.n_kv_heads = n_kv_heads
        self.head_dim = d_model // n_heads
        self.attn_norm = RMSNorm(d_model, eps)
        self.q_proj = nn.Linear(d_model, d_model, bias=False)
        self.k_proj = nn.Linear(d_model, n_kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(d_model, n_kv_heads * self.head_dim, bias=False)
        self.attn_out = nn.Linear(d_model, d_model, bias=False)
        self.ff_norm = RMSNorm(d_model, eps)
        self.ff_proj = nn.Linear(d_model, mlp_hidden_size, bias=False)
        self.up_proj = nn.Linear(d_model, mlp_hidden_size, bias=False)
        self.ff_out = nn.Linear(mlp_hidden_size, d_model, bias=False)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        return self.forward_with_cache(x, key_mask, cos, sin)[0]

    def forward_with_cache(
        self, x: torch.Tensor, key_mask: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return the block's output and its keys and values (b, kv_heads, n, head_dim)."""
        q, k, v = self._project(self.attn_norm(x), cos, sin)
        return self._attend(x, q, k, v, key_mask), k, v

    def forward_positions(
        self,
        x: torch.Tensor,
        key_mask: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        positions: torch.Tensor,
        keys: torch.Tensor,
        values: torch.Tensor,
    ) -> torch.Tensor:
        """Compute the block at ``positions`` (b, m) only, with the cached ``keys`` and ``values`` elsewhere.

        ``x`` (b, m, d_model) contains the hidden states at ``positions``; ``cos``
        and ``sin`` (b, 1, m, head_dim) their rotary tables.
        """
        q, k, v = self._project(self.attn_norm(x), cos, sin)

        # Overwrite the cached keys and values at the recomputed positions: (b, kv_heads, n, head_dim).
        index = positions[:, None, :, None].expand(-1, k.shape[1], -1, k.shape[3])
        keys = keys.scatter(2, index, k)
        values = values.scatter(2, index, v)
        return self._attend(x, q, keys, values, key_mask)

    def _project(
        self, h: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return queries (b, heads, n, d) and keys and values (b, kv_heads, n, d), keys and queries rotated."""
        b, n, _ = h.shape

        # (b, n, heads * d) -> (b, heads, n, d)
        q = self.q_proj(h).view(b, n, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(h).view(b, n, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(h).view(b, n, self.n_kv_heads, self.head_dim).transpose(1, 2)
        return apply_rotary(q, cos, sin), apply_rotary(k, cos, sin), v

    def _attend(
        self, x: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor
    ) -> torch.Tensor:
        """Add attention over all keys, then the SwiGLU feed-forward, to the residual stream ``x`` (b, m, d)."""
        b, m, _ = x.shape
        if self.n_kv_heads != self.n_heads:
            repeat = self.n_heads // self.n_kv_heads
            k = k.repeat_interleave(repeat, dim=1)
            v = v.repeat_interleave(repeat, dim=1)

        # key_mask (b, 1, 1, n): no query attends to a padding key; there is no causal mask.
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask)
        x = x + self.attn_out(attended.transpose(1, 2).reshape(b, m, -1))

        h = self.ff_norm(x)
        return x + self.ff_out(F.silu(self.ff_proj(h)) * self.up_proj(h))


class LLaDABackbone(Backbone, KeyValueCaching):
    """LLaDA's transformer: RMSNorm, SwiGLU, RoPE, full bidirectional attention.

    Arguments follow the names of LLaDA's ``config.json`` (``d_model``,
    ``n_layers``, ``n_heads``, ``n_kv_heads``, ``mlp_hidden_size``,
    ``rope_theta``, ``rms_norm_eps``). ``vocab_size`` is set by the core from
    the unified vocabulary. Not supported: biases, weight tying, dropout.

    With ``KeyValueCaching``, ``forward_positions`` recomputes only the
    requested positions against keys and values cached by
    ``forward_with_cache``; samplers use it to skip the unchanged condition.
    """

    description = "bidirectional LLaMA-style transformer with LLaDA's architecture (RMSNorm, SwiGLU, RoPE)"

    def __init__(
        self,
        vocab_size: int,
        d_model: int = 128,
        n_layers: int = 4,
        n_heads: int = 4,
        n_kv_heads: int | None = None,
        mlp_hidden_size: int = 512,
        rope_theta: float = 10000.0,
        rms_norm_eps: float = 1e-5,
        init_std: float = 0.02,
    ) -> None:
        super().__init__()
        n_kv_heads = n_heads if n_kv_heads is None else n_kv_heads
        sizes = {
            "d_model": d_model,
            "n_layers": n_layers,
            "n_heads": n_heads,
            "n_kv_heads": n_kv_heads,
            "mlp_hidden_size": mlp_hidden_size,
        }
        for name, value in sizes.items():
            if value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        if d_model % n_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        if n_heads % n_kv_heads:
            raise ValueError(f"n_heads ({n_heads}) must be divisible by n_kv_heads ({n_kv_heads})")
        if (d_model // n_heads) % 2:
            raise ValueError(f"the head size d_model / n_heads = {d_model // n_heads} must be even for RoPE")

        self.vocab_size = vocab_size
        self.head_dim = d_model // n_heads
        self.rope_theta = rope_theta
        self.transformer = nn.ModuleDict(
            {
                "wte": nn.Embedding(vocab_size, d_model),
                "blocks": nn.ModuleList(
                    LLaDABlock(d_model, n_heads, n_kv_heads, mlp_hidden_size, rms_norm_eps) for _ in range(n_layers)
                ),
                "ln_f": RMSNorm(d_model, rms_norm_eps),
                "ff_out": nn.Linear(d_model, vocab_size, bias=False),
            }
        )
        self._init_weights(init_std)

    def _init_weights(self, std: float) -> None:
        for module in self.modules():
            if isinstance(module, nn.Linear | nn.Embedding):
                nn.init.normal_(module.weight, mean=0.0, std=std)

    def forward(self, tokens: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.forward_with_cache(tokens, attention_mask)[0]

    def forward_with_cache(
        self, tokens: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, KeyValueCache]:
        _, n = tokens.shape
        x = self.transformer["wte"](tokens)
        cos, sin = rotary_tables(n, self.head_dim, self.rope_theta, tokens.device)
        key_mask = attention_mask[:, None, None, :]
        cache = KeyValueCache(keys=[], values=[])
        for block in self._blocks():
            x, keys, values = block.forward_with_cache(x, key_mask, cos.to(x.dtype), sin.to(x.dtype))
            cache.keys.append(keys)
            cache.values.append(values)
        return self.transformer["ff_out"](self.transformer["ln_f"](x)), cache

    def forward_positions(
        self, tokens: torch.Tensor, attention_mask: torch.Tensor, positions: torch.Tensor, cache: KeyValueCache
    ) -> torch.Tensor:
        _, n = tokens.shape
        x = self.transformer["wte"](tokens.gather(1, positions))
        cos, sin = rotary_tables(n, self.head_dim, self.rope_theta, tokens.device)

        # Rotary tables at each row's positions: (n, d) -> (b, 1, m, d), broadcast over heads.
        cos = cos[positions][:, None].to(x.dtype)
        sin = sin[positions][:, None].to(x.dtype)
        key_mask = attention_mask[:, None, None, :]
        for block, keys, values in zip(self._blocks(), cache.keys, cache.values, strict=True):
            x = block.forward_positions(x, key_mask, cos, sin, positions, keys, values)
        return self.transformer["ff_out"](self.transformer["ln_f"](x))

    def _blocks(self) -> list[LLaDABlock]:
        blocks = self.transformer["blocks"]
        assert isinstance(blocks, nn.ModuleList)
        return [block for block in blocks if isinstance(block, LLaDABlock)]
