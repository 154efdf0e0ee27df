"""Canonical rows, from a file reader or a hub dataset: what `Dataset.from_generator` writes before tokenising.

tagged: {words, tags}; mono: {text}; parallel: {source, target}. Every problem is an InputError
naming the file and line (or the dataset, split and row) while the rows are read, before any cache
entry exists, so a bad file never leaves a cache entry behind.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from datasets import Features, List, Value

from distgem.data import hub
from distgem.data.conll import read_conll, to_iob2
from distgem.data.conllu import read_conllu
from distgem.data.text import read_parallel, read_text
from distgem.errors import InputError

FEATURES = {
    "tagged": Features({"words": List(Value("string")), "tags": List(Value("string"))}),
    "mono": Features({"text": Value("string")}),
    "parallel": Features({"source": Value("string"), "target": Value("string")}),
}
FILE_READERS = {"conllu": read_conllu, "conll": read_conll}


def tagged_records(
    path: str, fmt: str, labels: Sequence[str], split: str | None = None, tag_columns: Sequence[str] = ()
) -> Iterator[dict]:
    """Sentences of a CoNLL-U/CoNLL file (`fmt`) or a hub split; a tag outside `labels` is an InputError."""
    allowed = set(labels)
    if hub.is_hub(path):
        dataset, split = hub.split_of(path, split)
        where = hub.where(path, split)
        _, column = hub.tagged_columns(dataset, path, tag_columns)
        names = hub.tag_names(dataset, column)
        unknown = sorted(set(names or ()) - allowed - {hub.SKIP_TAG})
        if unknown:  # a whole tag set that does not fit (Penn tags for UPOS): say so once, not at row 1
            raise InputError(
                where,
                None,
                f"column {column!r} has tags outside the label set "
                f"({', '.join(unknown[:6])}{', ...' if len(unknown) > 6 else ''}); "
                f"expected {', '.join(labels)}",
            )
        for number, words, tags in hub.tagged_rows(path, split, tag_columns):
            tags = to_iob2(tags) if fmt == "conll" else tags
            for tag in tags:
                if tag not in allowed:
                    raise InputError(where, number, f"tag {tag!r} is not in the label set ({', '.join(labels)})")
            yield {"words": words, "tags": tags}
        return
    for sentence in FILE_READERS[fmt](path):
        for tag, line in zip(sentence.tags, sentence.word_lines):
            if tag not in allowed:
                raise InputError(path, line, f"tag {tag!r} is not in the label set ({', '.join(labels)})")
        yield {"words": list(sentence.words), "tags": list(sentence.tags)}


def mono_records(path: str, limit: int = 0) -> Iterator[dict]:
    """Sentences of a one-per-line file or a hub text split; the first `limit` of them when limit > 0."""
    rows = (text for _, text in hub.mono_rows(path)) if hub.is_hub(path) else (line.text for line in read_text(path))
    for count, text in enumerate(rows, start=1):
        yield {"text": text}
        if count == limit:
            return


def parallel_records(source: str, target: str | None, lang: str) -> Iterator[dict]:
    """Pairs (lang, en) of two aligned files, a TSV (target None) or a hub split (source is the spec)."""
    if hub.is_hub(source):
        for _, src, tgt in hub.parallel_rows(source, lang):
            yield {"source": src, "target": tgt}
        return
    for pair in read_parallel(source, target):
        yield {"source": pair.source, "target": pair.target}
