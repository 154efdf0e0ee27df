"""Lazy, memory-mapped views of cached corpora: one row becomes Python lists only when it is indexed.

A task source indexes `rows[i]` per batch, so a run over millions of sentences keeps only the pages
it touches resident (the Arrow files are memory-mapped by `datasets`), never a list of every example.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Sequence

import pyarrow as pa
import pyarrow.compute as pc


class ArrowRows(Sequence):
    """Rows [start, stop) of some token-id columns of a dataset: `rows[i]` is one list, or a tuple of lists."""

    def __init__(self, dataset, columns: Sequence[str], start: int = 0, stop: int | None = None):
        # the pyarrow table behind the dataset: its chunks are views of the memory-mapped files
        table = dataset if isinstance(dataset, pa.Table) else dataset.data.table
        self._table, self._names = table, tuple(columns)
        self._columns = [table.column(name) for name in columns]
        self.start = start
        self.stop = table.num_rows if stop is None else stop
        if not 0 <= self.start <= self.stop <= table.num_rows:
            raise ValueError(f"rows [{start}, {stop}) outside a table of {table.num_rows}")

    def __len__(self) -> int:
        return self.stop - self.start

    def __getitem__(self, index):
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self))
            if step != 1:
                raise ValueError("ArrowRows slices must be contiguous")
            return ArrowRows(self._table, self._names, self.start + start, self.start + max(start, stop))
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"row {index} of {len(self)}")
        values = [column[self.start + index].as_py() for column in self._columns]
        return values[0] if len(values) == 1 else tuple(values)

    def lengths(self):
        """Token count of every row (the longest column of a pair), read from the Arrow offsets: no row is decoded."""
        import numpy as np
        import torch

        per_column = [
            pc.list_value_length(column.slice(self.start, len(self))).to_numpy(zero_copy_only=False)
            for column in self._columns
        ]
        return torch.from_numpy(np.maximum.reduce(per_column).astype(np.int64))


class ConcatRows(Sequence):
    """Several row sequences end to end (MLM over all languages) without copying any of them."""

    def __init__(self, parts: Sequence[Sequence]):
        self.parts = [p for p in parts if len(p)]
        self.ends: list[int] = []
        total = 0
        for part in self.parts:
            total += len(part)
            self.ends.append(total)

    def __len__(self) -> int:
        return self.ends[-1] if self.ends else 0

    def __getitem__(self, index):
        if isinstance(index, slice):
            raise TypeError("ConcatRows does not slice")
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"row {index} of {len(self)}")
        part = bisect.bisect_right(self.ends, index)
        return self.parts[part][index - (self.ends[part - 1] if part else 0)]

    def lengths(self):
        import torch

        return torch.cat([lengths_of(part) for part in self.parts]) if self.parts else torch.zeros(0, dtype=torch.long)


def lengths_of(rows: Sequence):
    """Token counts of a row sequence: Arrow views read their offsets, in-memory rows are measured."""
    import torch

    if hasattr(rows, "lengths"):
        return rows.lengths()
    return torch.tensor([max(map(len, r)) if isinstance(r, tuple) else len(r) for r in rows], dtype=torch.long)


def iter_rows(dataset, columns: Sequence[str] | None = None, batch_size: int = 1000) -> Iterator[dict]:
    """Rows as dicts of Python values, read a batch of Arrow rows at a time."""
    names = list(columns) if columns is not None else list(dataset.column_names)
    view = dataset.select_columns(names) if columns is not None else dataset
    for batch in view.iter(batch_size=batch_size):
        for i in range(len(batch[names[0]])):
            yield {name: batch[name][i] for name in names}
