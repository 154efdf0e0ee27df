"""Monolingual (one sentence per line) and parallel (two aligned files, or a two-column TSV) readers."""

from __future__ import annotations

import os
from collections.abc import Iterator
from itertools import zip_longest

from distgem.data.lines import iter_lines
from distgem.data.sentence import SentencePair, TextLine
from distgem.errors import InputError


def read_text(path: str | os.PathLike) -> Iterator[TextLine]:
    """Stream the non-blank lines of a one-sentence-per-line file (blank lines are not sentences)."""
    count = 0
    for number, text in iter_lines(path):
        if text.strip():
            count += 1
            yield TextLine(text.strip(), number)
    if count == 0:
        raise InputError(path, None, "no sentences (every line is blank)")


def read_parallel(source: str | os.PathLike, target: str | os.PathLike | None = None) -> Iterator[SentencePair]:
    """Stream aligned pairs from two files (line i translates line i) or, with one path, a two-column TSV."""
    if target is None:
        yield from _read_tsv(source)
        return
    count = 0
    for left, right in zip_longest(iter_lines(source), iter_lines(target)):
        if left is None or right is None:
            _raise_length_mismatch(source, target, left, right)
        (number, src), (_, tgt) = left, right
        if not src.strip() and not tgt.strip():
            continue
        for path, text, other in ((source, src, target), (target, tgt, source)):
            if not text.strip():
                raise InputError(path, number, f"empty sentence, but line {number} of {os.fspath(other)} is not empty")
        count += 1
        yield SentencePair(src.strip(), tgt.strip(), number)
    if count == 0:
        raise InputError(source, None, "no sentence pairs (every line is blank)")


def _read_tsv(path) -> Iterator[SentencePair]:
    count = 0
    for number, text in iter_lines(path):
        if not text.strip():
            continue
        cols = text.split("\t")
        if len(cols) != 2 or not cols[0].strip() or not cols[1].strip():
            raise InputError(path, number, f"expected 2 non-empty tab-separated columns, found {len(cols)}")
        count += 1
        yield SentencePair(cols[0].strip(), cols[1].strip(), number)
    if count == 0:
        raise InputError(path, None, "no sentence pairs (every line is blank)")


def _raise_length_mismatch(source, target, left, right) -> None:
    src_count = _count_lines(source)
    tgt_count = _count_lines(target)
    # point at the first line the shorter file lacks
    shorter, number = (target, tgt_count + 1) if right is None else (source, src_count + 1)
    raise InputError(
        shorter,
        number,
        f"parallel files differ in length: {os.fspath(source)} has {src_count} lines, "
        f"{os.fspath(target)} has {tgt_count}",
    )


def _count_lines(path) -> int:
    return sum(1 for _ in iter_lines(path))
