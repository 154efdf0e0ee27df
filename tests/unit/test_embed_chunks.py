"""Sentence embeddings in length-sorted chunks: the rows' embeddings and gradients of one padded pass."""

from __future__ import annotations

import random

import pytest
import torch

from distgem.model.multitask import MultiTaskModel, length_chunks, split_chunks


@pytest.mark.parametrize("seed", range(20))
def test_length_chunks_cover_every_row_once_within_the_budget(seed):
    rng = random.Random(seed)
    lengths = [rng.choice([rng.randint(3, 12), rng.randint(20, 90)]) for _ in range(rng.randint(1, 60))]
    budget = rng.choice([0, 40, 128, 512, 10_000])
    chunks = length_chunks(lengths, budget)
    assert sorted(r for rows in chunks for r in rows) == list(range(len(lengths)))
    if budget == 0 or len(lengths) * max(lengths) <= budget:
        assert chunks == [list(range(len(lengths)))]  # one pass, rows untouched
        return
    for rows in chunks:
        assert len(rows) == 1 or len(rows) * max(lengths[r] for r in rows) <= budget
    # shortest first, and a chunk closes only when the next row would not fit: no needless splits
    flat = [lengths[r] for rows in chunks for r in rows]
    assert flat == sorted(flat)
    for rows, after in zip(chunks, chunks[1:]):
        assert (len(rows) + 1) * lengths[after[0]] > budget


@pytest.fixture(scope="module")
def model():
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=50,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    return MultiTaskModel(BertForMaskedLM(config), num_labels=3).double()


def _batch(lengths):
    ids = torch.zeros(len(lengths), max(lengths), dtype=torch.long)
    attention = torch.zeros_like(ids)
    for row, n in enumerate(lengths):
        ids[row, :n] = torch.randint(5, 50, (n,))
        attention[row, :n] = 1
    pool = attention.clone()
    pool[:, 0] = 0  # the [CLS] position is not pooled
    return {"input_ids": ids, "attention_mask": attention, "pool_mask": pool}


def _loss_and_grads(model, budget, batch):
    model.zero_grad()
    model.embed_chunk_tokens = budget
    loss = model(task="xsr", **batch)["loss"]
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_chunked_embeddings_and_gradients_equal_one_padded_pass(model):
    torch.manual_seed(1)
    lengths = [4, 30, 5, 6, 3, 7, 5, 4, 28, 6, 5, 8]  # 6 pairs; two long sentences pad the batch to 30
    batch = _batch(lengths)
    assert len(length_chunks(lengths, 48)) > 2
    model.embed_chunk_tokens = 0
    one = model.embed(**batch)
    model.embed_chunk_tokens = 48
    chunked = model.embed(**batch)
    assert torch.allclose(chunked, one, atol=1e-10), (chunked - one).abs().max()
    loss_one, grads_one = _loss_and_grads(model, 0, batch)
    loss_chunked, grads_chunked = _loss_and_grads(model, 48, batch)
    assert torch.allclose(loss_chunked, loss_one, atol=1e-10)
    assert grads_one.keys() == grads_chunked.keys() and "encoder.embeddings.word_embeddings.weight" in grads_one
    for name in grads_one:
        assert torch.allclose(grads_chunked[name], grads_one[name], atol=1e-10), name


def test_chunks_keep_the_row_order(model):
    """Swapping two rows of the batch swaps their embeddings: the chunks' sort is undone."""
    torch.manual_seed(2)
    lengths = [20, 3, 9, 3, 15, 4]
    batch = _batch(lengths)
    model.embed_chunk_tokens = 24
    assert len(length_chunks(lengths, 24)) > 1
    out = model.embed(**batch)
    swap = [1, 0, 2, 3, 5, 4]
    swapped = {k: v[swap] for k, v in batch.items()}
    assert torch.allclose(model.embed(**swapped), out[swap], atol=1e-10)


@pytest.mark.parametrize("seed", range(10))
def test_split_chunks_reaches_the_agreed_count_or_single_rows(seed):
    rng = random.Random(seed)
    lengths = [rng.randint(1, 40) for _ in range(rng.randint(1, 20))]
    chunks = length_chunks(lengths, rng.choice([0, 30, 200]))
    count = rng.randint(len(chunks), 25)
    split = split_chunks(chunks, lengths, count)
    assert sorted(r for rows in split for r in rows) == list(range(len(lengths)))
    assert len(split) == min(count, len(lengths)) and all(split)


def test_a_shard_short_of_the_agreed_chunks_runs_a_dropped_forward_in_evaluation_only(model):
    """ZeRO-3: the ranks must run as many encoder forwards; one row short of the count, evaluation runs an
    extra one (its output dropped) and training, where it cannot happen, refuses."""
    batch = _batch([5, 9, 4])
    calls = []
    handle = model.encoder.register_forward_hook(lambda *a: calls.append(1))
    try:
        model.embed_chunk_tokens, model.agree_chunks = 0, None
        one = model.embed(**batch)
        model.embed_chunk_tokens, model.agree_chunks = 8, (lambda n: 4)
        calls.clear()
        with torch.no_grad():
            chunked = model.embed(**batch)
        assert len(calls) == 4 and torch.allclose(chunked, one, atol=1e-10)
        with pytest.raises(RuntimeError, match="3 rows cannot run as the 4 chunks"):
            model.embed(**batch)
    finally:
        handle.remove()
        model.agree_chunks = None
