"""Cross-lingual sentence retrieval: pairs, batches of [sources; targets], P@k evaluation."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from distgem.data.encode import pair_ids
from distgem.data.text import read_parallel


def load_pairs(source: str, target: str, tokenizer, max_length: int) -> list[tuple[list[int], list[int]]]:
    """In memory: encoded (source, target) pairs (the cached path, distgem.data.corpora, gives the same rows)."""
    pairs = list(read_parallel(source, target))
    return list(zip(*pair_ids([p.source for p in pairs], [p.target for p in pairs], tokenizer, max_length)))


def collate(pairs: Sequence[tuple[list[int], list[int]]], tokenizer, pooling: str = "words") -> dict[str, torch.Tensor]:
    """Rows [0, n) are the sources, rows [n, 2n) their translations."""
    return encode_batch([p[0] for p in pairs] + [p[1] for p in pairs], tokenizer, pooling)


def encode_batch(sentences: Sequence[Sequence[int]], tokenizer, pooling: str = "words") -> dict[str, torch.Tensor]:
    """Pad sentences; pool_mask marks the tokens the embedding averages: the sentence's own pieces ("words": no
    [CLS]/<s>, [SEP]/</s>), or every token but padding ("all": the mean pooling e5 and sentence-transformers use)."""
    special = set(tokenizer.all_special_ids)
    length = max(len(s) for s in sentences)
    ids = torch.full((len(sentences), length), tokenizer.pad_token_id, dtype=torch.long)
    attention = torch.zeros_like(ids)
    pool = torch.zeros_like(ids)
    for row, sentence in enumerate(sentences):
        ids[row, : len(sentence)] = torch.tensor(sentence)
        attention[row, : len(sentence)] = 1
        pool[row, : len(sentence)] = torch.tensor(
            [pooling == "all" or t not in special for t in sentence], dtype=torch.long
        )
    return {"input_ids": ids, "attention_mask": attention, "pool_mask": pool}
