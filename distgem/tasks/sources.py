"""Task sources: what one training task draws each step (examples, batch builder, the loss's unit).

The fine-tuning task and every memory constraint are sources; per-language constraints are one
source per (memory task, language). The engine treats them all alike. Memory examples are lazy
sequences over the memory-mapped cache: a batch reads only its own rows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from distgem.data.align import IGNORE
from distgem.data.rows import ConcatRows, lengths_of
from distgem.data.tagged import TaggedCorpus
from distgem.tasks import mlm, tagging, xsr


@dataclass
class Source:
    name: str  # tensorboard and checkpoint name: "pos", "mlm", "xsr", "mlm.es", ...
    kind: str  # model task: "tag", "mlm" or "xsr"
    size: int
    batch: Callable[[Sequence[int], int], dict[str, torch.Tensor]]  # (example indices, step) -> tensors
    units: Callable[[dict[str, torch.Tensor]], int]  # what the loss averages over (tokens, masked tokens, pairs)
    lengths: Callable[[], torch.Tensor]  # tokens per example, for batches grouped by length (computed on demand)


def tagging_source(name: str, corpus: TaggedCorpus, pad_id: int) -> Source:
    examples = corpus.examples
    return Source(
        name,
        "tag",
        len(examples),
        lambda idx, step: tagging.collate([examples[i] for i in idx], pad_id),
        lambda b: int((b["labels"] != IGNORE).sum()),
        lambda: torch.tensor([len(w.input_ids) for w in examples], dtype=torch.long),
    )


def mlm_source(name: str, examples: Sequence[list[int]], tokenizer, seed: int) -> Source:
    def batch(idx, step):
        # keys unique per (step, example): a new mask whenever an example comes back
        return mlm.mask([examples[i] for i in idx], [step * len(examples) + i for i in idx], seed, tokenizer)

    return Source(name, "mlm", len(examples), batch, mlm.units, lambda: lengths_of(examples))


def xsr_source(name: str, pairs: Sequence[tuple], tokenizer, pooling: str = "words") -> Source:
    return Source(
        name,
        "xsr",
        len(pairs),
        lambda idx, step: xsr.collate([pairs[i] for i in idx], tokenizer, pooling),
        lambda b: b["input_ids"].shape[0] // 2,
        lambda: lengths_of(pairs),
    )


def memory_sources(method, corpora, tokenizer, seed: int) -> list[Source]:
    """The constraints of `method`: one per memory task, or one per (task, language) with per_language."""
    per_language = method.name == "gem" and method.gem.per_language
    sources = []
    for task in method.memory:
        if task == "mlm":
            groups = {lang: [lang] for lang in corpora.mono_train} if per_language else {"": list(corpora.mono_train)}
            for suffix, langs in groups.items():
                examples = ConcatRows([corpora.mono_train[lang] for lang in langs])  # views, not copies
                sources.append(mlm_source("mlm" + (f".{suffix}" if suffix else ""), examples, tokenizer, seed))
        else:
            groups = {lang: [lang] for lang in corpora.pairs_train} if per_language else {"": list(corpora.pairs_train)}
            for suffix, langs in groups.items():
                pairs = ConcatRows([corpora.pairs_train[lang] for lang in langs])
                sources.append(
                    xsr_source("xsr" + (f".{suffix}" if suffix else ""), pairs, tokenizer, method.xsr_pooling)
                )
    return sources


def spread(size: int, count: int) -> list[int]:
    """`count` distinct indices evenly spaced over `size` examples (all of them if count >= size): a fixed
    held-out sample that gives every language of a pooled constraint its share, where the first `count`
    rows of a concatenation would all be its first language's."""
    count = min(count, size)
    return [i * size // count for i in range(count)]
