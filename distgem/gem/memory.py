"""Memory gradients on this rank's gradient partition: capture, partial Gram, combine and project.

Pure tensor code over lists of gradient pieces (views into the optimizer's partition); the caller
all-reduces the partial Gram when the partition is sharded. Rows 0..k-1 of the buffer hold the
memory gradients; the task gradient stays where backward left it (the pieces) and is updated in place.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass
class Layout:
    """Where each piece sits in the flat buffer and which parameter group (per-layer QP) it belongs to."""

    offsets: list[int]
    sizes: list[int]
    groups: list[int]
    group_names: list[str]

    @property
    def numel(self) -> int:
        return self.offsets[-1] + self.sizes[-1] if self.sizes else 0

    @classmethod
    def of(cls, pieces: Sequence[torch.Tensor], group_names: Sequence[str] | None = None) -> "Layout":
        """Layout for pieces; `group_names[j]` names piece j's group (None: one group for everything)."""
        sizes = [p.numel() for p in pieces]
        offsets = [sum(sizes[:j]) for j in range(len(sizes))]
        if group_names is None:
            return cls(offsets, sizes, [0] * len(pieces), ["all"])
        names = sorted(set(group_names), key=list(group_names).index)
        return cls(offsets, sizes, [names.index(n) for n in group_names], names)


class MemoryBuffer:
    """k flat fp32 gradients over the local partition (the only extra memory GEM needs: k x p)."""

    def __init__(self, k: int, layout: Layout, device: torch.device):
        self.layout = layout
        self.data = torch.zeros((k, layout.numel), dtype=torch.float32, device=device)

    def capture(self, row: int, pieces: Sequence[torch.Tensor], accumulate: bool = False) -> None:
        """Copy (or add) the pieces into row `row`."""
        target = self.data[row]
        for piece, offset, size in zip(pieces, self.layout.offsets, self.layout.sizes):
            view = target[offset:offset + size]
            if accumulate:
                view.add_(piece.to(torch.float32))
            else:
                view.copy_(piece)

    def views(self, row: int) -> list[torch.Tensor]:
        return [self.data[row, o:o + n] for o, n in zip(self.layout.offsets, self.layout.sizes)]


def partial_gram(memories: torch.Tensor, pieces: Sequence[torch.Tensor], layout: Layout) -> torch.Tensor:
    """(groups, k+1, k+1) float64 Gram of [g_1..g_k, g] over this rank's pieces (task gradient last)."""
    k = memories.shape[0]
    gram = torch.zeros((len(layout.group_names), k + 1, k + 1), dtype=torch.float64, device=memories.device)
    for piece, offset, size, group in zip(pieces, layout.offsets, layout.sizes, layout.groups):
        stacked = torch.cat([memories[:, offset:offset + size], piece.view(1, -1).to(memories.dtype)]).double()
        gram[group] += stacked @ stacked.T
    return gram


def combine(pieces: Sequence[torch.Tensor], memories: torch.Tensor, weights: torch.Tensor, layout: Layout) -> None:
    """g <- g + sum_i w[group, i] g_i, in place; `weights` is (groups, k) (GEM's v, or MTF's loss weights)."""
    weights = weights.to(memories.dtype)
    for piece, offset, size, group in zip(pieces, layout.offsets, layout.sizes, layout.groups):
        update = weights[group] @ memories[:, offset:offset + size]
        piece.add_(update.to(piece.dtype))


def memory_dots(memories: torch.Tensor, pieces: Sequence[torch.Tensor], layout: Layout) -> torch.Tensor:
    """(groups, k) float64 partial inner products <g_i, g> over the pieces (the post-projection check)."""
    dots = torch.zeros((len(layout.group_names), memories.shape[0]), dtype=torch.float64, device=memories.device)
    for piece, offset, size, group in zip(pieces, layout.offsets, layout.sizes, layout.groups):
        dots[group] += (memories[:, offset:offset + size].double() @ piece.double())
    return dots
