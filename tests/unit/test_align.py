"""Subword alignment: first subword labelled, windows within max_length, every word predicted exactly once."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from distgem.data.align import IGNORE, encode_words, plan_windows, special_template, stitch
from tests.local_tokenizers import TOKENIZERS

WORDS = "Maria lives in Madrid since 1999 . el gato se sentó en la alfombra Η γάτα кошка сидела".split()


@pytest.fixture(params=sorted(TOKENIZERS))
def tokenizer(request):
    return TOKENIZERS[request.param]()


def test_special_template_matches_each_family():
    wp, sp = TOKENIZERS["wordpiece"](), TOKENIZERS["sentencepiece"]()
    assert special_template(wp) == ([wp.cls_token_id], [wp.sep_token_id])
    assert special_template(sp) == ([sp.bos_token_id], [sp.eos_token_id])


def test_short_sentence_one_window_first_subword_carries_label(tokenizer):
    labels = list(range(len(WORDS)))
    [window] = encode_words(tokenizer, WORDS, labels, max_length=128)
    assert window.owned == (0, len(WORDS))
    reference = tokenizer(WORDS, is_split_into_words=True)
    assert window.input_ids == reference["input_ids"]  # same ids as the tokenizer's own encoding
    firsts = [t for t, w in enumerate(window.word_ids) if w >= 0 and (t == 0 or window.word_ids[t - 1] != w)]
    assert [window.labels[t] for t in firsts] == labels
    assert all(window.labels[t] == IGNORE for t in range(len(window.labels)) if t not in firsts)
    assert any(len([w for w in window.word_ids if w == i]) > 1 for i in range(len(WORDS)))  # some words split


@pytest.mark.parametrize("max_length, stride", [(8, 0), (8, 3), (10, 4), (16, 8), (6, 3)])
def test_long_sentence_windows_fit_and_cover_every_word_once(tokenizer, max_length, stride):
    words = WORDS * 3
    labels = [i % 7 for i in range(len(words))]
    windows = encode_words(tokenizer, words, labels, max_length=max_length, stride=stride)
    assert len(windows) > 1
    assert all(len(w.input_ids) <= max_length for w in windows)
    labelled = sorted(w.word_ids[t] for w in windows for t, lab in enumerate(w.labels) if lab != IGNORE)
    assert labelled == list(range(len(words)))  # each word carries its label in exactly one window
    # predictions that echo the gold label of each token's word stitch back to the gold sequence
    echo = [[labels[w] if w >= 0 else -1 for w in window.word_ids] for window in windows]
    assert stitch(windows, echo, len(words)) == labels


def test_word_longer_than_the_window_keeps_its_first_subwords(tokenizer):
    words = ["a", "Αααααααααααββββββγγγγγδδδδδ" * 3, "cat"]
    windows = encode_words(tokenizer, words, [1, 2, 3], max_length=6, stride=2)
    assert all(len(w.input_ids) <= 6 for w in windows)
    echo = [[[1, 2, 3][w] if w >= 0 else -1 for w in window.word_ids] for window in windows]
    assert stitch(windows, echo, 3) == [1, 2, 3]


def test_word_without_subwords_becomes_unknown(tokenizer):
    [window] = encode_words(tokenizer, ["cat", "\u200b", "mat"], [0, 1, 2])
    assert sorted(set(w for w in window.word_ids if w >= 0)) == [0, 1, 2]
    assert [lab for lab in window.labels if lab != IGNORE] == [0, 1, 2]


@settings(max_examples=200, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 6), min_size=0, max_size=40), budget=st.integers(1, 12), stride=st.integers(0, 11)
)
def test_plan_windows_partition_property(lengths, budget, stride):
    lengths = [min(n, budget) for n in lengths]
    stride = min(stride, budget - 1) if budget > 1 else 0
    plan = plan_windows(lengths, budget, stride)
    owned = []
    for (start, end), (own_start, own_end) in plan:
        assert sum(lengths[start:end]) <= budget
        assert start <= own_start <= own_end <= end or (start, end) == (0, 0)
        owned.extend(range(own_start, own_end))
    assert owned == list(range(len(lengths)))  # owned ranges partition the sentence in order
    for ((s1, _), _), ((s2, _), _) in zip(plan, plan[1:]):
        assert s2 > s1  # progress


def test_stitch_detects_missing_words(tokenizer):
    windows = encode_words(tokenizer, WORDS, max_length=128)
    with pytest.raises(AssertionError, match="not predicted"):
        stitch(windows, [[0] * len(windows[0].input_ids)], len(WORDS) + 1)


def test_xsr_pooling_words_leaves_out_the_special_tokens_and_all_keeps_them():
    """method.xsr_pooling: which tokens a sentence embedding averages (docs/USAGE.md)."""
    from distgem.tasks import xsr
    from tests.local_tokenizers import sentencepiece, wordpiece

    for tokenizer in (wordpiece(), sentencepiece()):  # [CLS] .. [SEP] and <s> .. </s>
        first, last = tokenizer("a")["input_ids"][0], tokenizer("a")["input_ids"][-1]
        sentences = [[first, 7, 8, last], [first, 9, last]]
        words, every = xsr.encode_batch(sentences, tokenizer), xsr.encode_batch(sentences, tokenizer, "all")
        assert words["pool_mask"].tolist() == [[0, 1, 1, 0], [0, 1, 0, 0]]
        assert every["pool_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 1, 0]] == every["attention_mask"].tolist()
        assert words["input_ids"].tolist() == every["input_ids"].tolist()
