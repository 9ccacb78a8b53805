"""Sampler plugin kind."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch

from diffuspeech.interfaces.plugin import Plugin

ModelFunction = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class SamplingRequest:
    """A batch of partly masked sequences to denoise.

    Shapes (b batch, n length, V vocabulary size):
    - ``tokens`` (b, n) int64: condition tokens in place, ``mask_id`` at
      every position to generate, padding past each sequence's end;
    - ``attention_mask`` (b, n) bool: True at real positions;
    - ``target_mask`` (b, n) bool: True at the positions to generate;
    - ``allowed`` (b, n, V) bool: the ids each position may take;
    - ``modality`` (b, n) int64: TEXT (0) or SPEECH (1) at target positions,
      -1 elsewhere, for samplers that order the modalities;
    - ``condition_mask`` (b, n) bool: the positions that classifier-free
      guidance replaces by ``mask_id`` for its unconditional pass; None means
      every real position outside the targets;
    - ``end_id`` (b, n) int64: at each target position, the id of the closing
      marker that ends its span (``<|eot|>`` or ``<|eos|>``), -1 elsewhere;
      needed only by samplers that hold back early end markers;
    - ``span_position`` (b, n) int64: the index of each target position in
      its span (0 at the first), -1 elsewhere.
    """

    tokens: torch.Tensor
    attention_mask: torch.Tensor
    target_mask: torch.Tensor
    allowed: torch.Tensor
    mask_id: int
    modality: torch.Tensor | None = None
    condition_mask: torch.Tensor | None = None
    end_id: torch.Tensor | None = None
    span_position: torch.Tensor | None = None


@dataclass
class SamplingStats:
    """What one ``sample`` call cost.

    - ``network_calls``: calls of the network (a batch at a time);
    - ``sequence_evaluations``: sequences those calls evaluated; a guided
      call evaluates each row twice (with and without the condition), so
      ``sequence_evaluations / batch size`` is the number of function
      evaluations (NFE) per answer;
    - ``cached_calls``: the calls that recomputed only some positions against
      cached keys and values;
    - ``steps``: denoising iterations, including those that reused logits;
    - ``committed``: per iteration, the number of positions unmasked in each row.
    """

    batch_size: int = 0
    network_calls: int = 0
    sequence_evaluations: int = 0
    cached_calls: int = 0
    steps: int = 0
    committed: list[list[int]] = field(default_factory=list)

    @property
    def nfe_per_answer(self) -> float:
        """Network function evaluations per sequence of the batch."""
        return self.sequence_evaluations / max(self.batch_size, 1)


class Sampler(Plugin):
    """Turns every masked target position into a token by iterative unmasking.

    ``sample`` calls ``model(tokens, attention_mask)`` for logits
    (b, n, V) and returns the completed tokens (b, n); positions outside
    ``target_mask`` are returned unchanged. ``model`` is usually the
    :class:`~diffuspeech.interfaces.Backbone` itself, so a sampler may use an
    optional capability such as ``KeyValueCaching`` when the model has it and
    plain calls otherwise.

    A sampler that counts its work sets ``last_stats`` on every call.
    """

    last_stats: SamplingStats | None = None

    @abstractmethod
    def sample(
        self,
        model: ModelFunction,
        request: SamplingRequest,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Return the denoised tokens (b, n)."""

    def sample_stream(
        self,
        model: ModelFunction,
        request: SamplingRequest,
        generator: torch.Generator | None = None,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield ``(tokens, finished)`` pairs (b, n) as target positions become final.

        ``finished`` is True at the target positions that will not change
        again. The last pair contains the same tokens as ``sample``. This default
        yields once, at the end. Samplers that decode in blocks yield after
        each block, so callers can use the first blocks early.
        """
        tokens = self.sample(model, request, generator)
        yield tokens, request.target_mask.clone()
