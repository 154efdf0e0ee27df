"""Subword alignment for token classification with any Hugging Face fast tokenizer.

The first subword of each word carries the word's label, the others -100. A sentence longer than
the window is cut on word boundaries into overlapping windows; each word is *owned* by exactly one
window (the one where it sits furthest from a cut), which carries its label in training and whose
prediction stands for it in evaluation, so every word is predicted exactly once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

IGNORE = -100


@dataclass(frozen=True)
class Window:
    """One model input: token ids, the word index of each token (-1 for specials), owned words."""

    input_ids: list[int]
    word_ids: list[int]
    labels: list[int]
    first_word: int  # words [first_word, last_word) appear in this window
    last_word: int
    owned: tuple[int, int]  # words [owned[0], owned[1]) are labelled and predicted by this window


def encode_words(
    tokenizer, words: Sequence[str], labels: Sequence[int] | None = None, max_length: int = 128, stride: int = 32
) -> list[Window]:
    """Tokenise pre-split words into windows of at most `max_length` tokens, `stride` tokens of overlap."""
    if labels is not None and len(labels) != len(words):
        raise ValueError(f"{len(words)} words but {len(labels)} labels")
    prefix, suffix = special_template(tokenizer)
    budget = max_length - len(prefix) - len(suffix)
    if budget < 1:
        raise ValueError(f"max_length {max_length} leaves no room beside {len(prefix) + len(suffix)} special tokens")
    pieces = word_pieces(tokenizer, words)
    pieces = [p[:budget] for p in pieces]  # a word longer than the window keeps its first subwords
    spans = plan_windows([len(p) for p in pieces], budget, min(stride, budget - 1))
    windows = []
    for (start, end), (own_start, own_end) in spans:
        ids: list[int] = []
        word_ids: list[int] = []
        for w in range(start, end):
            ids.extend(pieces[w])
            word_ids.extend([w] * len(pieces[w]))
        full = prefix + ids + suffix
        word_ids = [-1] * len(prefix) + word_ids + [-1] * len(suffix)
        window_labels = [IGNORE] * len(full)
        if labels is not None:
            previous = -1
            for t, w in enumerate(word_ids):
                if w >= 0 and w != previous and own_start <= w < own_end:
                    window_labels[t] = labels[w]
                previous = w
        windows.append(Window(full, word_ids, window_labels, start, end, (own_start, own_end)))
    return windows


def word_pieces(tokenizer, words: Sequence[str]) -> list[list[int]]:
    """Subword ids of each word; a word the tokenizer maps to nothing becomes the unknown token."""
    encoding = tokenizer(list(words), is_split_into_words=True, add_special_tokens=False)
    pieces: list[list[int]] = [[] for _ in words]
    for token_id, w in zip(encoding["input_ids"], encoding.word_ids()):
        if w is not None:
            pieces[w].append(token_id)
    for p in pieces:
        if not p:
            p.append(tokenizer.unk_token_id)
    return pieces


def plan_windows(lengths: Sequence[int], budget: int, stride: int) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """Cut words of the given subword lengths into windows of <= budget subwords; returns (span, owned)."""
    spans: list[tuple[int, int]] = []
    start, n = 0, len(lengths)
    while True:
        end, used = start, 0
        while end < n and used + lengths[end] <= budget:
            used += lengths[end]
            end += 1
        end = max(end, start + 1)  # lengths are clipped to budget, so one word always fits
        spans.append((start, end))
        if end >= n:
            break
        # next window starts early enough to carry up to `stride` subwords of left context
        nxt, context = end, 0
        while nxt - 1 > start and context + lengths[nxt - 1] <= stride:
            nxt -= 1
            context += lengths[nxt]
        start = nxt
    if n == 0:
        return [((0, 0), (0, 0))]
    owned = []
    own_start = 0
    for i, (start, end) in enumerate(spans):
        own_end = n if i == len(spans) - 1 else (spans[i + 1][0] + end + 1) // 2
        owned.append(((start, end), (own_start, own_end)))
        own_start = own_end
    return owned


def stitch(windows: Sequence[Window], token_predictions: Sequence[Sequence[int]], num_words: int) -> list[int]:
    """Word-level predictions from per-token predictions of each window (first subword, owning window)."""
    words = [None] * num_words
    for window, predictions in zip(windows, token_predictions):
        previous = -1
        for t, w in enumerate(window.word_ids):
            if w >= 0 and w != previous and window.owned[0] <= w < window.owned[1]:
                if words[w] is not None:
                    raise AssertionError(f"word {w} predicted twice")
                words[w] = int(predictions[t])
            previous = w
    missing = [i for i, p in enumerate(words) if p is None]
    if missing:
        raise AssertionError(f"words {missing[:5]} were not predicted")
    return words


def special_template(tokenizer) -> tuple[list[int], list[int]]:
    """The special tokens a tokenizer puts before and after one sequence ([CLS] ... [SEP], <s> ... </s>)."""
    cached = getattr(tokenizer, "_distgem_template", None)
    if cached is None:
        plain = tokenizer("a", add_special_tokens=False)["input_ids"]
        full = tokenizer("a", add_special_tokens=True)["input_ids"]
        for offset in range(len(full) - len(plain) + 1):
            if full[offset : offset + len(plain)] == plain:
                cached = (full[:offset], full[offset + len(plain) :])
                break
        else:
            raise ValueError("cannot locate the content between the tokenizer's special tokens")
        tokenizer._distgem_template = cached
    return cached
