"""A deterministic WordPiece vocabulary learner (the embedded backbone's tokenizer).

tokenizers' own WordPieceTrainer breaks ties between equally frequent pairs in hash-map order, so two
trainings on the same text give different vocabularies. This learner runs the same algorithm (BPE
merges over words, continuation pieces prefixed with `##`, then WordPiece's greedy longest match at
encoding time) with ties broken by the pieces themselves: the same text always gives the same vocabulary.
`bert_tokenizer` turns a vocabulary into the transformers tokenizer every local backbone uses (the embedded
default's, the tests' and the benchmarks'): one recipe, so what is trained is what is saved and loaded.
"""

from __future__ import annotations

import heapq
from collections import Counter, defaultdict
from collections.abc import Iterable

PREFIX = "##"
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def cased_vocabulary(texts: Iterable[str], vocab_size: int) -> list[str]:
    """mBERT's cased recipe: a vocabulary learned over the texts as BERT's cased normaliser and pre-tokeniser see."""
    return learn_vocabulary(count_words(texts, *_cased()), vocab_size, SPECIALS)


def bert_tokenizer(vocab: list[str], max_length: int | None = None):
    """A cased BERT tokenizer over an ordered vocabulary (ids are positions; SPECIALS among the pieces), as a
    transformers BertTokenizerFast: `[CLS] a [SEP]`, pairs `[CLS] a [SEP] b [SEP]` with segment ids 0 and 1."""
    from tokenizers import Tokenizer, models, processors
    from transformers import BertTokenizerFast

    tok = Tokenizer(
        models.WordPiece(
            {piece: i for i, piece in enumerate(vocab)}, unk_token="[UNK]", continuing_subword_prefix=PREFIX
        )
    )
    tok.normalizer, tok.pre_tokenizer = _cased()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))],
    )
    # do_lower_case/strip_accents must be stated: transformers 5 otherwise saves do_lower_case=True and rebuilds
    # a lower-casing normaliser on load, so the saved tokenizer would differ from the one built here
    return BertTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        pad_token="[PAD]",
        mask_token="[MASK]",
        do_lower_case=False,
        strip_accents=False,
        **({} if max_length is None else {"model_max_length": max_length}),
    )


def _cased():
    from tokenizers import normalizers, pre_tokenizers

    return normalizers.BertNormalizer(lowercase=False, strip_accents=False), pre_tokenizers.BertPreTokenizer()


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
