"""GEM's dual QP and projection: constraints hold, v is optimal (KKT, quadprog), solvers agree, no NaN."""

from __future__ import annotations

import numpy as np
import pytest
import quadprog
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from distgem.gem import gram, qp
from distgem.gem.buffer import Layout, runs
from distgem.gem.projector import Projector, project
from distgem.gem.qp import solve, solve_dual

SOLVERS = ["exact", "qpth"]
F64 = torch.float64


def gram_of(memories, *pieces):
    """(memory Gram, dots <g_i, g>) through the engine's own pass over the gradient's pieces (`project`'s numbers)."""
    layout = Layout.of(pieces)
    full = gram.partial_gram(memories, runs(pieces, layout), 1)[0]
    k = memories.shape[0]
    return full[:k, :k], full[:k, k]


@st.composite
def instances(draw, max_k=10, degenerate=True):
    """(grad (P,), memories (k, P)) float64 with a violated constraint, any scale from 1e-8 to 1e4."""
    k = draw(st.integers(1, max_k))
    P = draw(st.integers(2, 24) if degenerate else st.integers(2 * k + 3, 2 * k + 24))  # P < k: dependent rows
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**31)))
    memories = torch.randn(k, P, generator=gen, dtype=F64)
    if degenerate:
        for i in range(1, k):
            kind = draw(st.sampled_from(["random", "random", "duplicate", "collinear", "opposite", "zero"]))
            j = draw(st.integers(0, i - 1))
            if kind == "duplicate":
                memories[i] = memories[j]
            elif kind == "collinear":
                memories[i] = 3.0 * memories[j] + 1e-6 * memories[i]
            elif kind == "opposite":
                memories[i] = -memories[j] + 1e-3 * memories[i]
            elif kind == "zero":
                memories[i] = 0.0
    # each memory its own scale: a trace-relative regulariser would drown the small ones
    scales = 10.0 ** torch.tensor(draw(st.lists(st.floats(-8, 4), min_size=k, max_size=k)), dtype=F64)
    memories *= scales[:, None]
    grad = torch.randn(P, generator=gen, dtype=F64)
    if draw(st.booleans()):  # push g against a memory so that some constraint is violated
        i = draw(st.integers(0, k - 1))
        grad -= 2 * memories[i] * (grad.norm() / memories[i].norm().clamp(min=1e-300))
    grad *= 10.0 ** draw(st.floats(-8, 4))
    return grad, memories


def check_optimal(grad, memories, new, v, gamma, rtol=1e-6):
    """Feasibility of the new gradient and KKT of v, per constraint, relative to the size of the terms."""
    norms = memories.norm(dim=1)
    r = memories @ new.to(F64)  # <g_i, g~> = (G v + d)_i, the dual's gradient
    size = norms * (grad.norm() + (v.abs() * norms).sum())  # magnitude of the terms summed in r_i
    assert torch.isfinite(new).all() and torch.isfinite(v).all()
    assert (r >= -rtol * size).all(), "a constraint is violated after projection"
    assert (v >= gamma - 1e-12 * (1 + gamma)).all(), "v below memory_strength"
    free = (v - gamma) * norms > rtol * (grad.norm() + (v.abs() * norms).sum())
    assert (r[free].abs() <= rtol * size[free]).all(), "stationarity fails on the free set"


@settings(max_examples=200, deadline=None)
@given(instances(), st.sampled_from(SOLVERS), st.sampled_from([0.0, 0.5]))
def test_projection_is_feasible_and_optimal(instance, solver, gamma):
    grad, memories = instance
    new = project(grad, memories, gamma, solver)
    if (memories @ grad >= 0).all():
        assert new is grad
        return
    v = solve_dual(*gram_of(memories, grad), gamma, solver)
    torch.testing.assert_close(new, grad + memories.T @ v, rtol=1e-12, atol=1e-12 * float(new.abs().max()))
    check_optimal(grad, memories, new, v, gamma)


@settings(max_examples=100, deadline=None)
@given(instances(degenerate=False), st.sampled_from([0.0, 0.3]))
def test_solvers_agree_with_quadprog(instance, gamma):
    grad, memories = instance
    grad, memories = grad / grad.norm(), memories / memories.norm(dim=1, keepdim=True)  # well-conditioned
    G, d = (memories @ memories.T).numpy(), (memories @ grad).numpy()
    expected = quadprog.solve_qp(G, -d, np.eye(len(d)), np.full(len(d), gamma))[0]
    exact = solve_dual(torch.from_numpy(G), torch.from_numpy(d), gamma, "exact").numpy()
    qpth = solve_dual(torch.from_numpy(G), torch.from_numpy(d), gamma, "qpth").numpy()
    np.testing.assert_allclose(exact, expected, rtol=1e-6, atol=1e-7 * (1 + np.abs(expected).max()))
    np.testing.assert_allclose(qpth, expected, rtol=1e-5, atol=1e-6 * (1 + np.abs(expected).max()))


