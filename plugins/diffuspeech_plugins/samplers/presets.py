"""Named configurations of the confidence sampler family.

Each fixes the options that define it and exposes the ones that still make
sense; ``confidence`` (``ConfidenceSampler``) exposes all of them.
"""

from __future__ import annotations

from diffuspeech_plugins.samplers.confidence import ConfidenceSampler


class RandomRemaskingSampler(ConfidenceSampler):
    """Unmask uniformly random masked positions, k per step with the linear count (LLaDA's random remasking)."""

    description = "random remasking: unmask random positions with a linear count (LLaDA)"

    def __init__(
        self,
        steps: int = 32,
        temperature: float = 1.0,
        order: str = "joint",
        block_length: int | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        cfg_scale: float = 0.0,
        min_content: int = 0,
    ) -> None:
        super().__init__(
            steps=steps,
            temperature=temperature,
            order=order,
            confidence="random",
            block_length=block_length,
            top_k=top_k,
            top_p=top_p,
            cfg_scale=cfg_scale,
            min_content=min_content,
        )


class SemiAutoregressiveSampler(ConfidenceSampler):
    """Confidence-based unmasking in blocks of ``block_length`` target positions, left to right (LLaDA's semi-AR)."""

    description = "semi-autoregressive blocks of confidence-based unmasking (LLaDA block_length)"

    def __init__(
        self,
        steps: int = 32,
        block_length: int = 8,
        temperature: float = 1.0,
        order: str = "joint",
        confidence: str = "probability",
        cache: str = "none",
        min_content: int = 0,
    ) -> None:
        super().__init__(
            steps=steps,
            temperature=temperature,
            order=order,
            confidence=confidence,
            block_length=block_length,
            cache=cache,
            min_content=min_content,
        )


class ParallelDecodingSampler(ConfidenceSampler):
    """Fast-dLLM-style decoding: blocks, a key/value cache, and every position above ``threshold`` per step.

    ``steps`` is the most steps spent; a block whose positions are all
    confident finishes early, which is where the speed comes from.
    """

    description = "confidence-threshold parallel decoding with key/value caching (Fast-dLLM)"

    def __init__(
        self,
        steps: int = 32,
        threshold: float = 0.9,
        block_length: int | None = 16,
        cache: str = "block",
        temperature: float = 0.0,
        order: str = "joint",
        confidence: str = "probability",
        min_content: int = 0,
    ) -> None:
        super().__init__(
            steps=steps,
            temperature=temperature,
            order=order,
            confidence=confidence,
            threshold=threshold,
            block_length=block_length,
            cache=cache,
            min_content=min_content,
        )
