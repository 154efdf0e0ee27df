"""GEM's numerics on `device`: the torch path GPUs take against the CPU's C kernels, qpth against the exact solver.

A GPU never runs distgem/gem/kernels.c (C, CPU only): the Gram and the update + check go through the float64
chunks of distgem/gem/gram.py. On CPU the same torch path is forced by taking the kernels away, so the CPU
case compares the two implementations that CPUs and GPUs run, on the same inputs. Inputs are fresh random
numbers every run (the seed is in every failure message).
"""

from __future__ import annotations

import os

import pytest
import torch

from distgem.gem import buffer as gem_buffer
from distgem.gem import gram as gem_gram
from distgem.gem import projector as gem_projector
from distgem.gem import qp as gem_qp

PIECES = [(100_000, "a"), (50_000, "a"), (3, "b"), (150_004, "a"), (50_001, "c")]
"""A partition as ZeRO hands it over: pieces of three groups (per-layer mode); the first two are adjacent and
merge into one run; odd sizes leave tails after the kernels' 16 lanes and 256-column blocks."""
GROUPS = ["a", "b", "c"]
FLOAT64_TOL = 1e-10
"""The torch path against a float64 reference, relative to the Cauchy-Schwarz scale: float64 chunks."""
KERNEL_TOL = 1e-5
"""The C kernels against either, same scale: they sum in fp32 within blocks of 256 columns, float64 across."""
QPTH_TOL = 1e-5
"""qpth's v against the exact solver's, relative to the largest |v|: interior point to a KKT residual of 1e-7."""


def _seed() -> int:
    return int.from_bytes(os.urandom(4), "little")


def _instance(k: int, memory_dtype, grad_dtype, seed: int):
    """k memory rows over the partition, and a task gradient against their mean (violated), on the CPU."""
    gen = torch.Generator().manual_seed(seed)
    n = sum(size for size, _ in PIECES)
    rows = torch.randn(k, n, generator=gen)
    grad = torch.randn(n, generator=gen) - 0.5 * k**0.5 * rows.mean(0)
    return rows.to(memory_dtype), grad.to(grad_dtype)


def _runs(grad: torch.Tensor):
    sizes = [size for size, _ in PIECES]
    pieces = list(grad.split(sizes))
    layout = gem_buffer.Layout.of(pieces, [group for _, group in PIECES])
    return gem_buffer.runs(pieces, layout), layout


def _reference(rows: torch.Tensor, grad: torch.Tensor, v: torch.Tensor):
    """float64 Gram per group, and the updated gradient (rounded once to grad's dtype) with its dots per group."""
    k = rows.shape[0]
    gram = torch.zeros(len(GROUPS), k + 1, k + 1, dtype=torch.float64)
    new = torch.empty_like(grad)
    dots = torch.zeros(len(GROUPS), k, dtype=torch.float64)
    start = 0
    for size, group in PIECES:
        g = GROUPS.index(group)
        block = torch.cat([rows[:, start : start + size].double(), grad[None, start : start + size].double()])
        gram[g] += block @ block.T
        updated = (v[g] @ block[:k] + block[k]).to(grad.dtype)
        new[start : start + size] = updated
        dots[g] += block[:k] @ updated.double()
        start += size
    return gram, new, dots


def _scale(gram: torch.Tensor) -> torch.Tensor:
    norms = gram.diagonal(dim1=-2, dim2=-1).clamp(min=0).sqrt()
    return norms[..., :, None] * norms[..., None, :]


DTYPES = [
    (torch.float32, torch.float32),
    (torch.float32, torch.bfloat16),
    (torch.bfloat16, torch.float32),
    (torch.bfloat16, torch.bfloat16),
]


