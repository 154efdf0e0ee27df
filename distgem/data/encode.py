"""Batched encoders: what `Dataset.map` runs over canonical rows (and the in-memory loaders call directly).

Pure functions of (rows, tokenizer, settings), so any number of worker processes give the same rows.
"""

from __future__ import annotations

from collections.abc import Sequence

from distgem.data.align import encode_words, special_template


def mono_windows(texts: Sequence[str], tokenizer, max_length: int) -> list[list[int]]:
    """Token ids with special tokens; a line longer than the window becomes several examples."""
    prefix, suffix = special_template(tokenizer)
    budget = max_length - len(prefix) - len(suffix)
    examples = []
    encoded = tokenizer(list(texts), add_special_tokens=False)["input_ids"] if len(texts) else []
    for ids in encoded:
        for start in range(0, max(len(ids), 1), budget):
            examples.append(prefix + ids[start : start + budget] + suffix)
    return examples


def pair_ids(sources: Sequence[str], targets: Sequence[str], tokenizer, max_length: int) -> tuple[list, list]:
    """Encoded sources and targets; sentences longer than the window are truncated for the embedding."""
    encode = lambda texts: tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]  # noqa: E731
    return encode(sources), encode(targets)


def tagged_windows(
    words: Sequence[Sequence[str]], labels: Sequence[Sequence[int]], tokenizer, max_length: int, stride: int
) -> dict[str, list]:
    """Per sentence, its windows as parallel lists (ids, word ids, labels, [first, last, own_start, own_end])."""
    out: dict[str, list] = {"input_ids": [], "word_ids": [], "labels": [], "spans": []}
    for sentence_words, sentence_labels in zip(words, labels):
        windows = encode_words(tokenizer, sentence_words, sentence_labels, max_length, stride)
        out["input_ids"].append([w.input_ids for w in windows])
        out["word_ids"].append([w.word_ids for w in windows])
        out["labels"].append([w.labels for w in windows])
        out["spans"].append([[w.first_word, w.last_word, *w.owned] for w in windows])
    return out
