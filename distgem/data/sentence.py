"""The records readers yield: plain data, no behaviour beyond what the formats share."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class TaggedSentence:
    """A tagged sentence: its words, one tag per word, and where each word stands in the file."""

    words: tuple[str, ...]
    tags: tuple[str, ...]
    line: int
    word_lines: tuple[int, ...] = field(default=(), repr=False)
    multiword_tokens: int = 0
    empty_nodes: int = 0


@dataclass(frozen=True)
class TextLine:
    """One sentence of a monolingual corpus (one sentence per line)."""

    text: str
    line: int


@dataclass(frozen=True)
class SentencePair:
    """One aligned pair: `source` translates `target` (line numbers are equal for two-file corpora)."""

    source: str
    target: str
    line: int
