"""CoNLL-U (UD 2.x) reader: words and UPOS tags; multiword ranges and empty nodes are parsed, not tagged."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator

from distgem.data.lines import iter_blocks
from distgem.data.sentence import TaggedSentence
from distgem.errors import InputError

UPOS_TAGS = (
    "ADJ",
    "ADP",
    "ADV",
    "AUX",
    "CCONJ",
    "DET",
    "INTJ",
    "NOUN",
    "NUM",
    "PART",
    "PRON",
    "PROPN",
    "PUNCT",
    "SCONJ",
    "SYM",
    "VERB",
    "X",
)
_UPOS = frozenset(UPOS_TAGS)
_WORD_ID = re.compile(r"[1-9][0-9]*")
_RANGE_ID = re.compile(r"([1-9][0-9]*)-([1-9][0-9]*)")
_EMPTY_ID = re.compile(r"(0|[1-9][0-9]*)\.([1-9][0-9]*)")
ID, FORM, UPOS = 0, 1, 3


def read_conllu(path: str | os.PathLike) -> Iterator[TaggedSentence]:
    """Stream the sentences of a CoNLL-U file with UPOS tags, validating as it goes."""
    count = 0
    for block in iter_blocks(path):
        sentence = _parse_sentence(path, block)
        if sentence is not None:
            count += 1
            yield sentence
    if count == 0:
        raise InputError(path, None, "no sentences (is this a CoNLL-U file?)")


def _parse_sentence(path, block: list[tuple[int, str]]) -> TaggedSentence | None:
    words: list[str] = []
    tags: list[str] = []
    lines: list[int] = []
    ranges: list[tuple[int, int, int]] = []  # (first, last, line)
    empty = 0
    for number, text in block:
        if text.startswith("#"):
            continue
        cols = text.split("\t")
        if len(cols) != 10:
            raise InputError(path, number, f"expected 10 tab-separated columns, found {len(cols)}")
        token_id = cols[ID]
        if _WORD_ID.fullmatch(token_id):
            expected = len(words) + 1
            if int(token_id) != expected:
                raise InputError(path, number, f"word ID {token_id} out of sequence (expected {expected})")
            if cols[UPOS] not in _UPOS:
                raise InputError(path, number, f"unknown UPOS tag {cols[UPOS]!r} (not one of the 17 UD tags)")
            if not cols[FORM]:
                raise InputError(path, number, "empty FORM column")
            words.append(cols[FORM])
            tags.append(cols[UPOS])
            lines.append(number)
        elif match := _RANGE_ID.fullmatch(token_id):
            first, last = int(match[1]), int(match[2])
            if last <= first or first != len(words) + 1:
                raise InputError(path, number, f"multiword range {token_id} does not start at word {len(words) + 1}")
            ranges.append((first, last, number))
        elif _EMPTY_ID.fullmatch(token_id):
            empty += 1
        else:
            raise InputError(path, number, f"non-numeric ID {token_id!r} (expected N, N-M or N.M)")
    if not words:
        if lines or ranges or empty:
            raise InputError(path, block[0][0], "sentence has no words")
        return None  # a block of comments only, e.g. a trailing `# newdoc`
    for first, last, number in ranges:
        if last > len(words):
            raise InputError(path, number, f"multiword range {first}-{last}: words {len(words) + 1}-{last} are missing")
    return TaggedSentence(tuple(words), tuple(tags), lines[0], tuple(lines), len(ranges), empty)
