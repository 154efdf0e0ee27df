"""CoNLL 2002/2003 NER reader: word first, tag last, any middle columns; IOB1 normalised to IOB2."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence

from distgem.data.lines import iter_blocks
from distgem.data.sentence import TaggedSentence
from distgem.errors import InputError

_TAG = re.compile(r"O|[BI]-[^\s-][^\s]*")
DOCSTART = "-DOCSTART-"


def read_conll(path: str | os.PathLike) -> Iterator[TaggedSentence]:
    """Stream the sentences of a CoNLL NER file with IOB2 tags (IOB1 input is converted)."""
    columns: tuple[int, int] | None = None  # (column count, line) of the first token line
    count = 0
    for block in iter_blocks(path):
        words: list[str] = []
        tags: list[str] = []
        lines: list[int] = []
        for number, text in block:
            cols = text.split()
            if cols[0] == DOCSTART:
                continue
            if len(cols) < 2:
                raise InputError(path, number, f"expected at least 2 columns (word ... tag), found {len(cols)}")
            if columns is None:
                columns = (len(cols), number)
            elif len(cols) != columns[0]:
                raise InputError(path, number, f"found {len(cols)} columns, but line {columns[1]} has {columns[0]}")
            if not _TAG.fullmatch(cols[-1]):
                raise InputError(path, number, f"invalid BIO tag {cols[-1]!r} (expected O, B-TYPE or I-TYPE)")
            words.append(cols[0])
            tags.append(cols[-1])
            lines.append(number)
        if words:
            count += 1
            yield TaggedSentence(tuple(words), tuple(to_iob2(tags)), lines[0], tuple(lines))
    if count == 0:
        raise InputError(path, None, "no sentences (is this a CoNLL NER file?)")


def to_iob2(tags: Sequence[str]) -> list[str]:
    """Convert IOB1 (I- may open an entity) to IOB2 (every entity opens with B-); IOB2 is unchanged."""
    out: list[str] = []
    previous = "O"
    for tag in tags:
        if tag.startswith("I-") and (previous == "O" or previous[2:] != tag[2:]):
            tag = "B-" + tag[2:]
        out.append(tag)
        previous = tag
    return out


def entity_spans(tags: Sequence[str]) -> list[tuple[str, int, int]]:
    """The (type, start, end) spans of an IOB2 sequence, end exclusive."""
    spans: list[tuple[str, int, int]] = []
    for i, tag in enumerate(tags):
        if tag.startswith("B-"):
            spans.append((tag[2:], i, i + 1))
        elif tag.startswith("I-") and spans and spans[-1][2] == i and spans[-1][0] == tag[2:]:
            spans[-1] = (tag[2:], spans[-1][1], i + 1)
    return spans