@pytest.mark.parametrize("k", [1, 2, 5])
@pytest.mark.parametrize("memory_dtype, grad_dtype", DTYPES, ids=["f32-f32", "f32-bf16", "bf16-f32", "bf16-bf16"])
def test_torch_path_equals_the_cpu_kernels(device, monkeypatch, record, k, memory_dtype, grad_dtype):
    seed = _seed()
    rows, grad = _instance(k, memory_dtype, grad_dtype, seed)
    v = torch.rand(len(GROUPS), k, dtype=torch.float64, generator=torch.Generator().manual_seed(seed + 1))
    ref_gram, ref_grad, ref_dots = _reference(rows, grad, v)
    scale = _scale(ref_gram)

    with monkeypatch.context() as patch:  # the path a GPU takes: no C kernels, on the device
        patch.setitem(gem_gram._STATE, "lib", None)
        rows_d, grad_d = rows.to(device), grad.clone().to(device)
        runs_d, layout = _runs(grad_d)
        assert len(runs_d) == len(PIECES) - 1, "the two adjacent pieces of group a merge into one run"
        gram_d = gem_gram.partial_gram(rows_d, runs_d, len(GROUPS))
        dots_d = gem_gram.combine(runs_d, rows_d, v, check=True)
    assert gram_d.device.type == device.type and gram_d.dtype == torch.float64
    gram_d, grad_d, dots_d = gram_d.cpu(), grad_d.cpu(), dots_d.cpu()
    dot_scale = rows.double().norm(dim=1) * ref_grad.double().norm()
    ulp = torch.finfo(grad_dtype).eps * ref_grad.double().abs()  # one rounding of the float64 value
    worst = {
        "gram": float(((gram_d - ref_gram).abs() / scale).max()),
        "update_ulp": float(((grad_d.double() - ref_grad.double()).abs() / ulp.clamp(min=1e-30)).max()),
        "dots": float(((dots_d - ref_dots).abs() / dot_scale).max()),
    }
    assert worst["gram"] <= FLOAT64_TOL, (seed, worst)
    assert worst["update_ulp"] <= 1.0, (seed, worst)
    assert worst["dots"] <= FLOAT64_TOL, (seed, worst)

    if gem_gram.library() is not None:  # the C path on the CPU, the same inputs
        grad_c = grad.clone()
        runs_c, _ = _runs(grad_c)
        gram_c = gem_gram.partial_gram(rows, runs_c, len(GROUPS))
        dots_c = gem_gram.combine(runs_c, rows, v, check=True)
        # the kernels add in fp32 and round once to grad's dtype: a few fp32 roundings of the terms, plus one ulp
        fp32_bound = (k + 2) * torch.finfo(torch.float32).eps * (grad.double().abs() + _update_magnitude(rows, v)) + ulp
        worst.update(
            kernel_gram=float(((gram_c - gram_d).abs() / scale).max()),
            kernel_update=float(((grad_c.double() - grad_d.double()).abs() / fp32_bound).max()),
            kernel_dots=float(((dots_c - dots_d).abs() / dot_scale).max()),
        )
        assert worst["kernel_gram"] <= KERNEL_TOL, (seed, worst)
        assert worst["kernel_update"] <= 1.0, (seed, worst)
        assert worst["kernel_dots"] <= KERNEL_TOL, (seed, worst)
    record(seed=seed, **worst)


def _update_magnitude(rows: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """sum_i |v_i m_i| per column (each column with its group's v): the size of what the update adds."""
    per_column = torch.cat([v[GROUPS.index(group)].expand(size, -1) for size, group in PIECES])  # (n, k)
    return (per_column.T * rows.double().abs()).sum(0)


@pytest.mark.parametrize("k", [2, 5, 8])
@pytest.mark.parametrize("gamma", [0.0, 0.5])
def test_qpth_on_the_device_equals_the_exact_solver(device, record, k, gamma):
    seed = _seed()
    gen = torch.Generator().manual_seed(seed)
    m = torch.randn(16, k, 4 * k + 8, generator=gen, dtype=torch.float64)
    g = torch.randn(16, 4 * k + 8, generator=gen, dtype=torch.float64) - m.mean(1)
    gram, dots = m @ m.mT, (m @ g[..., None])[..., 0]
    qp = gem_qp.solve(gram.to(device), dots.to(device), gamma, "qpth")
    exact = gem_qp.solve(gram, dots, gamma, "exact")
    assert qp.solver == "qpth" and qp.v.device.type == device.type
    assert qp.fallbacks == 0, f"qpth failed {qp.fallbacks} of 16 QPs and the exact solver stood in (seed {seed})"
    worst = float((qp.v.cpu() - exact.v).abs().max() / exact.v.abs().max())
    record(seed=seed, v_rel=worst, tol=QPTH_TOL)
    assert worst <= QPTH_TOL, (seed, worst)
    assert bool((qp.violated.cpu() == exact.violated).all())


@pytest.mark.parametrize("solver", ["exact", "qpth"])
def test_projection_on_the_device_equals_the_cpu(device, record, solver):
    seed = _seed()
    gen = torch.Generator().manual_seed(seed)
    memories = torch.randn(3, 200_003, generator=gen)
    grad = torch.randn(200_003, generator=gen) - memories[:2].sum(0)
    mine = gem_projector.project(grad.to(device), memories.to(device), 0.5, solver)
    assert mine.device.type == device.type and mine.dtype == torch.float32
    cpu = gem_projector.project(grad, memories, 0.5, solver)
    worst = float((mine.cpu() - cpu).abs().max() / cpu.abs().max())
    after = (memories.double() @ mine.cpu().double()) / (memories.double().norm(dim=1) * mine.double().norm())
    record(seed=seed, rel=worst, min_cosine_after=float(after.min()))
    assert worst <= 1e-5, (seed, worst)
    assert float(after.min()) >= -1e-6, (seed, after)
