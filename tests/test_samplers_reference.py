"""The plain confidence sampler against a transcription of LLaDA's published ``generate``.

LLaDA's reference sampler (``generate.py`` in the ML-GSAI/LLaDA repository)
appends ``gen_length`` mask tokens to a prompt and splits them into blocks of
``block_length``; each block gets ``steps / blocks`` steps. At each step it
predicts every position, takes the softmax probability of each prediction as
its confidence, and commits the most confident masked positions of the
current block, as many as a linear schedule of the block's mask count gives.
At temperature 0 the Gumbel noise leaves the logits unchanged.
"""

from __future__ import annotations

import pytest
import torch

from diffuspeech.interfaces import SamplingRequest
from diffuspeech_plugins.backbones.llada import LLaDABackbone
from diffuspeech_plugins.samplers.confidence import ConfidenceSampler
from diffuspeech_plugins.samplers.presets import SemiAutoregressiveSampler

VOCAB = 40
MASK_ID = VOCAB - 1


def transfer_counts(block_masked: torch.Tensor, steps: int) -> torch.Tensor:
    """Split each row's mask count over ``steps`` evenly, earlier steps taking the remainder."""
    total = block_masked.sum(dim=1)
    counts = torch.zeros(total.shape[0], steps, dtype=torch.long) + (total // steps)[:, None]
    for row in range(total.shape[0]):
        counts[row, : int(total[row] % steps)] += 1
    return counts


def llada_generate_greedy(model, prompt: torch.Tensor, steps: int, gen_length: int, block_length: int) -> torch.Tensor:  # type: ignore[no-untyped-def]
    """LLaDA's low-confidence remasking at temperature 0, written out step by step."""
    batch, prompt_length = prompt.shape
    x = torch.full((batch, prompt_length + gen_length), MASK_ID, dtype=torch.long)
    x[:, :prompt_length] = prompt
    assert gen_length % block_length == 0
    blocks = gen_length // block_length
    assert steps % blocks == 0
    steps_per_block = steps // blocks

    for block in range(blocks):
        start = prompt_length + block * block_length
        end = start + block_length
        counts = transfer_counts(x[:, start:end] == MASK_ID, steps_per_block)
        for step in range(steps_per_block):
            still_masked = x == MASK_ID
            logits = model(x)
            prediction = logits.argmax(dim=-1)
            probability = torch.softmax(logits.to(torch.float64), dim=-1)
            confidence = probability.gather(-1, prediction[..., None]).squeeze(-1)
            confidence[:, end:] = -torch.inf
            prediction = torch.where(still_masked, prediction, x)
            confidence = torch.where(still_masked, confidence, torch.full_like(confidence, -torch.inf))
            for row in range(batch):
                chosen = confidence[row].topk(int(counts[row, step])).indices
                x[row, chosen] = prediction[row, chosen]
    return x


@pytest.fixture
def backbone() -> LLaDABackbone:
    """A 2-layer LLaDA backbone with random weights, large enough to give distinct confidences."""
    torch.manual_seed(3)
    return LLaDABackbone(VOCAB, d_model=32, n_layers=2, n_heads=4, mlp_hidden_size=64, init_std=0.1).eval()


def never_mask(backbone: LLaDABackbone):  # type: ignore[no-untyped-def]
    """Wrap the backbone so it never predicts the mask id, as a trained model does not."""

    def model(tokens: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        if attention_mask is None:
            attention_mask = torch.ones_like(tokens, dtype=torch.bool)
        logits = backbone(tokens, attention_mask)
        logits[..., MASK_ID] = -1e4
        return logits

    return model


def request_for(prompt: torch.Tensor, gen_length: int) -> SamplingRequest:
    """A request with the prompt as condition and ``gen_length`` masked targets after it, every id allowed."""
    batch, prompt_length = prompt.shape
    tokens = torch.cat([prompt, torch.full((batch, gen_length), MASK_ID)], dim=1)
    target_mask = torch.zeros_like(tokens, dtype=torch.bool)
    target_mask[:, prompt_length:] = True
    allowed = torch.ones(*tokens.shape, VOCAB, dtype=torch.bool)
    return SamplingRequest(tokens, torch.ones_like(target_mask), target_mask, allowed, MASK_ID)


@pytest.mark.parametrize(("steps", "gen_length"), [(12, 12), (5, 12), (1, 6), (16, 16)])
def test_matches_llada_one_block(steps: int, gen_length: int, backbone: LLaDABackbone) -> None:
    """With one block, the plain sampler gives LLaDA's tokens exactly."""
    prompt = torch.randint(0, MASK_ID, (2, 7), generator=torch.Generator().manual_seed(steps))
    model = never_mask(backbone)

    expected = llada_generate_greedy(model, prompt, steps, gen_length, gen_length)
    actual = ConfidenceSampler(steps=steps, temperature=0.0).sample(model, request_for(prompt, gen_length))

    assert torch.equal(actual, expected)


@pytest.mark.parametrize(("steps", "gen_length", "block_length"), [(6, 12, 4), (12, 12, 4), (4, 16, 8), (8, 8, 2)])
def test_matches_llada_semi_autoregressive(
    steps: int, gen_length: int, block_length: int, backbone: LLaDABackbone
) -> None:
    """With block_length below gen_length, both block samplers give LLaDA's semi-autoregressive tokens."""
    prompt = torch.randint(0, MASK_ID, (2, 5), generator=torch.Generator().manual_seed(block_length))
    model = never_mask(backbone)
    request = request_for(prompt, gen_length)

    expected = llada_generate_greedy(model, prompt, steps, gen_length, block_length)
    family = ConfidenceSampler(steps=steps, temperature=0.0, block_length=block_length).sample(model, request)
    named = SemiAutoregressiveSampler(steps=steps, block_length=block_length, temperature=0.0).sample(model, request)

    assert torch.equal(family, expected)
    assert torch.equal(named, expected)


def test_blocks_change_the_result(backbone: LLaDABackbone) -> None:
    """The block variant is a different algorithm: on this model it gives other tokens than one block."""
    prompt = torch.randint(0, MASK_ID, (2, 5), generator=torch.Generator().manual_seed(0))
    model = never_mask(backbone)

    one_block = llada_generate_greedy(model, prompt, 8, 16, 16)
    blocks = llada_generate_greedy(model, prompt, 8, 16, 2)

    assert not torch.equal(one_block, blocks)
