"""Evaluation metrics: POS accuracy, NER entity F1 (seqeval), MLM perplexity, XSR precision@k."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch


def pos_accuracy(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]) -> float:
    """Word accuracy over all sentences, in percent."""
    correct = total = 0
    for g, p in zip(gold, predicted, strict=True):
        if len(g) != len(p):
            raise ValueError(f"sentence of {len(g)} gold tags has {len(p)} predictions")
        correct += sum(a == b for a, b in zip(g, p))
        total += len(g)
    return 100.0 * correct / total if total else 0.0


def ner_scores(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]) -> dict[str, float]:
    """Entity-level precision, recall and F1 (percent), CoNLL conventions via seqeval."""
    from seqeval.metrics import f1_score, precision_score, recall_score

    gold, predicted = [list(s) for s in gold], [list(s) for s in predicted]
    for g, p in zip(gold, predicted, strict=True):
        if len(g) != len(p):
            raise ValueError(f"sentence of {len(g)} gold tags has {len(p)} predictions")
    kwargs = {"zero_division": 0}
    return {
        "precision": 100.0 * precision_score(gold, predicted, **kwargs),
        "recall": 100.0 * recall_score(gold, predicted, **kwargs),
        "f1": 100.0 * f1_score(gold, predicted, **kwargs),
    }


def perplexity(total_nll: float, tokens: int) -> float:
    """exp of the mean cross-entropy over the masked tokens."""
    if tokens <= 0:
        raise ValueError("perplexity over zero masked tokens")
    mean = total_nll / tokens
    return math.inf if mean > 700 else math.exp(mean)  # nan stays nan; a diverged model has no number to report


def retrieval_precision(source: torch.Tensor, target: torch.Tensor, ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """P@k (percent) of finding target[i] among the k cosine-nearest targets of source[i].

    Source language -> English is `retrieval_precision(xx, en)`; the reverse swaps the arguments.
    A tie with the true target counts against it (strictly better candidates plus ties rank first).
    Embeddings that are not all finite give NaN for every k: `nan >= nan` is False, so NaN similarities
    would rank every true target first and score 100.
    """
    if source.shape != target.shape:
        raise ValueError(f"source {tuple(source.shape)} and target {tuple(target.shape)} differ")
    if not (torch.isfinite(source).all() and torch.isfinite(target).all()):
        return {f"p@{k}": math.nan for k in ks}
    src = torch.nn.functional.normalize(source.double(), dim=-1)
    tgt = torch.nn.functional.normalize(target.double(), dim=-1)
    similarity = src @ tgt.T
    true = similarity.diagonal().unsqueeze(1)
    others = similarity >= true
    others.fill_diagonal_(False)
    position = others.sum(dim=1)  # 0 = the true target is the nearest
    return {f"p@{k}": 100.0 * (position < k).double().mean().item() for k in ks}


def average_over_targets(scores: Mapping[str, float], source: str = "en") -> float:
    """Mean over every language but the source (zero-shot average)."""
    values = [v for lang, v in scores.items() if lang != source]
    if not values:
        raise ValueError("no target-language scores to average")
    return sum(values) / len(values)
