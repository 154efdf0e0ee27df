"""Batch order: global batches drawn from per-epoch permutations that depend only on (seed, task, epoch).

Every rank draws the same global batch and keeps its own contiguous slice (distgem.distributed.world), so the
ranks read disjoint parts of each epoch whose union is the whole epoch, and N ranks see exactly the batch one
rank would. The position (epoch, offset) is part of every checkpoint.
"""

from __future__ import annotations

import zlib

import torch


class BatchStream:
    """Endless global batches of example indices for one task; epochs follow each other seamlessly."""

    def __init__(self, size: int, batch_size: int, seed: int, name: str, lengths: torch.Tensor | None = None):
        if size <= 0:
            raise ValueError(f"task {name!r} has no examples")
        if lengths is not None and len(lengths) != size:
            raise ValueError(f"task {name!r}: {len(lengths)} lengths for {size} examples")
        self.size, self.batch_size, self.seed, self.name = size, batch_size, seed, name
        self.lengths = lengths
        self.epoch, self.offset = 0, 0
        self._order: torch.Tensor | None = None

    def order(self, epoch: int) -> torch.Tensor:
        """The permutation of epoch `epoch` (a pure function of seed, task name and epoch).

        A tensor, not a list: at 7M examples a list of Python ints would cost ~250 MB per rank.
        With `lengths`, the permutation is regrouped so that each batch holds examples of similar length."""
        generator = torch.Generator().manual_seed(zlib.crc32(f"{self.seed}:{self.name}:{epoch}".encode()))
        order = torch.randperm(self.size, generator=generator)
        return order if self.lengths is None else group_by_length(order, self.lengths, self.batch_size, generator)

    def next(self) -> list[int]:
        """The next global batch; a batch that crosses an epoch end continues into the next epoch."""
        batch: list[int] = []
        while len(batch) < self.batch_size:
            if self._order is None:
                self._order = self.order(self.epoch)
            take = min(self.batch_size - len(batch), self.size - self.offset)
            batch += self._order[self.offset : self.offset + take].tolist()
            self.offset += take
            if self.offset == self.size:
                self.epoch, self.offset, self._order = self.epoch + 1, 0, None
        return batch

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "offset": self.offset, "size": self.size, "batch_size": self.batch_size}

    def load_state_dict(self, state: dict) -> None:
        if (state["size"], state["batch_size"]) != (self.size, self.batch_size):
            raise ValueError(
                f"task {self.name!r}: checkpoint was written for {state['size']} examples in batches "
                f"of {state['batch_size']}, this run has {self.size} in batches of {self.batch_size}"
            )
        self.epoch, self.offset, self._order = state["epoch"], state["offset"], None


MEGABATCH = 50  # batches sorted together (Hugging Face's group_by_length uses the same multiple)


def group_by_length(order: torch.Tensor, lengths: torch.Tensor, batch_size: int, generator) -> torch.Tensor:
    """The same examples in an order whose consecutive batches hold similar lengths (less padding).

    Cuts the random order into megabatches of MEGABATCH batches, sorts each by length, then shuffles
    the batches within it: still a permutation (every example once per epoch), still a pure function
    of the generator, so shards, resume and N-rank equivalence are unchanged."""
    chunk = batch_size * MEGABATCH
    out = []
    for start in range(0, len(order), chunk):
        mega = order[start : start + chunk]
        mega = mega[torch.argsort(lengths[mega], descending=True, stable=True)]
        batches = list(mega.split(batch_size))
        shuffle = torch.randperm(len(batches), generator=generator).tolist()
        out += [batches[i] for i in shuffle]
    return torch.cat(out) if out else order
