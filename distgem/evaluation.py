"""Evaluation over sharded data: every rank scores its share, all ranks end with the same metrics.

`forward(task, batch)` runs the model without gradients; `gather(obj)` returns every rank's object
(both supplied by the engine, so this module never sees ranks).
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from distgem.data.loader import shard
from distgem.metrics import perplexity, retrieval_precision
from distgem.tasks import mlm, tagging, xsr

Forward = Callable[[str, dict], dict]
Gather = Callable[[object], list]

EVAL_MASK_SEED = 12345  # fixed: perplexities of different runs compare on the same masks


def tagging_predictions(forward: Forward, gather: Gather, corpus: tagging.TaggedCorpus, pad_id: int,
                        batch_size: int, rank: int, world: int) -> list[list[int]]:
    """Word-level predicted label ids of every sentence of one file (each rank tags its share)."""
    mine = shard(range(len(corpus.words)), rank, world)
    predictions = tagging.predict(lambda b: forward("tag", b)["logits"], corpus, pad_id, batch_size, mine)
    merged: dict[int, list[int]] = {}
    for part in gather(predictions):
        merged.update(part)
    return [merged[i] for i in range(len(corpus.words))]


def mlm_perplexity(forward: Forward, gather: Gather, examples: list[list[int]], tokenizer, batch_size: int,
                   rank: int, world: int) -> float:
    """exp(mean NLL) over masked tokens of held-out sentences, with the fixed evaluation masks."""
    nll, tokens = 0.0, 0
    mine = shard(range(len(examples)), rank, world)
    for start in range(0, len(mine), batch_size):
        keys = mine[start:start + batch_size]
        batch = mlm.mask([examples[i] for i in keys], keys, EVAL_MASK_SEED, tokenizer)
        if mlm.units(batch) == 0:
            continue
        out = forward("mlm", batch)
        nll += float(out["nll"])
        tokens += int(out["tokens"])
    totals = gather((nll, tokens))
    return perplexity(sum(t[0] for t in totals), sum(t[1] for t in totals))


def xsr_precision(forward: Forward, gather: Gather, pairs: list, tokenizer, batch_size: int,
                  rank: int, world: int) -> dict[str, float]:
    """P@1/5/10 of retrieving the English translation of each held-out sentence (xx -> en)."""
    mine = shard(range(len(pairs)), rank, world)
    parts = {}
    for side in (0, 1):
        embeddings = []
        for start in range(0, len(mine), batch_size):
            batch = xsr.encode_batch([pairs[i][side] for i in mine[start:start + batch_size]], tokenizer)
            embeddings.append(forward("embed", batch)["embedding"].float().cpu())
        parts[side] = torch.cat(embeddings) if embeddings else torch.zeros(0)
    gathered = gather((mine, parts[0], parts[1]))
    order = torch.tensor([i for g in gathered for i in g[0]]).argsort()
    source = torch.cat([g[1] for g in gathered if len(g[0])])[order]
    target = torch.cat([g[2] for g in gathered if len(g[0])])[order]
    return retrieval_precision(source, target)
