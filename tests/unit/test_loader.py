"""Per-rank sharding and order: disjoint and complete shards for 1-4 ranks, seeded order, exact resume."""

from __future__ import annotations

import json

import pytest
import torch

from distgem.data.loader import MEGABATCH, BatchStream, group_by_length
from distgem.data.rows import ConcatRows
from distgem.distributed.world import World


def rank_micro_batches(batch, rank: int, size: int, accumulation: int):
    """The world's slice of a global batch for `rank` of `size` (no process group needed)."""
    return World(rank, size, rank, torch.device("cpu")).micro_batches(batch, accumulation)


SIZE, BATCH = 53, 24  # an epoch that is no multiple of the batch: global batches straddle epoch ends
LENGTHS = torch.randint(1, 60, (SIZE,), generator=torch.Generator().manual_seed(5))
GROUPED = pytest.mark.parametrize("lengths", [None, LENGTHS], ids=["random", "grouped"])


def _epochs(world: int, accumulation: int, epochs: int = 3, seed: int = 0, lengths=None) -> dict[int, list[list[int]]]:
    """epoch -> per-rank list of the example indices each rank read, following positions in the stream."""
    stream = BatchStream(SIZE, BATCH, seed, "mlm", lengths)
    read: dict[int, list[list[int]]] = {}
    position = 0
    while position < epochs * SIZE:
        batch = stream.next()
        # a rank's slice is contiguous in the global batch: position of its first example
        for rank in range(world):
            offset = position + rank * (BATCH // world)
            for micro in rank_micro_batches(batch, rank, world, accumulation):
                for index in micro:
                    read.setdefault(offset // SIZE, [[] for _ in range(world)])[rank].append(index)
                    offset += 1
        position += BATCH
    return {e: ranks for e, ranks in read.items() if e < epochs}


@GROUPED
@pytest.mark.parametrize("world, accumulation", [(1, 1), (2, 1), (2, 2), (3, 1), (3, 2), (4, 1), (4, 2)])
def test_rank_shards_are_disjoint_and_their_union_is_the_epoch(world, accumulation, lengths):
    for epoch, ranks in _epochs(world, accumulation, lengths=lengths).items():
        seen = [i for rank in ranks for i in rank]
        assert sorted(seen) == list(range(SIZE)), f"epoch {epoch}: not every example exactly once"
        for a in range(world):
            for b in range(a + 1, world):
                assert not set(ranks[a]) & set(ranks[b]), f"epoch {epoch}: ranks {a} and {b} overlap"
        assert all(ranks), "a rank read nothing"


def test_n_ranks_read_the_global_batch_one_rank_reads():
    for world in (2, 3, 4):
        one, many = BatchStream(SIZE, BATCH, 3, "pos"), BatchStream(SIZE, BATCH, 3, "pos")
        for _ in range(20):
            batch = many.next()
            joined = [i for r in range(world) for micro in rank_micro_batches(batch, r, world, 1) for i in micro]
            assert joined == one.next()


def test_order_depends_only_on_seed_task_and_epoch():
    a, b = BatchStream(SIZE, BATCH, 7, "mlm"), BatchStream(SIZE, BATCH, 7, "mlm")
    assert [a.next() for _ in range(30)] == [b.next() for _ in range(30)]
    assert a.order(0).tolist() == BatchStream(SIZE, 8, 7, "mlm").order(0).tolist()  # not on the batch size
    assert a.order(0).tolist() != a.order(1).tolist()
    assert a.order(0).tolist() != BatchStream(SIZE, BATCH, 8, "mlm").order(0).tolist()
    assert a.order(0).tolist() != BatchStream(SIZE, BATCH, 7, "xsr").order(0).tolist()
    assert sorted(a.order(2).tolist()) == list(range(SIZE))


@GROUPED
@pytest.mark.parametrize("stop_after", [1, 2, 3, 5])  # 2 batches = 48 < 53: the 3rd crosses the epoch end
def test_resume_mid_epoch_reads_exactly_the_remaining_examples(stop_after, lengths):
    uninterrupted = BatchStream(SIZE, BATCH, 1, "xsr", lengths)
    expected = [uninterrupted.next() for _ in range(20)]
    first = BatchStream(SIZE, BATCH, 1, "xsr", lengths)
    before = [first.next() for _ in range(stop_after)]
    state = json.loads(json.dumps(first.state_dict()))  # as the checkpoint stores it
    resumed = BatchStream(SIZE, BATCH, 1, "xsr", lengths)
    resumed.load_state_dict(state)
    after = [resumed.next() for _ in range(20 - stop_after)]
    assert before + after == expected
    # the epoch the run stopped in: what was read before plus what is read after is that epoch, once each
    flat = [i for batch in before + after for i in batch]
    epoch = state["epoch"]
    assert sorted(flat[epoch * SIZE : (epoch + 1) * SIZE]) == list(range(SIZE))
    assert flat[epoch * SIZE : (epoch + 1) * SIZE] == uninterrupted.order(epoch).tolist()


def test_rank_slices_refuse_a_batch_that_does_not_divide():
    with pytest.raises(ValueError, match="does not divide"):
        rank_micro_batches(list(range(10)), 0, 4, 1)


def test_resume_refuses_a_checkpoint_of_another_corpus():
    stream = BatchStream(SIZE, BATCH, 0, "mlm")
    stream.next()
    other = BatchStream(SIZE + 1, BATCH, 0, "mlm")
    with pytest.raises(ValueError, match="written for 53 examples"):
        other.load_state_dict(stream.state_dict())


def test_grouping_by_length_keeps_a_seeded_permutation_and_cuts_padding():
    size, batch = 4000, 16
    lengths = torch.randint(3, 64, (size,), generator=torch.Generator().manual_seed(0))
    grouped, plain = BatchStream(size, batch, 2, "pos", lengths), BatchStream(size, batch, 2, "pos")
    order = grouped.order(0)
    assert sorted(order.tolist()) == list(range(size))
    assert order.tolist() == BatchStream(size, batch, 2, "pos", lengths).order(0).tolist()
    assert order.tolist() != grouped.order(1).tolist()

    def padded(stream) -> float:  # tokens a batch pads to / tokens it holds, over one epoch
        batches = [stream.next() for _ in range(size // batch)]
        return sum(batch * int(lengths[b].max()) for b in batches) / sum(int(lengths[b].sum()) for b in batches)

    assert padded(grouped) < 1.1 < 1.5 < padded(plain)  # random batches of 16 pad ~1.8x here


def test_group_by_length_sorts_within_megabatches_only():
    lengths = torch.arange(1000)
    order = torch.randperm(1000, generator=torch.Generator().manual_seed(1))
    grouped = group_by_length(order, lengths, 10, torch.Generator().manual_seed(1))
    chunk = 10 * MEGABATCH
    for start in range(0, 1000, chunk):  # each megabatch holds the same examples as the random order's
        assert sorted(grouped[start : start + chunk].tolist()) == sorted(order[start : start + chunk].tolist())
    spans = [int(b.max() - b.min()) for b in grouped.split(10)]
    assert max(spans) < 100  # a batch's lengths are neighbours in its megabatch, not spread over 0..999


def test_lengths_come_from_arrow_offsets_and_match_the_rows():
    import pyarrow as pa

    from distgem.data.rows import ArrowRows, ConcatRows, lengths_of

    table = pa.table({"source": [[1, 2], [3], [4, 5, 6], []], "target": [[1], [2, 3, 4], [5], [6, 7]]})
    pairs = ArrowRows(table, ["source", "target"], start=1)
    mono = ArrowRows(table, ["source"])
    assert lengths_of(pairs).tolist() == [max(len(a), len(b)) for a, b in pairs] == [3, 3, 2]
    assert lengths_of(mono).tolist() == [len(r) for r in mono] == [2, 1, 3, 0]
    assert lengths_of(ConcatRows([mono, mono[1:3]])).tolist() == [2, 1, 3, 0, 1, 3]
    assert lengths_of([[1, 2, 3], [4]]).tolist() == [3, 1]  # in-memory rows are measured


def test_held_out_memory_examples_give_every_language_of_a_pooled_constraint_its_share():
    """The held-out memory loss of a pooled XSR constraint is read from all of its languages: the first 64
    rows of the concatenation were French only (the real-model runs' `memory_loss/xsr` until 2026-12-04)."""
    from types import SimpleNamespace

    from distgem.tasks.sources import memory_sources, spread

    pairs = {
        lang: [(f"en {i}", f"{lang} {i}") for i in range(n)] for lang, n in (("fr", 200), ("es", 200), ("el", 150))
    }
    method = SimpleNamespace(name="gem", memory=["xsr"], xsr_pooling="words", gem=SimpleNamespace(per_language=False))
    (pooled,) = memory_sources(method, SimpleNamespace(pairs_train=pairs), tokenizer=None, seed=0)
    chosen = spread(pooled.size, 64)
    assert len(set(chosen)) == 64 and chosen == spread(pooled.size, 64)
    rows = ConcatRows(list(pairs.values()))
    share = {lang: sum(rows[i][1].startswith(lang) for i in chosen) for lang in pairs}
    assert share == pytest.approx({lang: 64 * len(p) / pooled.size for lang, p in pairs.items()}, abs=1)
    assert spread(5, 64) == [0, 1, 2, 3, 4] and spread(5, 0) == []
