"""GEM's passes over the gradient partition (distgem.gem.buffer, distgem.gem.gram): runs, Gram, update + check, capture.

Each pass is checked against a float64 reference computed from the same values, on both paths (the
compiled CPU kernels and the torch chunks), for fp32 and bf16 task gradients, k = 1..13 (the kernels
have fixed-k code up to 8 and a generic loop beyond), sizes that are not multiples of any block, and
several parameter groups.
"""

from __future__ import annotations

import shutil

import pytest
import torch

from distgem.gem import buffer as gem_buffer
from distgem.gem import gram as gem_gram

SIZES = [3, 17, 300, 5000]  # pieces of one flat "partition", none a multiple of the kernels' blocks


@pytest.fixture(params=["kernels", "torch"])
def path(request, monkeypatch):
    """Run the test on the compiled kernels and again on the torch fallback."""
    if request.param == "kernels":
        if gem_gram.library() is None:
            pytest.skip("no C compiler: only the torch path exists here")
    else:
        monkeypatch.setitem(gem_gram._STATE, "lib", None)
    return request.param


def partition(dtype=torch.float32, seed=0, sizes=SIZES):
    """Pieces that are consecutive views of one flat gradient (as ZeRO-3's partition), and that gradient."""
    gen = torch.Generator().manual_seed(seed)
    flat = torch.randn(sum(sizes), generator=gen).to(dtype)
    pieces, start = [], 0
    for size in sizes:
        pieces.append(flat[start : start + size])
        start += size
    return flat, pieces


def reference_gram(memories, grad, groups, layout):
    """Float64 Gram per group from the same values, one piece at a time."""
    k = memories.shape[0]
    out = torch.zeros(len(layout.group_names), k + 1, k + 1, dtype=torch.float64)
    for offset, size, group in zip(layout.offsets, layout.sizes, layout.groups):
        rows = torch.cat([memories[:, offset : offset + size], grad[offset : offset + size].float()[None]]).double()
        out[group] += rows @ rows.T
    return out


def test_adjacent_pieces_merge_into_one_run_that_aliases_the_gradient():
    flat, pieces = partition()
    layout = gem_buffer.Layout.of(pieces)
    (run,) = gem_buffer.runs(pieces, layout)
    assert run.offset == 0 and run.size == flat.numel()
    run.grad.mul_(2)  # a write through the run is a write into the optimizer's gradient
    assert torch.equal(torch.cat(pieces), flat) and run.grad.data_ptr() == flat.data_ptr()


def test_runs_split_where_memory_group_or_dtype_breaks():
    _, pieces = partition()
    separate = [torch.randn(5), torch.randn(7)]
    layout = gem_buffer.Layout.of([*pieces, *separate])
    assert [r.size for r in gem_buffer.runs([*pieces, *separate], layout)] == [sum(SIZES), 5, 7]
    grouped = gem_buffer.Layout.of(pieces, ["a", "a", "b", "a"])
    got = gem_buffer.runs(pieces, grouped)
    assert [(r.offset, r.size, r.group) for r in got] == [(0, 20, 0), (20, 300, 1), (320, 5000, 0)]
    gaps = [pieces[0], pieces[2]]  # the same storage, but not contiguous: two runs
    assert len(gem_buffer.runs(gaps, gem_buffer.Layout.of(gaps))) == 2
    empty = [pieces[0], torch.empty(0), pieces[1]]  # an empty piece (a parameter outside the partition)
    assert [r.size for r in gem_buffer.runs(empty, gem_buffer.Layout.of(empty))] == [20]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("k", [1, 2, 5, 8, 9, 13])
def test_gram_equals_float64_reference(path, dtype, k):
    flat, pieces = partition(dtype, seed=k)
    names = ["emb", "emb", "layer", "emb"]
    layout = gem_buffer.Layout.of(pieces, names)
    memories = torch.randn(k, layout.numel, generator=torch.Generator().manual_seed(100 + k))
    gram = gem_gram.partial_gram(memories, gem_buffer.runs(pieces, layout), len(layout.group_names))
    want = reference_gram(memories, flat, layout.group_names, layout)
    norms = want.diagonal(dim1=1, dim2=2).sqrt()
    # fp32 products summed over at most 16 terms per lane, float64 beyond: far inside 1e-6 of |g_i||g_j|
    assert ((gram - want).abs() / (norms[:, :, None] * norms[:, None, :])).max() < 1e-6


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("k", [1, 2, 8, 13])
def test_update_writes_g_plus_memories_and_checks_what_it_wrote(path, dtype, k):
    flat, pieces = partition(dtype, seed=k)
    layout = gem_buffer.Layout.of(pieces, ["a", "b", "a", "b"])
    memories = torch.randn(k, layout.numel, generator=torch.Generator().manual_seed(7))
    weights = torch.randn(2, k, dtype=torch.float64)
    before = flat.clone()
    dots = gem_gram.combine(gem_buffer.runs(pieces, layout), memories, weights, check=True)
    per_column = torch.tensor([g for g, size in zip(layout.groups, layout.sizes) for _ in range(size)])
    want = before.double() + (weights[per_column] * memories.T.double()).sum(1)
    tol = 2**-7 if dtype == torch.bfloat16 else 1e-6  # one rounding to the gradient's dtype
    assert ((flat.double() - want).abs() <= tol * want.abs() + 1e-6).all()
    written = flat.double()
    checks = torch.stack(
        [torch.stack([(memories[i].double() * written)[per_column == g].sum() for i in range(k)]) for g in range(2)]
    )
    scale = memories.double().norm(dim=1) * written.norm()
    assert ((dots - checks).abs() / scale).max() < 1e-6, "the check must be taken on the value written"


def test_update_without_check_writes_the_same_gradient(path):
    one, pieces_one = partition(seed=3)
    two, pieces_two = partition(seed=3)
    layout = gem_buffer.Layout.of(pieces_one)
    memories = torch.randn(3, layout.numel)
    weights = torch.tensor([[0.5, -1.0, 2.0]])
    assert gem_gram.combine(gem_buffer.runs(pieces_one, layout), memories, weights) is None
    gem_gram.combine(gem_buffer.runs(pieces_two, layout), memories, weights, check=True)
    assert torch.equal(one, two)


def test_capture_accumulate_and_restore_round_trip():
    flat, pieces = partition()
    layout = gem_buffer.Layout.of(pieces)
    buffer = gem_buffer.MemoryBuffer(2, layout, torch.device("cpu"))
    grads = gem_buffer.runs(pieces, layout)
    buffer.capture(1, grads)
    buffer.capture(1, grads, accumulate=True)
    assert torch.equal(buffer.data[1], 2 * flat) and not buffer.data[0].any()
    flat.zero_()
    buffer.restore(1, grads)
    assert torch.equal(flat, buffer.data[1])


@pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None, reason="no C compiler")
def test_the_fused_kernels_build_where_a_compiler_exists():
    """Without this the fast path could vanish silently (every pass would fall back to torch)."""
    assert gem_gram.library() is not None
