"""The deterministic WordPiece learner behind the embedded backbone's tokenizer."""

from __future__ import annotations

import random

from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

from distgem.world.wordpiece import PREFIX, count_words, learn_vocabulary

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def _texts(seed: int = 0, lines: int = 400) -> list[str]:
    rng = random.Random(seed)
    stems = ["".join(rng.choice("ptkaeiou") for _ in range(rng.randint(2, 6))) for _ in range(60)]
    greek = ["".join(rng.choice("αβγδεζ") for _ in range(rng.randint(2, 5))) for _ in range(20)]
    words = stems + [s + suffix for s in stems[:20] for suffix in ("s", "ed", "ing")] + greek
    return [
        " ".join(rng.choice(words) for _ in range(rng.randint(3, 12))) + rng.choice([".", "!", ""])
        for _ in range(lines)
    ]


def _learn(texts: list[str], size: int) -> list[str]:
    counts = count_words(
        texts, normalizers.BertNormalizer(lowercase=False, strip_accents=False), pre_tokenizers.BertPreTokenizer()
    )
    return learn_vocabulary(counts, size, SPECIALS)


def test_same_text_in_any_order_gives_the_same_vocabulary():
    texts = _texts()
    shuffled = texts[:]
    random.Random(1).shuffle(shuffled)
    assert _learn(texts, 150) == _learn(shuffled, 150) == _learn(list(texts), 150)


def test_vocabulary_is_specials_then_alphabet_then_merges_within_the_size():
    texts = _texts()
    vocab = _learn(texts, 150)
    assert vocab[: len(SPECIALS)] == SPECIALS and len(vocab) == 150 and len(set(vocab)) == len(vocab)
    letters = {c for t in texts for c in t if not c.isspace()}
    alphabet = {piece.removeprefix(PREFIX) for piece in vocab if len(piece.removeprefix(PREFIX)) == 1}
    assert letters <= alphabet  # every character has a piece: nothing in the corpus is [UNK]
    # the most frequent word of the corpus ends up a single piece once merges are plentiful
    big = _learn(texts, 2000)
    counts = count_words(
        texts, normalizers.BertNormalizer(lowercase=False, strip_accents=False), pre_tokenizers.BertPreTokenizer()
    )
    assert counts.most_common(1)[0][0] in big


def test_wordpiece_model_over_the_vocabulary_covers_every_word_without_unk():
    texts = _texts()
    vocab = _learn(texts, 120)
    tok = Tokenizer(
        models.WordPiece({p: i for i, p in enumerate(vocab)}, unk_token="[UNK]", continuing_subword_prefix=PREFIX)
    )
    tok.normalizer = normalizers.BertNormalizer(lowercase=False, strip_accents=False)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    for text in texts[:50]:
        encoding = tok.encode(text)
        assert "[UNK]" not in encoding.tokens
        rebuilt = "".join(t.removeprefix(PREFIX) if t.startswith(PREFIX) else " " + t for t in encoding.tokens)
        assert rebuilt.split() == text.replace(".", " .").replace("!", " !").split()
