"""This rank's partition of the gradient and of the weights, whatever the ZeRO stage.

`GradientPartition.pieces()`: writable views of *this rank's* reduced gradient, in a fixed order
(0: every parameter's full .grad; 1/2: the optimizer's averaged partition; 3: each parameter's local
partition); `values()`: the fp32 weights the optimizer updates, laid out the same way. No rank ever
gathers a full gradient here. With distgem/distributed/world.py, the only code that reads DeepSpeed's internals.
"""
from __future__ import annotations

import torch
import torch.distributed as dist


class GradientPartition:
    """This rank's reduced gradient as a list of writable pieces, with the parameter name of each."""

    def __init__(self, engine, names: dict[int, str]):
        self.engine = engine
        self.stage = engine.zero_optimization_stage()
        self.names = names  # id(param) -> name
        self._layout: list[str] | None = None
        self._padding: torch.Tensor | None = None

    def zero(self) -> None:
        """Forget the previous task's gradient before the next task's backward."""
        if self.stage == 0:
            for param in self.engine.module.parameters():
                if param.grad is not None:
                    param.grad.zero_()
        else:
            self.engine.optimizer.zero_grad()
            if self.stage == 3:
                # ZeRO-3 keeps each parameter's partition in one flat buffer and only *copies* into the
                # slots of parameters this backward touches: clear it, or an untouched parameter (the
                # tagging head during MLM) would carry the previous task's gradient into this one.
                self.engine.optimizer.grad_partitions_flat_buffer.zero_()

    def pieces(self) -> list[torch.Tensor]:
        """Views of the local gradient partition, in the same order every call (call after backward)."""
        if self.stage == 0:
            out = []
            for param in self._trainable():
                if param.grad is None:  # untouched by this task: zeros, consistently on every rank
                    param.grad = torch.zeros_like(param)
                out.append(param.grad.view(-1))
            return out
        groups = self.engine.optimizer.averaged_gradients
        return [t.view(-1) for i in sorted(groups) for t in groups[i]]

    def values(self) -> list[torch.Tensor]:
        """This rank's trainable values laid out as `pieces()` (ZeRO 1-3: the fp32 master partition the
        optimizer updates, one flat tensor per group, padding included: see `padding()`)."""
        if self.stage == 0:
            return [p.detach().view(-1) for p in self._trainable()]
        optimizer = self.engine.optimizer
        flat = optimizer.fp32_partitioned_groups_flat if self.stage == 3 else optimizer.single_partition_of_fp32_groups
        return [t.detach().view(-1) for t in flat]

    def padding(self) -> torch.Tensor:
        """Positions in the values' layout (`values()` laid end to end) that hold no parameter.

        ZeRO-3 pads each parameter's partition on the last ranks to an equal size and leaves that
        padding uninitialised (DeepSpeed allocates it with torch.empty): garbage, sometimes NaN, which
        a difference of two copies of the values (a predicted change, an update target) must not read.
        ZeRO 1-2 pad with zeros and stage 0 does not pad: empty for them."""
        if self._padding is None:
            positions, start = [], 0
            if self.stage == 3:
                device = self.values()[0].device
                for group in self.engine.optimizer.fp16_groups:
                    for param in group:
                        rank = dist.get_rank(group=param.ds_process_group) if dist.is_initialized() else 0
                        size = param.ds_tensor.ds_numel  # this rank's partition, padding included
                        valid = max(0, min(size, param.ds_numel - rank * size))
                        positions.append(torch.arange(start + valid, start + size, device=device))
                        start += size
            self._padding = torch.cat(positions) if positions else torch.zeros(0, dtype=torch.long)
        return self._padding

    def publish_values(self) -> None:
        """After `values()` were edited in place: make the model's weights match them (ZeRO 1-2: copy this
        rank's partition to the low-precision weights and gather them; ZeRO 3: refresh the partitioned
        weights and re-gather the persistent ones). Every rank must call it."""
        optimizer = self.engine.optimizer
        if self.stage in (1, 2):
            optimizer.update_lp_params()
        elif self.stage == 3:
            optimizer._partition_all_parameters()  # persistent weights stay gathered: release, then re-gather
            for group in range(len(optimizer.fp16_groups)):
                optimizer._reassign_or_swap_out_partitioned_parameters(group)
            if optimizer.persistent_parameters:
                optimizer.persistent_parameters[0].all_gather(optimizer.persistent_parameters)
            optimizer.invalidate_secondary_tensor()

    def piece_names(self) -> list[str]:
        """The parameter name of every piece (for per-layer grouping); padding pieces are named ''."""
        if self._layout is None:
            if self.stage == 0:
                params = [list(self._trainable())]
            elif self.stage == 3:
                params = self.engine.optimizer.fp16_groups
            else:
                params = self.engine.optimizer.params_in_partition
            groups = self.engine.optimizer.averaged_gradients if self.stage else {0: self.pieces()}
            layout = []
            for i, group in enumerate(params):
                names = [self.names[id(p)] for p in group]
                layout += names + [""] * (len(groups[i]) - len(names))
            self._layout = layout
        return self._layout

    def _trainable(self):
        return (p for p in self.engine.module.parameters() if p.requires_grad)
