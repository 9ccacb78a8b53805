"""Target slots: each row's target positions gathered into a (b, m) table, and blocks over them."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from diffuspeech.interfaces import SamplingRequest


def first_true(mask: torch.Tensor, width: int) -> torch.Tensor:
    """Return (b, width) column indices of each row of ``mask`` (b, m), its True columns first, in order.

    Rows with fewer True columns are filled with their False columns, so the
    indices of a row stay distinct.
    """
    return torch.sort((~mask).to(torch.int8), dim=1, stable=True).indices[:, :width]


@dataclass
class TargetSlots:
    """The target positions of a request, gathered per row into m slots in position order.

    m is the largest target count of a row; rows with fewer targets fill the
    rest with other, distinct positions and have ``valid`` False there.
    Shapes: ``positions``, ``valid``, ``modality``, ``end_id`` and
    ``span_position`` (b, m); ``allowed`` (b, m, V).
    """

    positions: torch.Tensor
    valid: torch.Tensor
    modality: torch.Tensor
    allowed: torch.Tensor
    end_id: torch.Tensor
    span_position: torch.Tensor

    @classmethod
    def from_request(cls, request: SamplingRequest) -> TargetSlots:
        """Gather the slots of ``request``; ``span_position`` is derived when the request has none."""
        target_mask = request.target_mask
        width = int(target_mask.sum(dim=1).max()) if target_mask.numel() else 0
        positions = first_true(target_mask, width)
        valid = target_mask.gather(1, positions)

        modality = (
            request.modality.gather(1, positions) if request.modality is not None else torch.zeros_like(positions)
        )
        modality = modality.masked_fill(~valid, -1)
        vocab = request.allowed.shape[-1]
        allowed = request.allowed.gather(1, positions[..., None].expand(-1, -1, vocab))
        end_id = request.end_id.gather(1, positions) if request.end_id is not None else torch.full_like(positions, -1)
        end_id = end_id.masked_fill(~valid, -1)
        if request.span_position is not None:
            span_position = request.span_position.gather(1, positions)
        else:
            span_position = _span_positions(positions, valid, modality)
        return cls(positions, valid, modality, allowed, end_id, span_position.masked_fill(~valid, -1))

    def gather(self, index: torch.Tensor) -> TargetSlots:
        """Return the slots at ``index`` (b, k), columns of this table."""
        vocab = self.allowed.shape[-1]
        return TargetSlots(
            positions=self.positions.gather(1, index),
            valid=self.valid.gather(1, index),
            modality=self.modality.gather(1, index),
            allowed=self.allowed.gather(1, index[..., None].expand(-1, -1, vocab)),
            end_id=self.end_id.gather(1, index),
            span_position=self.span_position.gather(1, index),
        )


def _span_positions(positions: torch.Tensor, valid: torch.Tensor, modality: torch.Tensor) -> torch.Tensor:
    """Index each slot within its span: a span is a run of adjacent positions of one modality."""
    previous_position = torch.cat([torch.full_like(positions[:, :1], -2), positions[:, :-1]], dim=1)
    previous_modality = torch.cat([torch.full_like(modality[:, :1], -2), modality[:, :-1]], dim=1)
    starts = valid & ((positions != previous_position + 1) | (modality != previous_modality))
    column = torch.arange(positions.shape[1], device=positions.device).expand_as(positions)
    start_column = torch.where(starts, column, torch.zeros_like(column)).cummax(dim=1).values
    return column - start_column


def split_blocks(members: torch.Tensor, block_length: int | None) -> list[torch.Tensor]:
    """Split each row's member slots (b, m) bool, in slot order, into blocks of ``block_length``.

    Returns one (b, m) bool mask per block; None gives one block of all members.
    """
    if block_length is None:
        return [members]
    rank = members.long().cumsum(dim=1) - 1
    count = int(members.sum(dim=1).max()) if members.numel() else 0
    blocks = []
    for start in range(0, count, block_length):
        blocks.append(members & (rank >= start) & (rank < start + block_length))
    return blocks
