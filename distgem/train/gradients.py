"""This rank's gradients between the backward passes and the optimizer step.

DeepSpeed reduces each backward into this rank's partition of the gradient (all of it at ZeRO 0). The step keeps
two buffers beside it, in one flat layout of that partition: the memory gradients, one row per constraint (kept on
steps that do not recompute them), and, with gradient accumulation, the task gradient summed over micro-batches
(each backward overwrites the partition). The layout is fixed at the first backward: ZeRO 1-3 lay the partition
out only then, so a checkpoint's memory rows wait here until it exists.
"""

from __future__ import annotations

import torch

from distgem.distributed.deepspeed import GradientPartition
from distgem.errors import ConfigError
from distgem.gem.buffer import Layout, MemoryBuffer, runs
from distgem.model.multitask import parameter_group
from distgem.train.methods import StepView
from distgem.train.reduction import Reduction


class Gradients:
    def __init__(self, engine, names: dict[int, str], device, rows: int, accumulation: int, per_layer: bool, timer):
        """`rows`: memory constraints (0: no memory buffer); `per_layer`: the layout names each piece's layer
        group (GEM's per-layer projection); `timer`: the step's phase timer (bench/)."""
        self.partition = GradientPartition(engine, names)
        self.device, self.rows, self.accumulation, self.per_layer = device, rows, accumulation, per_layer
        self.timer = timer
        self.layout: Layout | None = None
        self.memory: MemoryBuffer | None = None  # rows 0..k-1: the memory gradients
        self.task: MemoryBuffer | None = None  # the task gradient accumulated over micro-batches
        self._restored: torch.Tensor | None = None  # memory rows from a checkpoint, until the layout exists

    @property
    def has_memory(self) -> bool:
        """Whether memory gradients exist (computed at an earlier step, or restored from a checkpoint)."""
        return self.memory is not None or self._restored is not None

    def zero(self) -> None:
        """Zero the partition before a micro-batch's backward."""
        self.partition.zero()

    def capture(self, row: int | None, accumulate: bool) -> None:
        """After a micro-batch's backward: copy (`accumulate`: add) the partition into memory row `row`, or with
        `row` None into the task gradient's accumulation buffer (without accumulation the task gradient stays
        where DeepSpeed reduced it)."""
        pieces = self.partition.pieces()
        if self.layout is None:
            self._lay_out(pieces)
        buffer = self.memory if row is not None else self.task
        if buffer is not None:
            with self.timer.phase("capture"):
                buffer.capture(row or 0, runs(pieces, self.layout), accumulate=accumulate)

    def view(self, reduction: Reduction) -> StepView:
        """The task gradient (restored from its accumulation buffer) and what a method may touch."""
        pieces = self.partition.pieces()  # stage 0: untouched parameters get zero gradients, in every method
        grads = runs(pieces, self.layout) if self.memory is not None or self.task is not None else []
        if self.task is not None:
            self.task.restore(0, grads)
        memories = self.memory.data if self.memory is not None else None
        return StepView(grads, memories, self.layout, self.values, self.partition, reduction)

    def finite(self, precision: str) -> bool:
        """Whether the partition holds only finite values: one read of it (a sum is not finite exactly when some
        value is not, or when finite values overflow it, which is divergence too). fp16 overflows are
        DeepSpeed's to detect and skip, with the loss scale."""
        if precision == "fp16":
            return True
        pieces = [p for p in self.partition.pieces() if p.numel()]
        return not pieces or bool(torch.isfinite(torch.stack([p.sum(dtype=torch.float32) for p in pieces]).sum()))

    def discard(self) -> None:
        """Zero the gradient the optimizer reads: this step changes no weight."""
        for piece in self.partition.pieces():
            piece.zero_()

    def values(self) -> torch.Tensor:
        """A float32 copy of this rank's trainable values in the buffers' layout, padding zeroed."""
        values = torch.cat([t.float() for t in self.partition.values()])
        if values.numel() != self.layout.numel:
            raise ConfigError(
                f"eval.predicted_change / method.gem.target: update: the optimizer's partition holds "
                f"{values.numel()} values but the gradient's {self.layout.numel} (this DeepSpeed "
                f"version lays them out differently)"
            )
        padding = self.partition.padding()  # on the values' device, built once
        if padding.numel():
            values[padding] = 0.0
        return values

    def state(self) -> torch.Tensor | None:
        """The memory rows, for a checkpoint."""
        return self.memory.data if self.memory is not None else self._restored

    def restore(self, memory: torch.Tensor) -> None:
        """Memory rows from a checkpoint: copied in now, or when the first backward lays the partition out."""
        if self.memory is not None:
            self.memory.data.copy_(memory)
        else:
            self._restored = memory

    def _lay_out(self, pieces) -> None:
        groups = None
        if self.per_layer:  # each piece's layer group; padding is a group of its own
            groups = [parameter_group(n) if n else "padding" for n in self.partition.piece_names()]
        self.layout = Layout.of(pieces, groups)
        if self.rows:
            self.memory = MemoryBuffer(self.rows, self.layout, self.device)
            if self._restored is not None:
                self.memory.data.copy_(self._restored)
                self._restored = None
        if self.accumulation > 1:
            self.task = MemoryBuffer(1, self.layout, self.device)
