"""Token classification (UPOS tagging, NER) on encoded corpora (distgem.data.tagged): batches and word-level
evaluation."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch

from distgem.data.align import IGNORE, Window, stitch
from distgem.data.tagged import LABELS, TaggedCorpus
from distgem.tasks.metrics import ner_scores, pos_accuracy


def collate(windows: Sequence[Window], pad_id: int) -> dict[str, torch.Tensor]:
    """Pad windows into a batch: input_ids, attention_mask, labels (-100 where no label)."""
    length = max(len(w.input_ids) for w in windows)
    ids = torch.full((len(windows), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(windows), length), dtype=torch.long)
    labels = torch.full((len(windows), length), IGNORE, dtype=torch.long)
    for row, window in enumerate(windows):
        n = len(window.input_ids)
        ids[row, :n] = torch.tensor(window.input_ids)
        mask[row, :n] = 1
        labels[row, :n] = torch.tensor(window.labels)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def units(windows: Sequence[Window]) -> int:
    """Labelled tokens: the unit the tagging loss averages over."""
    return sum(1 for w in windows for label in w.labels if label != IGNORE)


Schedule = Callable[[list, Callable[[], object]], Iterable[tuple[object, bool]]]
"""(batches, spare) -> (batch, real) pairs: the batches in order, then spare batches whose output is dropped
where other processes run more forwards (distgem.train.evaluation.lockstep; None: the batches alone)."""


def predict(
    logits_fn: Callable[[dict], torch.Tensor],
    corpus: TaggedCorpus,
    pad_id: int,
    batch_size: int,
    indices: Sequence[int] | None = None,
    schedule: Schedule | None = None,
) -> dict[int, list[str]]:
    """Word-level predicted tags of the given sentences (all by default): {sentence index: tags}."""
    indices = range(len(corpus.words)) if indices is None else indices
    flat = [(s, w) for s in indices for w in corpus.windows[s]]
    token_predictions: dict[int, list[list[int]]] = {s: [] for s in indices}
    chunks = [flat[start : start + batch_size] for start in range(0, len(flat), batch_size)]
    schedule = schedule or (lambda batches, spare: ((batch, True) for batch in batches))
    for chunk, real in schedule(chunks, lambda: [(None, corpus.windows[0][0])]):  # a window of no sentence
        logits = logits_fn(collate([w for _, w in chunk], pad_id))
        if not real:
            continue
        best = logits.argmax(-1).tolist()
        for (s, _), row in zip(chunk, best):
            token_predictions[s].append(row)
    return {s: stitch(corpus.windows[s], token_predictions[s], len(corpus.words[s])) for s in indices}


def score(task: str, gold: Sequence[Sequence[str]], predicted_ids: Sequence[Sequence[int]]) -> dict[str, float]:
    """Metrics of one language; `score` is the number early stopping and tables use (accuracy or F1)."""
    names = LABELS[task]
    predicted = [[names[i] for i in sentence] for sentence in predicted_ids]
    if task == "pos":
        accuracy = pos_accuracy(gold, predicted)
        return {"score": accuracy, "accuracy": accuracy}
    scores = ner_scores(gold, predicted)
    return {"score": scores["f1"], **scores}
