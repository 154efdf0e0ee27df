"""Where GEM's gradients live: this rank's partition as runs of memory, and the buffer of k memory gradients.

The partition comes as pieces (views into the optimizer's gradient, distgem.distributed.deepspeed);
pieces that continue one another in one storage are merged into runs (ZeRO-3's partition is one run,
ZeRO-1/2's a few), so that each pass over them is one loop per run. Rows 0..k-1 of the buffer hold the
memory gradients in the same layout; the task gradient stays where backward left it.
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
            view = self.data[row, run.offset : run.offset + run.size]
            if accumulate:
                view.add_(run.grad.to(view.dtype))
            else:
                view.copy_(run.grad)

    def restore(self, row: int, grads: Sequence[Run]) -> None:
        """Write row `row` back into the runs (gradient accumulation kept outside the optimizer)."""
        for run in grads:
            run.grad.copy_(self.data[row, run.offset : run.offset + run.size])
