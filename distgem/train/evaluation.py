"""Evaluation over sharded data: every process scores its share, all end with the same metrics.

`Evaluator` runs the model without gradients through `forward(task, batch)` and asks the world
which share is its own and for everyone's results. Under ZeRO-3 every forward gathers each layer's
parameters collectively, so every process must run as many forwards as the one with the most
batches (`lockstep`); the world's `max` says how many, before the first forward.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from distgem.data.tagged import LABELS
from distgem.tasks import mlm, tagging, xsr
from distgem.tasks.metrics import perplexity, retrieval_precision
from distgem.tasks.sources import spread

EVAL_MASK_SEED = 12345  # fixed: perplexities of different runs compare on the same masks


def lockstep(batches: list, agree: Callable[[int], int] | None, spare: Callable[[], object]) -> list[tuple]:
    """`batches` as (batch, True), then (spare(), False) up to the most any process has.

    An evaluation set of 17 on two processes in batches of 4 has three batches on one, two on the other:
    under ZeRO-3 the short one would leave the other waiting forever in a parameter gather, so it runs
    forwards whose output it drops. `agree` is the max over processes of a count, None where forwards
    hold no collectives (ZeRO 0-2, one process); it runs before the first forward."""
    count = agree(len(batches)) if agree is not None else len(batches)
    padding = [(spare(), False)] * (count - len(batches)) if count > len(batches) else []
    return [(batch, True) for batch in batches] + padding


class Evaluator:
    """Scores the model on sharded evaluation data; every method returns the same numbers on every process."""

    def __init__(self, module, world, tokenizer, batch_size: int, lockstep_forwards: bool, pooling: str = "words"):
        """`module`: the DeepSpeed engine (or any module taking `task=` and a batch); `lockstep_forwards`: every
        forward holds collectives (ZeRO-3 over several processes)."""
        self.module, self.world, self.tokenizer, self.batch_size = module, world, tokenizer, batch_size
        self.agree = world.max if lockstep_forwards else None
        self.pooling = pooling  # which tokens a sentence embedding averages (method.xsr_pooling)

    def _forward(self, task: str, batch: dict, **extra) -> dict:
        return self.module(task=task, **{k: v.to(self.world.device) for k, v in batch.items()}, **extra)

    def _schedule(self, batches: list, spare: Callable[[], object]) -> list[tuple]:
        return lockstep(batches, self.agree, spare)

    @contextmanager
    def _eval_mode(self) -> Iterator[None]:
        """No dropout and no gradients while scoring; training mode again afterwards, whatever happens."""
        self.module.eval()
        try:
            with torch.no_grad():
                yield
        finally:
            self.module.train()

    def tagging(self, task: str, corpora: dict, save_dir: Path | None = None) -> dict[str, dict[str, float]]:
        """Scores per language; with `save_dir`, the word-level tags too (save_dir/<lang>.json, main process)."""
        scores = {}
        with self._eval_mode():
            for lang, corpus in corpora.items():
                mine = self.world.shard(range(len(corpus.words)))
                finite = [True]

                def logits(batch: dict) -> torch.Tensor:
                    out = self._forward("tag", batch)["logits"]
                    finite[0] = finite[0] and bool(torch.isfinite(out).all())
                    return out

                predictions = tagging.predict(
                    logits, corpus, self.tokenizer.pad_token_id, self.batch_size, mine, self._schedule
                )
                merged: dict[int, list[int]] = {}
                for part, ok in self.world.gather((predictions, finite[0])):
                    merged.update(part)
                    finite[0] = finite[0] and ok
                predicted = [merged[i] for i in range(len(corpus.words))]
                scores[lang] = tagging.score(task, corpus.tags, predicted)
                if not finite[0]:  # argmax of NaN logits is a tag, not a prediction: no score
                    scores[lang] = {key: math.nan for key in scores[lang]}
                if save_dir is not None and self.world.is_main:
                    save_dir.mkdir(parents=True, exist_ok=True)
                    names = LABELS[task]
                    (save_dir / f"{lang}.json").write_text(json.dumps([[names[i] for i in s] for s in predicted]))
        return scores

    def memory(self, mono: dict, pairs: dict) -> dict:
        """MLM perplexity per language and XSR P@1/5/10 per pair (Table 1)."""
        with self._eval_mode():
            return {
                "mlm_perplexity": {lang: self._perplexity(examples) for lang, examples in mono.items()},
                "xsr": {lang: self._retrieval(pairs_of) for lang, pairs_of in pairs.items()},
            }

    def _perplexity(self, examples: list[list[int]]) -> float:
        """exp(mean NLL) over masked tokens of held-out sentences, with the fixed evaluation masks."""
        nll, tokens = 0.0, 0
        mine = self.world.shard(range(len(examples)))
        batches = [
            mlm.mask([examples[i] for i in keys], keys, EVAL_MASK_SEED, self.tokenizer)
            for keys in (mine[start : start + self.batch_size] for start in range(0, len(mine), self.batch_size))
        ]
        batches = [batch for batch in batches if mlm.units(batch)]  # nothing masked: nothing to score
        for batch, real in self._schedule(batches, lambda: mlm.mask(examples[:1], [0], EVAL_MASK_SEED, self.tokenizer)):
            out = self._forward("mlm", batch)
            if real:
                nll += float(out["nll"])
                tokens += int(out["tokens"])
        totals = self.world.gather((nll, tokens))
        return perplexity(sum(t[0] for t in totals), sum(t[1] for t in totals))

    def _retrieval(self, pairs: list) -> dict[str, float]:
        """P@1/5/10 of retrieving the English translation of each held-out sentence (xx -> en)."""
        mine = self.world.shard(range(len(pairs)))
        parts = {}
        for side in (0, 1):
            embeddings = []
            batches = [
                xsr.encode_batch(
                    [pairs[i][side] for i in mine[start : start + self.batch_size]], self.tokenizer, self.pooling
                )
                for start in range(0, len(mine), self.batch_size)
            ]
            spare = lambda: xsr.encode_batch([pairs[0][side]], self.tokenizer, self.pooling)  # noqa: E731
            for batch, real in self._schedule(batches, spare):
                embedding = self._forward("embed", batch)["embedding"]
                if real:
                    embeddings.append(embedding.float().cpu())
            parts[side] = torch.cat(embeddings) if embeddings else torch.zeros(0)
        gathered = self.world.gather((mine, parts[0], parts[1]))
        order = torch.tensor([i for g in gathered for i in g[0]]).argsort()
        source = torch.cat([g[1] for g in gathered if len(g[0])])[order]
        target = torch.cat([g[2] for g in gathered if len(g[0])])[order]
        return retrieval_precision(source, target)

    def memory_losses(self, held_out: list, examples: int) -> dict[str, float]:
        """Each constraint's loss on `examples` held-out examples spread over its data (the same examples and
        MLM masks every time, no dropout), split over the processes as a training batch is."""
        size = self.world.size
        losses = torch.zeros(len(held_out), dtype=torch.float64)
        with self._eval_mode():
            for i, source in enumerate(held_out):
                indices = spread(source.size, min(examples, source.size) // size * size)
                if not indices:
                    continue
                scale = size / max(source.units(source.batch(indices, 0)), 1)
                inputs = source.batch(self.world.micro_batches(indices, 1)[0], 0)
                losses[i] = float(self._forward(source.kind, inputs, scale=scale)["loss"])
        reduced = self.world.sum(losses.to(self.world.device)).cpu() / size
        return {s.name: float(v) for s, v in zip(held_out, reduced)}
