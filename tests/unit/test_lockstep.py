"""Evaluation in lockstep: under ZeRO-3 every rank runs as many forwards as the rank with the most batches."""

from __future__ import annotations

from distgem.train.evaluation import lockstep


def test_lockstep_pads_a_short_rank_to_the_agreed_count_with_dropped_forwards():
    spares = []

    def spare():
        spares.append(1)
        return "spare"

    assert lockstep(["a", "b"], None, spare) == [("a", True), ("b", True)] and not spares  # no collectives
    assert lockstep(["a", "b"], lambda n: 2, spare) == [("a", True), ("b", True)] and not spares
    assert lockstep(["a"], lambda n: 3, spare) == [("a", True), ("spare", False), ("spare", False)]
    assert lockstep([], lambda n: 1, spare) == [("spare", False)]  # a rank with no share still runs the forward
    assert len(spares) == 2  # built once per padded set, only where one is needed
