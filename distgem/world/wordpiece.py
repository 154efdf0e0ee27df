"""A deterministic WordPiece vocabulary learner (the embedded backbone's tokenizer).

tokenizers' own WordPieceTrainer breaks ties between equally frequent pairs in hash-map order, so two
trainings on the same text give different vocabularies. This learner runs the same algorithm (BPE
merges over words, continuation pieces prefixed with `##`, then WordPiece's greedy longest match at
encoding time) with ties broken by the pieces themselves: the same text always gives the same vocabulary.
"""

from __future__ import annotations

import heapq
from collections import Counter, defaultdict
from collections.abc import Iterable

PREFIX = "##"


def count_words(texts: Iterable[str], normalizer, pre_tokenizer) -> Counter:
    """Word frequencies after the tokenizer's own normalisation and pre-tokenisation."""
    counts: Counter = Counter()
    for text in texts:
        counts.update(word for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text)))
    return counts


def learn_vocabulary(counts: Counter, vocab_size: int, specials: list[str]) -> list[str]:
    """Specials, the alphabet (initial and `##` forms), then merged pieces in the order they were learned."""
    words = sorted(counts)
    symbols = [[w[0]] + [PREFIX + c for c in w[1:]] for w in words]
    frequency = [counts[w] for w in words]
    vocab = list(specials) + sorted({s for word in symbols for s in word} - set(specials))
    pairs: Counter = Counter()
    where: dict[tuple[str, str], set[int]] = defaultdict(set)
    for i, word in enumerate(symbols):
        for pair in zip(word, word[1:]):
            pairs[pair] += frequency[i]
            where[pair].add(i)
    # max-heap on (count, then the smallest pair): stale entries are skipped when popped
    heap = [(-count, pair) for pair, count in pairs.items()]
    heapq.heapify(heap)
    known = set(vocab)
    while len(vocab) < vocab_size and heap:
        negative, pair = heapq.heappop(heap)
        if pairs.get(pair, 0) != -negative or negative == 0:
            continue
        merged = pair[0] + pair[1][len(PREFIX) :]
        if merged not in known:
            vocab.append(merged)
            known.add(merged)
        changed: set[tuple[str, str]] = set()
        for i in sorted(where.pop(pair, ())):
            word = symbols[i]
            for old in zip(word, word[1:]):
                pairs[old] -= frequency[i]
                changed.add(old)
            symbols[i] = word = _merge(word, pair, merged)
            for new in zip(word, word[1:]):
                pairs[new] += frequency[i]
                where[new].add(i)
                changed.add(new)
        pairs.pop(pair, None)
        for other in sorted(changed - {pair}):
            if pairs.get(other, 0) > 0:
                heapq.heappush(heap, (-pairs[other], other))
    return vocab


def _merge(word: list[str], pair: tuple[str, str], merged: str) -> list[str]:
    out, i = [], 0
    while i < len(word):
        if i + 1 < len(word) and (word[i], word[i + 1]) == pair:
            out.append(merged)
            i += 2
        else:
            out.append(word[i])
            i += 1
    return out