@settings(max_examples=30, deadline=None)
@given(instances(degenerate=False), st.floats(-8, 4), st.floats(-8, 4), st.sampled_from(SOLVERS))
def test_v_scales_as_grad_over_memory_scale(instance, log_g, log_m, solver):
    """gamma = 0: scaling g by s_g and M by s_m scales v by s_g / s_m exactly (no absolute eps anywhere)."""
    grad, memories = instance
    G, d = memories @ memories.T, memories @ grad
    s_g, s_m = 10.0**log_g, 10.0**log_m
    v = solve_dual(G, d, 0.0, solver)
    scaled = solve_dual(G * s_m**2, d * s_m * s_g, 0.0, solver)
    torch.testing.assert_close(scaled, v * s_g / s_m, rtol=1e-7, atol=1e-9 * float(v.abs().max() * s_g / s_m))


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 50), st.integers(0, 2**31), st.floats(-8, 4), st.floats(-8, 4), st.sampled_from(SOLVERS))
def test_k1_is_the_closed_form(P, seed, log_g, log_r, solver):
    gen = torch.Generator().manual_seed(seed)
    r = torch.randn(P, generator=gen, dtype=F64) * 10.0**log_r
    g = torch.randn(P, generator=gen, dtype=F64) * 10.0**log_g
    if g @ r >= 0:
        g = -g
    new = project(g, r[None], 0.0, solver)
    # atol: the relative ridge (1e-10 of |r|^2) leaves a residual of that order along r
    torch.testing.assert_close(new, g - (g @ r) / (r @ r) * r, rtol=1e-9, atol=1e-9 * float(g.norm()))
    assert abs(float(new @ r)) <= 1e-9 * float(g.norm() * r.norm())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_no_violation_returns_the_same_tensor_unchanged(dtype):
    gen = torch.Generator().manual_seed(0)
    grad = torch.randn(100, generator=gen).to(dtype)
    memories = torch.randn(4, 100, generator=gen).to(dtype)
    memories *= torch.where(memories.to(F64) @ grad.to(F64) < 0, -1, 1).to(dtype)[:, None]  # every <g_i, g> >= 0
    before = grad.clone()
    for solver in SOLVERS:
        for gamma in (0.0, 1.0):  # the margin does not trigger a projection by itself
            assert project(grad, memories, gamma, solver) is grad
    assert torch.equal(grad, before)
    zero = torch.zeros(100, dtype=dtype)
    assert project(zero, memories) is zero
    assert project(grad, torch.zeros(3, 100, dtype=dtype)) is grad


@pytest.mark.parametrize("dtype,rtol", [(torch.float32, 1e-5), (torch.float64, 1e-9), (torch.bfloat16, 3e-2)])
@pytest.mark.parametrize("solver", SOLVERS)
def test_dtype_and_device_are_preserved(dtype, rtol, solver):
    gen = torch.Generator().manual_seed(1)
    memories = torch.randn(3, 1000, generator=gen, dtype=F64) * 1e-3
    grad = -memories.sum(0) + 1e-3 * torch.randn(1000, generator=gen, dtype=F64)
    grad_d, memories_d = grad.to(dtype), memories.to(dtype)
    new = project(grad_d, memories_d, 0.0, solver)
    assert new.dtype == dtype and new.device == grad_d.device and new is not grad_d
    assert torch.equal(grad_d, grad.to(dtype)), "the input gradient must not be modified"
    # constraints hold on the values actually returned, up to the rounding of one cast to dtype
    r = memories_d.to(F64) @ new.to(F64)
    assert (r >= -rtol * memories.norm(dim=1) * grad.norm()).all()
    v = solve_dual(*gram_of(memories_d, grad_d), 0.0, solver)
    assert v.dtype == F64 and v.device == grad_d.device


