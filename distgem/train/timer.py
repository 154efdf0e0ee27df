"""Wall time per phase of a training step (forward/backward, capture, Gram, ...), for the benchmarks.

Off by default, and then free: `phase()` hands back one shared null context, so a normal run neither
reads the clock nor synchronises. DISTGEM_PROFILE=1 turns it on; each phase then ends with a device
synchronisation, so that queued CUDA work is charged to the phase that queued it (on CPU there is
nothing to wait for).
"""

from __future__ import annotations

import contextlib
import os
import time

import torch

ENV = "DISTGEM_PROFILE"
_NULL = contextlib.nullcontext()


class PhaseTimer:
    """Milliseconds per named phase, summed until `take()`."""

    def __init__(self, device: torch.device, enabled: bool | None = None):
        self.enabled = os.environ.get(ENV, "0") not in ("", "0") if enabled is None else enabled
        self.cuda = device.type == "cuda"
        self.totals: dict[str, float] = {}

    def phase(self, name: str):
        """Context manager timing one phase (a no-op unless enabled)."""
        return self._timed(name) if self.enabled else _NULL

    @contextlib.contextmanager
    def _timed(self, name: str):
        self._sync()
        start = time.perf_counter()
        try:
            yield
        finally:
            self._sync()
            self.totals[name] = self.totals.get(name, 0.0) + 1000 * (time.perf_counter() - start)

    def take(self) -> dict[str, float]:
        """`time/<phase>_ms` of everything timed since the last call (empty when disabled)."""
        out = {f"time/{name}_ms": ms for name, ms in self.totals.items()}
        self.totals = {}
        return out

    def _sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()
