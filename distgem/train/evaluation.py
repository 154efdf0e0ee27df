"""Evaluation over sharded data: every rank scores its share, all ranks end with the same metrics.

`forward(task, batch)` runs the model without gradients; `gather(obj)` returns every rank's object;
`agree(count)` is the largest count of any rank, where every rank must run as many forwards (ZeRO-3), else
None (all supplied by the engine, so this module never sees ranks).
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from distgem.data.loader import shard
from distgem.distributed.world import lockstep
from distgem.tasks.metrics import perplexity, retrieval_precision
from distgem.tasks import mlm, tagging, xsr

Forward = Callable[[str, dict], dict]
Gather = Callable[[object], list]
Agree = Callable[[int], int] | None

EVAL_MASK_SEED = 12345  # fixed: perplexities of different runs compare on the same masks


def tagging_predictions(forward: Forward, gather: Gather, agree: Agree, corpus: tagging.TaggedCorpus, pad_id: int,
                        batch_size: int, rank: int, world: int) -> list[list[int]]:
    """Word-level predicted label ids of every sentence of one file (each rank tags its share)."""
    mine = shard(range(len(corpus.words)), rank, world)
    predictions = tagging.predict(lambda b: forward("tag", b)["logits"], corpus, pad_id, batch_size, mine, agree)
    merged: dict[int, list[int]] = {}
    for part in gather(predictions):
        merged.update(part)
    return [merged[i] for i in range(len(corpus.words))]


def mlm_perplexity(forward: Forward, gather: Gather, agree: Agree, examples: list[list[int]], tokenizer,
                   batch_size: int, rank: int, world: int) -> float:
    """exp(mean NLL) over masked tokens of held-out sentences, with the fixed evaluation masks."""
    nll, tokens = 0.0, 0
    mine = shard(range(len(examples)), rank, world)
    batches = [mlm.mask([examples[i] for i in keys], keys, EVAL_MASK_SEED, tokenizer)
               for keys in (mine[start:start + batch_size] for start in range(0, len(mine), batch_size))]
    batches = [batch for batch in batches if mlm.units(batch)]  # nothing masked: nothing to score
    for batch, real in lockstep(batches, agree, lambda: mlm.mask(examples[:1], [0], EVAL_MASK_SEED, tokenizer)):
        out = forward("mlm", batch)
        if real:
            nll += float(out["nll"])
            tokens += int(out["tokens"])
    totals = gather((nll, tokens))
    return perplexity(sum(t[0] for t in totals), sum(t[1] for t in totals))


def xsr_precision(forward: Forward, gather: Gather, agree: Agree, pairs: list, tokenizer, batch_size: int,
                  rank: int, world: int) -> dict[str, float]:
    """P@1/5/10 of retrieving the English translation of each held-out sentence (xx -> en)."""
    mine = shard(range(len(pairs)), rank, world)
    parts = {}
    for side in (0, 1):
        embeddings = []
        batches = [xsr.encode_batch([pairs[i][side] for i in mine[start:start + batch_size]], tokenizer)
                   for start in range(0, len(mine), batch_size)]
        for batch, real in lockstep(batches, agree, lambda: xsr.encode_batch([pairs[0][side]], tokenizer)):
            embedding = forward("embed", batch)["embedding"]
            if real:
                embeddings.append(embedding.float().cpu())
        parts[side] = torch.cat(embeddings) if embeddings else torch.zeros(0)
    gathered = gather((mine, parts[0], parts[1]))
    order = torch.tensor([i for g in gathered for i in g[0]]).argsort()
    source = torch.cat([g[1] for g in gathered if len(g[0])])[order]
    target = torch.cat([g[2] for g in gathered if len(g[0])])[order]
    return retrieval_precision(source, target)