def test_the_torch_gram_over_pieces_equals_the_full_gram_and_accumulates_in_float64(monkeypatch):
    gen = torch.Generator().manual_seed(2)
    # offset rows: their inner products are large sums of same-sign terms, where fp32 accumulation drifts
    rows = (torch.randn(5, 200_003, generator=gen) + 3).to(torch.float32)
    expected = rows.to(F64) @ rows.to(F64).T
    monkeypatch.setitem(gram._STATE, "lib", None)  # the torch path (CUDA's); the C path: tests/unit/test_memory.py
    monkeypatch.setattr(gram, "_chunk", lambda device: 4099)  # several chunks per piece
    for seed in range(3):
        cuts = sorted(torch.randint(0, rows.shape[1], (4,), generator=torch.Generator().manual_seed(seed)).tolist())
        pieces = [p.clone() for p in torch.tensor_split(rows[4], cuts)]
        pieces[0] = pieces[0].to(torch.bfloat16)  # mixed dtypes: each piece is upcast before multiplying
        task = torch.cat([p.to(F64) for p in pieces])
        mem_gram, dots = gram_of(rows[:4], *pieces)
        torch.testing.assert_close(mem_gram, expected[:4, :4], rtol=1e-13, atol=0)
        torch.testing.assert_close(dots, rows[:4].to(F64) @ task, rtol=1e-13, atol=0)
    assert not torch.allclose(rows @ rows.T, expected.float(), rtol=1e-7, atol=0), "fp32 would have drifted"


@pytest.mark.parametrize("solver", SOLVERS)
def test_batched_equals_looped(solver):
    gen = torch.Generator().manual_seed(3)
    memories = torch.randn(2, 3, 5, 40, generator=gen, dtype=F64)
    grads = torch.randn(2, 3, 40, generator=gen, dtype=F64)
    grams, dots = memories @ memories.mT, (memories @ grads[..., None])[..., 0]
    result = solve(grams, dots, 0.1, solver)
    assert result.v.shape == (2, 3, 5) and result.violated.shape == (2, 3) and result.solver == solver
    for i in range(2):
        for j in range(3):
            torch.testing.assert_close(
                result.v[i, j], solve_dual(grams[i, j], dots[i, j], 0.1, solver), rtol=1e-6, atol=1e-8
            )
            assert bool(result.violated[i, j]) == bool((dots[i, j] < 0).any())


def test_auto_uses_exact_for_small_problems_and_qpth_for_large_batches():
    gen = torch.Generator().manual_seed(4)
    memories = torch.randn(64, 10, 30, generator=gen, dtype=F64)
    grads = -memories.sum(1)
    grams, dots = memories @ memories.mT, (memories @ grads[..., None])[..., 0]
    assert solve(grams[0], dots[0]).solver == "exact"
    large = solve(grams, dots)
    assert large.solver == "qpth"
    torch.testing.assert_close(large.v, solve(grams, dots, solver="exact").v, rtol=1e-5, atol=1e-7)


def test_the_update_writes_in_place_per_piece():
    gen = torch.Generator().manual_seed(5)
    memories = torch.randn(3, 50, generator=gen)
    grad = torch.randn(50, generator=gen) - 2 * memories[0]
    expected = project(grad, memories)
    pieces = [grad[:20].clone(), grad[20:].clone()]  # two storages: two runs
    layout = Layout.of(pieces)
    v = solve_dual(*gram_of(memories, *pieces))
    gram.combine(runs(pieces, layout), memories, v[None])
    assert not torch.allclose(torch.cat(pieces), grad)
    torch.testing.assert_close(torch.cat(pieces), expected)  # the pieces were written, in their own storage


def test_zero_and_non_finite_inputs_give_finite_v():
    for solver in SOLVERS:
        for gamma in (0.0, 0.7):
            v = solve_dual(torch.zeros(3, 3), torch.zeros(3), gamma, solver)
            assert torch.equal(v, torch.full((3,), gamma, dtype=F64))  # any v >= gamma is optimal; the smallest
        bad = solve_dual(torch.full((2, 2), torch.nan), torch.tensor([-1.0, torch.inf]), 0.0, solver)
        assert torch.equal(bad, torch.zeros(2, dtype=F64))  # documented: no projection on an overflow step
    grad, memories = torch.tensor([1.0, 0.0]), torch.tensor([[torch.nan, 1.0]])
    assert project(grad, memories) is grad


