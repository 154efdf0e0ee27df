"""Masked language modelling: monolingual examples, deterministic 15% 80/10/10 masking, perplexity."""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import torch

from distgem.data.encode import mono_windows
from distgem.data.text import read_text

IGNORE = -100


def load_mono(path: str, tokenizer, max_length: int, limit: slice | None = None) -> list[list[int]]:
    """In memory: token ids with special tokens (the cached path, distgem.data.corpora, gives the same rows)."""
    lines = [line.text for line in read_text(path)]
    return mono_windows(lines[limit] if limit is not None else lines, tokenizer, max_length)


def mask(
    examples: Sequence[Sequence[int]], keys: Sequence[int], seed: int, tokenizer, probability: float = 0.15
) -> dict[str, torch.Tensor]:
    """BERT masking, a pure function of (seed, key) per example: the same on every rank and every run."""
    special = set(tokenizer.all_special_ids)
    vocab = len(tokenizer)
    length = max(len(e) for e in examples)
    ids = torch.full((len(examples), length), tokenizer.pad_token_id, dtype=torch.long)
    attention = torch.zeros_like(ids)
    labels = torch.full_like(ids, IGNORE)
    for row, (example, key) in enumerate(zip(examples, keys)):
        generator = torch.Generator().manual_seed(_mix(seed, key))
        tokens = torch.tensor(example, dtype=torch.long)
        candidates = torch.tensor([t not in special for t in example])
        chosen = (torch.rand(len(example), generator=generator) < probability) & candidates
        action = torch.rand(len(example), generator=generator)
        random_tokens = torch.randint(vocab, (len(example),), generator=generator)
        row_labels = torch.where(chosen, tokens, IGNORE)
        tokens = torch.where(chosen & (action < 0.8), tokenizer.mask_token_id, tokens)
        tokens = torch.where(chosen & (action >= 0.8) & (action < 0.9), random_tokens, tokens)
        ids[row, : len(example)] = tokens
        attention[row, : len(example)] = 1
        labels[row, : len(example)] = row_labels
    return {"input_ids": ids, "attention_mask": attention, "labels": labels}


def units(batch: dict[str, torch.Tensor]) -> int:
    """Masked tokens: the unit the MLM loss averages over."""
    return int((batch["labels"] != IGNORE).sum())


def _mix(seed: int, key: int) -> int:
    return zlib.crc32(f"{seed}:{key}".encode())
