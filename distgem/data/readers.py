"""One entry point over the format readers: detect a file's format, read it, summarise it."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

from distgem.data.conll import read_conll
from distgem.data.conllu import read_conllu
from distgem.data.lines import iter_lines
from distgem.data.text import read_parallel, read_text
from distgem.errors import InputError, UserError

READERS = {"conllu": read_conllu, "conll": read_conll, "text": read_text, "parallel": read_parallel}
FORMATS = ("auto", *READERS)
_SUFFIXES = {".conllu": "conllu", ".txt": "text", ".tsv": "parallel"}

__all__ = [
    "READERS",
    "FORMATS",
    "detect_format",
    "summarise",
    "read_conllu",
    "read_conll",
    "read_text",
    "read_parallel",
]


def detect_format(path: str | os.PathLike, second: str | os.PathLike | None = None) -> str:
    """Guess a corpus format: two paths are parallel; else by suffix; else by the first content line."""
    if second is not None:
        return "parallel"
    suffix = Path(path).suffix.lower()
    if suffix in _SUFFIXES:
        return _SUFFIXES[suffix]
    for _, text in iter_lines(path):
        if not text or text.startswith("#") and "\t" not in text:
            continue
        cols = text.split("\t")
        if len(cols) == 10:
            return "conllu"
        if len(cols) == 2:
            return "parallel"
        words = text.split()
        if words[0] == "-DOCSTART-" or len(words) >= 2 and (words[-1] == "O" or words[-1][:2] in ("B-", "I-")):
            return "conll"
        return "text"
    raise InputError(path, None, "no content lines to detect the format from")


def summarise(path: str | os.PathLike, second: str | os.PathLike | None = None, fmt: str = "auto") -> dict:
    """Read a whole file (or pair, or hf: dataset) and return its summary; raises InputError on the first problem."""
    if isinstance(path, str) and path.startswith("hf:"):
        if second is not None or fmt != "auto":
            raise UserError(f"{path}: a Hugging Face dataset takes no second path and no --format")
        from distgem.data.hub import summarise as summarise_hub

        return summarise_hub(path)
    if fmt == "auto":
        fmt = detect_format(path, second)
    if fmt not in READERS:
        raise UserError(f"unknown format {fmt!r} (choose from {', '.join(FORMATS)})")
    if (fmt == "parallel") != (second is not None) and not (fmt == "parallel" and _is_tsv(path)):
        raise UserError(f"format {fmt!r} takes {'two paths (or one TSV)' if fmt == 'parallel' else 'one path'}")
    summary: dict = {"format": fmt, "path": os.fspath(path)}
    if fmt in ("conllu", "conll"):
        labels: Counter[str] = Counter()
        sentences = tokens = multiword = empty = 0
        for sentence in READERS[fmt](path):
            sentences += 1
            tokens += len(sentence.words)
            multiword += sentence.multiword_tokens
            empty += sentence.empty_nodes
            labels.update(sentence.tags)
        summary.update(sentences=sentences, tokens=tokens, labels=dict(sorted(labels.items())))
        if fmt == "conllu":
            summary.update(multiword_tokens=multiword, empty_nodes=empty)
        else:
            summary["entities"] = sum(n for tag, n in labels.items() if tag.startswith("B-"))
    elif fmt == "text":
        lines = list(read_text(path))
        summary.update(sentences=len(lines), tokens=sum(len(line.text.split()) for line in lines))
    else:
        pairs = list(read_parallel(path, second))
        src = sum(len(p.source.split()) for p in pairs)
        tgt = sum(len(p.target.split()) for p in pairs)
        summary.update(
            second_path=os.fspath(second) if second else None,
            pairs=len(pairs),
            tokens=src + tgt,
            source_tokens=src,
            target_tokens=tgt,
        )
    return summary


def _is_tsv(path) -> bool:
    return Path(path).suffix.lower() == ".tsv" or detect_format(path) == "parallel"


def format_summary(summary: dict) -> str:
    """A short human-readable rendering of `summarise`'s result."""
    fmt = summary["format"]
    if fmt == "hf":
        return "\n".join(
            [
                f"{summary['path']}: Hugging Face dataset, {len(summary['splits'])} splits",
                *(_format_split(name, info) for name, info in summary["splits"].items()),
            ]
        )
    where = summary["path"] + (f" + {summary['second_path']}" if summary.get("second_path") else "")
    if fmt == "parallel":
        tokens = f"{summary['source_tokens']} + {summary['target_tokens']} tokens"
        head = f"{where}: parallel, {summary['pairs']} pairs, {tokens}"
    else:
        head = f"{where}: {fmt}, {summary['sentences']} sentences, {summary['tokens']} tokens"
    if fmt == "conllu":
        head += f", {summary['multiword_tokens']} multiword tokens, {summary['empty_nodes']} empty nodes"
    if fmt == "conll":
        head += f", {summary['entities']} entities"
    if "labels" in summary:
        labels = ", ".join(f"{tag} {n}" for tag, n in sorted(summary["labels"].items(), key=lambda kv: -kv[1]))
        head += f"\n  labels ({len(summary['labels'])}): {labels}"
    return head


def _format_split(name: str, info: dict) -> str:
    line = f"  {name}: {info['rows']} rows"
    if "tokens" in info:
        line += f", {info['tokens']} tokens"
    if "sentences" in info:
        line += f", {info['sentences']} sentences"
    for column, labels in info.get("tags", {}).items():
        line += f"\n    {column} ({len(labels)}): " + ", ".join(
            f"{t} {n}" for t, n in sorted(labels.items(), key=lambda kv: -kv[1])
        )
    return line
