"""Memory gradients on this rank's gradient partition: capture, partial Gram, combine and check.

Pure tensor code over the pieces of the local partition (views into the optimizer's gradient); the
caller all-reduces the partial Gram when the partition is sharded. Rows 0..k-1 of the buffer hold the
memory gradients; the task gradient stays where backward left it and is updated in place.

Each pass reads every value once (GEM's floor, docs/PERFORMANCE.md): pieces that lie next to each
other in one storage are merged into runs (ZeRO-3's partition is one run, ZeRO-1/2's a few), and on
CPU the Gram and the update + check are fused loops (distgem.gem.kernels); elsewhere, or without a
C compiler, float64 chunks small enough to stay in cache.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from distgem.gem import kernels, projection


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


@dataclass
class Run:
    """Consecutive pieces adjacent in memory, as one flat writable view, and their place in the buffer."""

    grad: torch.Tensor
    offset: int
    group: int

    @property
    def size(self) -> int:
        return self.grad.numel()


def runs(pieces: Sequence[torch.Tensor], layout: Layout) -> list[Run]:
    """Merge pieces that continue one another in the same storage (same dtype and group) into runs."""
    out: list[Run] = []
    end = None  # (storage pointer, next storage offset, dtype, group) where the current run would continue
    for piece, offset, group in zip(pieces, layout.offsets, layout.groups, strict=True):
        if piece.numel() == 0:
            continue
        piece = piece.view(-1)
        start = (piece.untyped_storage().data_ptr(), piece.storage_offset(), piece.dtype, group)
        if end is not None and start == end and out[-1].offset + out[-1].size == offset:
            last = out[-1].grad
            out[-1].grad = last.as_strided((last.numel() + piece.numel(),), (1,), last.storage_offset())
        else:
            out.append(Run(piece, offset, group))
        end = (start[0], piece.storage_offset() + piece.numel(), piece.dtype, group)
    return out


class MemoryBuffer:
    """k flat gradients over the local partition (the only extra memory GEM needs: k x p), fp32 in training."""

    def __init__(self, k: int, layout: Layout, device: torch.device, dtype: torch.dtype = torch.float32):
        self.layout = layout
        self.data = torch.zeros((k, layout.numel), dtype=dtype, device=device)

    def capture(self, row: int, grads: Sequence[Run], accumulate: bool = False) -> None:
        """Copy (or add) the runs into row `row`."""
        for run in grads:
            view = self.data[row, run.offset:run.offset + run.size]
            if accumulate:
                view.add_(run.grad.to(view.dtype))
            else:
                view.copy_(run.grad)

    def restore(self, row: int, grads: Sequence[Run]) -> None:
        """Write row `row` back into the runs (gradient accumulation kept outside the optimizer)."""
        for run in grads:
            run.grad.copy_(self.data[row, run.offset:run.offset + run.size])


def partial_gram(memories: torch.Tensor, grads: Sequence[Run], groups: int) -> torch.Tensor:
    """(groups, k+1, k+1) float64 Gram of [g_1..g_k, g] over this rank's runs (task gradient last)."""
    k = memories.shape[0]
    gram = torch.zeros((groups, k + 1, k + 1), dtype=torch.float64, device=memories.device)
    for run in grads:
        rows = memories[:, run.offset:run.offset + run.size]
        if not kernels.gram(gram[run.group], rows, run.grad):
            _gram_chunks(gram[run.group], rows, run.grad)
    return gram


def combine(grads: Sequence[Run], memories: torch.Tensor, weights: torch.Tensor, check: bool = False):
    """g <- g + sum_i w[group, i] g_i in place; `weights` (groups, k) is GEM's v or MTF's loss weights.

    With `check`, also returns the (groups, k) float64 partial <g_i, g~> of the gradient as written,
    taken in the same pass (the post-projection check costs no extra read of the partition).
    """
    weights = weights.to(device=memories.device, dtype=torch.float64).contiguous()
    dots = torch.zeros_like(weights) if check else None
    for run in grads:
        rows = memories[:, run.offset:run.offset + run.size]
        out = dots[run.group] if dots is not None else None
        if not kernels.update(rows, run.grad, weights[run.group], out):
            _update_chunks(rows, run.grad, weights[run.group], out)
    return dots


def _chunk(device: torch.device) -> int:
    """Columns per float64 chunk: fits L2 on a CPU core (fastest of 4K..1M here), L2 of a GPU at k <= 4."""
    return 1 << 16 if device.type == "cpu" else 1 << 20


def _gram_chunks(out: torch.Tensor, rows: torch.Tensor, grad: torch.Tensor) -> None:
    for block in projection.stacked_blocks(rows, grad, _chunk(rows.device)):
        out.addmm_(block, block.T)


def _update_chunks(rows: torch.Tensor, grad: torch.Tensor, weights: torch.Tensor, dots: torch.Tensor | None) -> None:
    """The torch path of kernels.update: float64 per chunk, rounded once to grad's dtype."""
    for start in range(0, grad.numel(), _chunk(rows.device)):
        stop = min(start + _chunk(rows.device), grad.numel())
        block = rows[:, start:stop].to(torch.float64)
        grad[start:stop].copy_(weights @ block + grad[start:stop])
        if dots is not None:
            dots += block @ grad[start:stop].to(torch.float64)