@pytest.mark.parametrize("failure", ["nan", "inaccurate", "raise", "wrong"])
def test_qpth_failures_fall_back_to_the_exact_solver(monkeypatch, failure):
    gen = torch.Generator().manual_seed(6)
    memories = torch.randn(4, 6, 30, generator=gen, dtype=F64)
    grads = -memories.sum(1)
    grams, dots = memories @ memories.mT, (memories @ grads[..., None])[..., 0]
    expected = solve_dual(grams, dots, 0.0, "exact")

    real = qp.qpth_function()

    def broken(**options):
        def call(Q, p, G, h, A, b):
            if failure == "raise":
                raise RuntimeError("Q is not SPD.")
            if failure == "inaccurate":
                print("qpth warning: Returning an inaccurate and potentially incorrect solution.")
                return -h + 0.1  # plausible but not optimal
            u = real(**options)(Q, p, G, h, A, b)
            u[1] = torch.nan if failure == "nan" else u[1] + 0.5  # one element wrong, silently or not
            return u

        return call

    monkeypatch.setattr(qp, "qpth_function", lambda: broken)
    result = solve(grams, dots, 0.0, "qpth")
    n_bad = 4 if failure in ("raise", "inaccurate") else 1  # qpth's print does not say which element
    assert result.fallbacks == n_bad
    torch.testing.assert_close(result.v, expected)
    if failure not in ("raise", "inaccurate"):
        return
    # a run counts them: the projector's counters are the run state's "gem" entry (results.json, TensorBoard)
    projector = Projector(["a", "b", "c", "d", "e", "f"], solver="qpth")
    grad = -memories[0].sum(0)
    layout = Layout.of([grad])
    projector.gradient(runs([grad], layout), memories[0], 1, {})
    assert projector.counters["fallbacks"] == 1 and projector.counters["violated_steps"] == 1


def test_invalid_arguments_are_refused():
    with pytest.raises(ValueError, match="solver"):
        solve_dual(torch.eye(2), torch.ones(2), solver="cvx")
    with pytest.raises(ValueError, match="memory_strength"):
        solve_dual(torch.eye(2), torch.ones(2), memory_strength=-1.0)
    with pytest.raises(ValueError, match="does not match"):
        solve_dual(torch.eye(3), torch.ones(2))
    with pytest.raises(ValueError, match="want grad"):
        project(torch.ones(3), torch.ones(2, 4))


@pytest.mark.gpu
@pytest.mark.parametrize("solver", SOLVERS)
def test_cuda_matches_cpu(solver):
    gen = torch.Generator().manual_seed(7)
    memories = torch.randn(5, 10_000, generator=gen)
    grad = -memories[:2].sum(0)
    new = project(grad.cuda(), memories.cuda(), 0.0, solver)
    assert new.device.type == "cuda" and new.dtype == torch.float32
    torch.testing.assert_close(new.cpu(), project(grad, memories, 0.0, solver), rtol=1e-5, atol=1e-6)


def _solve_on(path, G, d, gamma):
    """solve_dual(..., "exact") forced onto one of its three implementations of the same algorithm."""
    limits = {"SCALAR_MAX_K": qp.SCALAR_MAX_K, "HOST_MAX_SYSTEMS": qp.HOST_MAX_SYSTEMS}
    try:
        if path != "scalar":
            qp.SCALAR_MAX_K = 0
        if path == "torch":
            qp.HOST_MAX_SYSTEMS = 0
        return solve_dual(G, d, gamma, "exact")
    finally:
        for name, value in limits.items():
            setattr(qp, name, value)


@settings(max_examples=150, deadline=None)
@given(instances(max_k=8, degenerate=False), st.sampled_from([0.0, 0.5]))
def test_host_exact_solver_equals_the_torch_one(instance, gamma):
    """Small problems are solved in Python floats (k <= SCALAR_MAX_K) or numpy (HOST_MAX_SYSTEMS): the
    same supports, the same v as the torch solver. (Degenerate instances can have several optimal v;
    test_projection_is_feasible_and_optimal checks those, through the scalar path for k <= 3.)"""
    grad, memories = instance
    G, d = memories @ memories.T, memories @ grad
    device = _solve_on("torch", G, d, gamma)
    tol = {"rtol": 1e-9, "atol": 1e-12 * float(device.abs().max().clamp(min=1))}
    torch.testing.assert_close(_solve_on("host", G, d, gamma), device, **tol)
    torch.testing.assert_close(_solve_on("scalar", G, d, gamma), device, **tol)


def test_scalar_path_handles_only_one_small_qp():
    """Batched QPs and k > SCALAR_MAX_K take the array solvers; the scalar one answers one small QP."""
    calls = []
    original = qp._solve_scalar
    try:
        qp._solve_scalar = lambda *a: calls.append(len(a[1])) or original(*a)
        G, d = torch.eye(4, dtype=F64), -torch.ones(4, dtype=F64)
        for k in (1, 3, 4):
            solve_dual(G[:k, :k], d[:k], 0.0, "auto")
        solve_dual(G[:2, :2].expand(3, 2, 2), d[:2].expand(3, 2), 0.0, "exact")
        solve_dual(G[:2, :2], d[:2], 0.0, "qpth")
    finally:
        qp._solve_scalar = original
    assert calls == [1, 3]
    # identity Gram, all dots -1: each constraint independently needs v_i = 1
    torch.testing.assert_close(solve_dual(G[:3, :3], d[:3]), torch.ones(3, dtype=F64))
