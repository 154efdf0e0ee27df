"""Counts the collectives each rank issues during each training step: a diagnostic kept outside distgem.

    python bench/collectives.py --out DIR [launch/train.py arguments]      # also under torchrun

Wraps torch.distributed's collectives before DeepSpeed binds them, labels each with the step that issued
it (`step 3`, or `setup` / `between steps`) by wrapping Trainer.step, and writes DIR/rank<r>.json when the
run leaves its process group: {phase: [[op, bytes this rank contributed], ...]}. tests/distributed and
bench/comm.py read it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a checkout

import torch  # noqa: E402


class CommCounter:
    """Counts the collectives this rank issues, per phase (e.g. `step 7`), by wrapping torch.distributed.

    Installed before DeepSpeed binds its functions; nested calls (all_gather_object -> all_gather) count
    once; the log is DIR/rank<r>.json.
    """

    OPS = (
        "all_reduce",
        "all_reduce_coalesced",
        "reduce",
        "reduce_scatter",
        "reduce_scatter_tensor",
        "_reduce_scatter_base",
        "all_gather",
        "all_gather_into_tensor",
        "_all_gather_base",
        "broadcast",
        "all_to_all_single",
        "all_to_all",
        "gather",
        "scatter",
        "all_gather_object",
        "broadcast_object_list",
    )

    def __init__(self, directory: str):
        import threading

        self.directory = Path(directory)
        self.phase = "setup"
        self.records: dict[str, list] = {}
        self._depth = threading.local()

    def install(self) -> None:
        import torch.distributed as dist
        from torch.distributed import distributed_c10d

        for module in (dist, distributed_c10d):
            for name in self.OPS:
                original = getattr(module, name, None)
                if original is not None and not getattr(original, "_distgem_counted", False):
                    setattr(module, name, self._wrap(name, original))

    def _wrap(self, name, original):
        def counted(*args, **kwargs):
            depth = getattr(self._depth, "value", 0)
            if depth == 0:
                self.records.setdefault(self.phase, []).append([name, _payload_bytes(args, kwargs)])
            self._depth.value = depth + 1
            try:
                return original(*args, **kwargs)
            finally:
                self._depth.value = depth

        counted._distgem_counted = True
        return counted

    def dump(self, rank: int) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / f"rank{rank}.json").write_text(json.dumps(self.records))


def _payload_bytes(args, kwargs) -> int:
    """Bytes this rank contributes: the input tensor (the last tensor argument; lists summed)."""
    values = list(args) + list(kwargs.values())
    for value in reversed(values):
        if isinstance(value, torch.Tensor):
            return value.numel() * value.element_size()
        if isinstance(value, (list, tuple)) and value and all(isinstance(v, torch.Tensor) for v in value):
            return sum(v.numel() * v.element_size() for v in value)
    return 0


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] != "--out":
        raise SystemExit("usage: bench/collectives.py --out DIR [launch/train.py arguments]")
    counter = CommCounter(argv[1])
    counter.install()  # before distgem imports DeepSpeed, which binds the functions it calls

    from distgem.cli import main as distgem
    from distgem.distributed import world
    from distgem.train import engine

    step = engine.Trainer.step

    def counted_step(self, index: int):
        counter.phase = f"step {index + 1}"
        try:
            return step(self, index)
        finally:
            counter.phase = "between steps"

    shutdown = world.shutdown

    def shutdown_and_dump(wait: bool = True) -> None:
        import torch.distributed as dist

        counter.dump(dist.get_rank() if dist.is_initialized() else 0)
        shutdown(wait)

    engine.Trainer.step = counted_step
    world.shutdown = shutdown_and_dump
    return distgem(["train", *argv[2:]])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
