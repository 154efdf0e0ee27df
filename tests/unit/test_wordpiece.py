"""The deterministic WordPiece learner and the one BERT tokenizer recipe behind every local backbone."""

from __future__ import annotations

import random

from tokenizers import normalizers, pre_tokenizers

from distgem.world.wordpiece import PREFIX, SPECIALS, bert_tokenizer, cased_vocabulary, count_words


def _texts(seed: int = 0, lines: int = 400) -> list[str]:
    rng = random.Random(seed)
    stems = ["".join(rng.choice("ptkaeiou") for _ in range(rng.randint(2, 6))) for _ in range(60)]
    greek = ["".join(rng.choice("αβγδεζ") for _ in range(rng.randint(2, 5))) for _ in range(20)]
    words = stems + [s + suffix for s in stems[:20] for suffix in ("s", "ed", "ing")] + greek
    return [
        " ".join(rng.choice(words) for _ in range(rng.randint(3, 12))) + rng.choice([".", "!", ""])
        for _ in range(lines)
    ]


def test_same_text_in_any_order_gives_the_same_vocabulary():
    texts = _texts()
    shuffled = texts[:]
    random.Random(1).shuffle(shuffled)
    assert cased_vocabulary(texts, 150) == cased_vocabulary(shuffled, 150) == cased_vocabulary(list(texts), 150)


def test_vocabulary_is_specials_then_alphabet_then_merges_within_the_size():
    texts = _texts()
    vocab = cased_vocabulary(texts, 150)
    assert vocab[: len(SPECIALS)] == SPECIALS and len(vocab) == 150 and len(set(vocab)) == len(vocab)
    letters = {c for t in texts for c in t if not c.isspace()}
    alphabet = {piece.removeprefix(PREFIX) for piece in vocab if len(piece.removeprefix(PREFIX)) == 1}
    assert letters <= alphabet  # every character has a piece: nothing in the corpus is [UNK]
    # the most frequent word of the corpus ends up a single piece once merges are plentiful
    big = cased_vocabulary(texts, 2000)
    counts = count_words(
        texts, normalizers.BertNormalizer(lowercase=False, strip_accents=False), pre_tokenizers.BertPreTokenizer()
    )
    assert counts.most_common(1)[0][0] in big


def test_wordpiece_model_over_the_vocabulary_covers_every_word_without_unk():
    texts = _texts()
    tok = bert_tokenizer(cased_vocabulary(texts, 120))
    for text in texts[:50]:
        tokens = tok.tokenize(text)
        assert "[UNK]" not in tokens
        rebuilt = "".join(t.removeprefix(PREFIX) if t.startswith(PREFIX) else " " + t for t in tokens)
        assert rebuilt.split() == text.replace(".", " .").replace("!", " !").split()


def test_the_saved_tokenizer_is_the_one_built_cased_with_segment_ids(tmp_path):
    from transformers import AutoTokenizer

    texts = _texts() + ["Pata Kiki TOKA ptak"]
    built = bert_tokenizer(cased_vocabulary(texts, 150), max_length=64)
    built.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    # transformers 5 rebuilds a lower-casing normaliser on load unless do_lower_case=False was saved
    for text in ("Pata Kiki TOKA ptak", *texts[:20]):
        assert loaded(text)["input_ids"] == built(text)["input_ids"]
    assert loaded.tokenize("TOKA") != loaded.tokenize("toka")
    pair = loaded("pata kiki", "toka")
    cls, sep = loaded.convert_tokens_to_ids(["[CLS]", "[SEP]"])
    first = pair["input_ids"].index(sep) + 1
    assert pair["input_ids"][0] == cls and pair["input_ids"][-1] == sep
    assert set(pair["token_type_ids"][:first]) == {0} and set(pair["token_type_ids"][first:]) == {1}
    assert loaded.model_max_length == 64 and loaded.convert_ids_to_tokens(list(range(5))) == SPECIALS
