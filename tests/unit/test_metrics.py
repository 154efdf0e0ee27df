"""Metrics against independent computations written here."""

from __future__ import annotations

import math
import random

import pytest
import torch

from distgem.data.conll import entity_spans
from distgem.tasks.metrics import average_over_targets, ner_scores, perplexity, pos_accuracy, retrieval_precision


def test_pos_accuracy_counts_words_not_sentences():
    gold = [["NOUN", "VERB"], ["DET", "NOUN", "PUNCT", "ADJ"]]
    pred = [["NOUN", "NOUN"], ["DET", "NOUN", "PUNCT", "ADJ"]]
    assert pos_accuracy(gold, pred) == pytest.approx(100 * 5 / 6)
    with pytest.raises(ValueError, match="2 gold tags has 1"):
        pos_accuracy([["A", "B"]], [["A"]])


def _entity_f1(gold, pred):
    g = {(i, *s) for i, tags in enumerate(gold) for s in entity_spans(tags)}
    p = {(i, *s) for i, tags in enumerate(pred) for s in entity_spans(tags)}
    tp = len(g & p)
    precision = tp / len(p) if p else 0.0
    recall = tp / len(g) if g else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return 100 * precision, 100 * recall, 100 * f1


def test_ner_scores_equal_exact_span_matching_on_random_iob2():
    rng = random.Random(0)
    types = ["PER", "LOC", "ORG", "MISC"]

    def sentence(n):
        tags, inside = [], None
        for _ in range(n):
            r = rng.random()
            if r < 0.5:
                tags.append("O")
                inside = None
            elif r < 0.75 or inside is None:
                inside = rng.choice(types)
                tags.append("B-" + inside)
            else:
                tags.append("I-" + inside)
        return tags

    gold = [sentence(rng.randint(1, 12)) for _ in range(200)]
    pred = [[t if rng.random() < 0.85 else rng.choice(["O", "B-PER", "B-LOC"]) for t in s] for s in gold]
    pred = [
        [("B-" + t[2:] if t.startswith("I-") and (i == 0 or s[i - 1][2:] != t[2:]) else t) for i, t in enumerate(s)]
        for s in pred
    ]  # keep predictions valid IOB2
    scores = ner_scores(gold, pred)
    precision, recall, f1 = _entity_f1(gold, pred)
    assert scores == pytest.approx({"precision": precision, "recall": recall, "f1": f1})
    assert 0 < scores["f1"] < 100


def test_perplexity_is_exp_of_mean_masked_cross_entropy():
    torch.manual_seed(0)
    logits = torch.randn(3, 7, 11)
    labels = torch.full((3, 7), -100)
    labels[0, 2], labels[1, 5], labels[2, 0] = 4, 9, 1
    nll = torch.nn.functional.cross_entropy(logits.view(-1, 11), labels.view(-1), ignore_index=-100, reduction="sum")
    manual = [
        -(logits[0, 2].log_softmax(-1)[4]),
        -(logits[1, 5].log_softmax(-1)[9]),
        -(logits[2, 0].log_softmax(-1)[1]),
    ]
    assert perplexity(nll.item(), 3) == pytest.approx(math.exp(sum(m.item() for m in manual) / 3))
    with pytest.raises(ValueError):
        perplexity(1.0, 0)


def test_retrieval_precision_against_brute_force_ranks():
    torch.manual_seed(1)
    n, d = 60, 8
    target = torch.randn(n, d)
    source = target + 1.2 * torch.randn(n, d)
    scores = retrieval_precision(source, target)
    cos = lambda a, b: float(a @ b / (a.norm() * b.norm()))  # noqa: E731
    ranks = []
    for i in range(n):
        true = cos(source[i], target[i])
        ranks.append(sum(1 for j in range(n) if j != i and cos(source[i], target[j]) >= true))
    for k in (1, 5, 10):
        assert scores[f"p@{k}"] == pytest.approx(100 * sum(r < k for r in ranks) / n)
    assert 0 < scores["p@1"] < scores["p@10"] <= 100
    reverse = retrieval_precision(target, source)  # en -> xx ranks columns of the same matrix
    cos_matrix = torch.nn.functional.normalize(source, dim=1) @ torch.nn.functional.normalize(target, dim=1).T
    column_ranks = [(cos_matrix[:, i] >= cos_matrix[i, i]).sum().item() - 1 for i in range(n)]
    assert reverse["p@1"] == pytest.approx(100 * sum(r < 1 for r in column_ranks) / n)
    assert retrieval_precision(target, target)["p@1"] == 100.0


def test_retrieval_ties_count_against_the_true_target():
    same = torch.ones(4, 3)
    assert retrieval_precision(same, same)["p@1"] == 0.0


def test_average_over_targets_excludes_source():
    assert average_over_targets({"en": 99.0, "es": 60.0, "fr": 70.0}) == 65.0
    with pytest.raises(ValueError):
        average_over_targets({"en": 1.0})
