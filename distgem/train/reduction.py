"""What one training step reports, summed over the ranks in a single all-reduce.

Each part of the step adds a named slot (the losses, the stop flags, GEM's post-projection check, the
predicted changes); `sum` concatenates them, issues one all-reduce and hands every slot back by name.
A step costs one small collective however many things it reports.
"""

from __future__ import annotations

import torch


class Reduction:
    """Named float64 slots, summed over ranks together."""

    def __init__(self):
        self._slots: dict[str, torch.Tensor] = {}

    def add(self, name: str, values: torch.Tensor) -> None:
        if name in self._slots:
            raise ValueError(f"slot {name!r} added twice")
        self._slots[name] = values.detach().to(torch.float64).flatten()

    def sum(self, world) -> dict[str, torch.Tensor]:
        """Every slot summed over ranks (on the host), in one all-reduce on the device."""
        names = list(self._slots)
        total = world.sum(torch.cat([self._slots[name].to(world.device) for name in names])).cpu()
        out, start = {}, 0
        for name in names:
            size = self._slots[name].numel()
            out[name] = total[start : start + size]
            start += size
        return out
