"""GEM's dual QP: v* from the Gram, pure math on (k+1)^2 numbers, nothing about models, partitions or ranks.

With M the k x P matrix of memory gradients and g the task gradient, GEM solves

    v* = argmin_{v >= gamma}  1/2 v^T (M M^T) v + (M g)^T v        and sets  g~ = g + M^T v*

Everything the solver needs is the k x k Gram of the memories and the dots <g_i, g>, which the caller
sums over partitions (distgem.gem.gram, one all-reduce), so that every rank solves the same QP from the
same numbers. Numerics (docs/PROJECTION.md):

- float64 throughout; the Gram is accumulated in float64 even from fp32/bf16 gradients;
- the QP is rescaled before any regulariser: each memory by its own norm (the Gram becomes the
  cosine matrix C, unit diagonal), then v by the largest |<g_i, g>|/|g_i|, so the solvers see
  |p| <= 1 whatever the gradient scale. The ridge RIDGE * I is added to C, i.e. it is relative to
  each memory's own squared norm: an absolute eps would swamp small gradients and disable GEM;
- v is mapped back to the ORIGINAL problem (the rescaling changes nothing but the ridge).
"""

from __future__ import annotations

import contextlib
import io
import math
from dataclasses import dataclass

import numpy as np
import torch

RIDGE = 1e-10
"""Added to the cosine matrix C: the active constraints end up violated by at most RIDGE * v_i |g_i|^2."""
KKT_TOL = 1e-9
"""Natural KKT residual |min(u - lower, C u + p)| accepted, relative to 1 + |u| on the rescaled problem."""
QPTH_TOL = 1e-7
"""The same residual accepted from qpth's interior point before falling back to the exact solver."""
EXACT_MAX_SYSTEMS = 4096
"""`auto`: exact while batch x 2^k subsystems stay under this (k <= 12 for one QP), else qpth (docs/PROJECTION.md)."""
SUBSET_BLOCK = 1 << 22
"""Matrix entries per batched solve in the exact solver (subsets x batch x k x k)."""
HOST_MAX_SYSTEMS = 512
"""`exact` runs in numpy on the host while batch x 2^k stays under this: the same algorithm, without
torch's per-op cost (~70 ops x 5-10 us on CPU, one kernel launch each on GPU: 0.5 ms for a 2 x 2 QP)."""
SCALAR_MAX_K = 3
"""`exact` on one QP with k <= this runs in plain Python floats (`_solve_scalar`, ~10-30 us): the same
algorithm again, without numpy's per-call cost (~60 small array ops, ~0.2-0.3 ms for a 2 x 2 QP)."""
SOLVERS = ("auto", "exact", "qpth")


@dataclass
class Dual:
    """A solved dual: v for the original problem and how it was obtained."""

    v: torch.Tensor
    """(..., k) float64 on the inputs' device; zeros where the inputs were not finite."""
    violated: torch.Tensor
    """(...) bool: some <g_i, g> < 0 (GEM projects only those)."""
    solver: str
    """Which solver ran, exact or qpth (what `auto` chose)."""
    fallbacks: int = 0
    """Batch elements re-solved by the exact solver after qpth failed."""


def solve(gram: torch.Tensor, dots: torch.Tensor, memory_strength: float = 0.0, solver: str = "auto") -> Dual:
    """Solve the dual for every leading batch index of `gram` (..., k, k) and `dots` (..., k)."""
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
    if not memory_strength >= 0:
        raise ValueError(f"memory_strength must be >= 0, got {memory_strength}")
    k = dots.shape[-1]
    if gram.shape[-2:] != (k, k):
        raise ValueError(
            f"gram {tuple(gram.shape)} does not match dots {tuple(dots.shape)}: want (..., k, k) and (..., k)"
        )
    batch = torch.broadcast_shapes(gram.shape[:-2], dots.shape[:-1])
    # Three implementations of the same exact algorithm, chosen by size: every training step solves one small
    # QP, where torch's per-op cost (and numpy's per-call cost) would dominate a microsecond of arithmetic.
    # One QP with k <= 3: plain Python floats (~10-30 us).
    if 0 < k <= SCALAR_MAX_K and solver in ("auto", "exact") and gram.numel() == k * k and dots.numel() == k:
        d_list = dots.detach().reshape(k).tolist()
        v_list = _solve_scalar(gram.detach().reshape(k, k).tolist(), d_list, memory_strength)
        if v_list is not None:
            return Dual(
                torch.tensor(v_list, dtype=torch.float64, device=gram.device).reshape(*batch, k),
                torch.tensor(any(x < 0 for x in d_list), device=gram.device).reshape(batch),
                "exact",
            )
        # a singular support (not reachable with the ridge): the batched solvers below decide
    G = gram.detach().to(torch.float64).expand(*batch, k, k).reshape(-1, k, k)
    d = dots.detach().to(torch.float64).expand(*batch, k).reshape(-1, k)
    violated = (d < 0).any(-1)
    if solver == "auto":  # CPU crossover with qpth's 5-20 ms per call, docs/PROJECTION.md
        solver = "exact" if 2**k * max(G.shape[0], 1) <= EXACT_MAX_SYSTEMS else "qpth"
    if k == 0 or G.shape[0] == 0:
        return Dual(d.clone().reshape(*batch, k), violated.reshape(batch), solver)

    # A few hundred subsystems (per-layer QPs, k up to ~8): numpy on the host.
    if solver == "exact" and 2**k * G.shape[0] <= HOST_MAX_SYSTEMS:
        v = torch.from_numpy(_solve_host(G.cpu().numpy(), d.cpu().numpy(), memory_strength)).to(G.device)
        return Dual(v.reshape(*batch, k), violated.reshape(batch), solver)
    # Larger batches: torch, on the Gram's device. Non-finite elements are solved as zeros and given v = 0.
    finite = torch.isfinite(G).all(-1).all(-1) & torch.isfinite(d).all(-1)
    G, d = torch.where(finite[:, None, None], G, 0.0), torch.where(finite[:, None], d, 0.0)
    C, p, lower, scale = _rescale(G, d, memory_strength)
    fallbacks = 0
    if solver == "exact":
        u = _solve_exact(C, p, lower)
    else:
        u, fallbacks = _solve_qpth(C, p, lower)
    v = torch.maximum(u, lower) * scale  # interior point: u may sit a rounding error below its bound
    # Non-finite Gram (an fp16 overflow step): no projection; the caller's overflow check still sees it.
    v = torch.where((finite & torch.isfinite(v).all(-1))[:, None], v, 0.0)
    return Dual(v.reshape(*batch, k), violated.reshape(batch), solver, fallbacks)


def solve_dual(
    gram: torch.Tensor, dots: torch.Tensor, memory_strength: float = 0.0, solver: str = "auto"
) -> torch.Tensor:
    """v* >= memory_strength minimising 1/2 v^T gram v + dots^T v, float64 (..., k), batched over leading dims."""
    return solve(gram, dots, memory_strength, solver).v


# --- rescaling and solvers -----------------------------------------------------------------------


def _rescale(G: torch.Tensor, d: torch.Tensor, gamma: float):
    """(B,k,k), (B,k) -> cosine matrix + ridge C, p, lower, scale with v = scale * u and u >= lower.

    With n_i = |g_i| and v_i = c u_i / n_i, the objective divided by c^2 is 1/2 u^T C u + p^T u
    with C = G / (n n^T) and p = d / (c n); c = max(|d_i| / n_i, gamma n_i) makes |p|, lower <= 1.
    A zero memory gets the largest norm (1 if all are zero): its row of C is zero but for the ridge,
    which pins u_i to its lower bound, so v_i = gamma.
    """
    diag = G.diagonal(dim1=-2, dim2=-1)
    norms = diag.clamp(min=0).sqrt()
    largest = norms.amax(-1, keepdim=True)
    norms = torch.where(diag > 0, norms, torch.where(largest > 0, largest, 1.0))
    C = 0.5 * (G + G.mT) / (norms[:, :, None] * norms[:, None, :])
    C = C + RIDGE * torch.eye(G.shape[-1], dtype=G.dtype, device=G.device)
    cosine_dots = d / norms
    c = torch.maximum(cosine_dots.abs().amax(-1), gamma * norms.amax(-1))
    c = torch.where(c > 0, c, 1.0)[:, None]
    return C, cosine_dots / c, gamma * norms / c, c / norms


def _kkt_residual(C: torch.Tensor, p: torch.Tensor, lower: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """(...,) natural residual max_i |min(u_i - lower_i, (C u + p)_i)| / (1 + |u|): 0 exactly at the optimum."""
    r = (C @ u.unsqueeze(-1)).squeeze(-1) + p
    residual = torch.minimum(u - lower, r).abs().amax(-1) / (1 + u.abs().amax(-1))
    return torch.where(torch.isfinite(residual), residual, torch.inf)


def _solve_exact(C: torch.Tensor, p: torch.Tensor, lower: torch.Tensor) -> torch.Tensor:
    """Enumerate the 2^k supports S of w = u - lower >= 0: solve C_SS w_S = -q_S for each, batched, keep the best.

    Best = satisfies KKT (there is one such support in exact arithmetic), then lowest objective among
    the primal-feasible ones (the empty support always is). Singular systems fail `solve_ex` and drop out.
    """
    B, k = p.shape
    q = (C @ lower.unsqueeze(-1)).squeeze(-1) + p
    zero = torch.zeros(B, k, dtype=C.dtype, device=C.device)
    best_w, best_f = zero, torch.zeros_like(p[:, 0])  # the empty support: w = 0, objective 0
    best_kkt = _kkt_residual(C, q, zero, zero) <= KKT_TOL
    subsets = torch.arange(1, 2**k, device=C.device)
    bits = ((subsets[:, None] >> torch.arange(k, device=C.device)) & 1).to(C.dtype)  # (S, k)
    per_block = max(1, SUBSET_BLOCK // (B * k * k))
    eye = torch.eye(k, dtype=C.dtype, device=C.device)
    for mask in bits.split(per_block):
        m = mask[:, None, :]  # (S, 1, k)
        # rows/columns outside S become identity with right-hand side 0, so w_i = 0 there
        A = m.unsqueeze(-1) * m.unsqueeze(-2) * C + (1 - m).unsqueeze(-1) * eye
        w, info = torch.linalg.solve_ex(A, (-m * q).unsqueeze(-1))
        w = w.squeeze(-1) * m
        scale = 1 + w.abs().amax(-1)
        ok = (info == 0) & torch.isfinite(w).all(-1) & (w >= -KKT_TOL * scale.unsqueeze(-1)).all(-1)
        w = torch.where(ok.unsqueeze(-1), w.clamp(min=0), 0.0)
        kkt = ok & (_kkt_residual(C, q, zero, w) <= KKT_TOL)
        f = 0.5 * (w * (C @ w.unsqueeze(-1)).squeeze(-1)).sum(-1) + (q * w).sum(-1)
        f = torch.where(ok, f, torch.inf)
        # lexicographic: KKT first, then objective; reduce over the block, then against the best so far
        f_key = torch.where(kkt, f, torch.inf)
        pick = (torch.where(kkt.any(0), f_key.argmin(0), f.argmin(0)), torch.arange(B, device=C.device))
        cand_w, cand_kkt, cand_f = w[pick], kkt[pick], f[pick]
        better = (cand_kkt & ~best_kkt) | ((cand_kkt == best_kkt) & (cand_f < best_f))
        best_w = torch.where(better[:, None], cand_w, best_w)
        best_kkt, best_f = best_kkt | cand_kkt, torch.where(better, cand_f, best_f)
    return lower + best_w


def qpth_function():
    """qpth's QPFunction, imported on first use: importing qpth pulls in cvxpy and scipy, about a second of every
    training process's start, and most runs never call it."""
    from qpth.qp import QPFunction

    return QPFunction


def _solve_qpth(C: torch.Tensor, p: torch.Tensor, lower: torch.Tensor) -> tuple[torch.Tensor, int]:
    """qpth's batched interior point; elements it got wrong (it prints instead of raising) go to the exact solver."""
    B, k = p.shape
    e = torch.empty(0, dtype=C.dtype, device=C.device)
    G = -torch.eye(k, dtype=C.dtype, device=C.device)
    printed = io.StringIO()
    try:
        with torch.no_grad(), contextlib.redirect_stdout(printed):
            u = qpth_function()(verbose=0)(C, p, G, -lower, e, e)
    except RuntimeError:  # "Q is not SPD" or a failed factorisation
        u = None
    if u is None or u.shape != p.shape:
        bad = torch.ones(B, dtype=torch.bool, device=C.device)
        u = torch.zeros_like(p)
    elif "inaccurate" in printed.getvalue():
        bad = torch.ones(B, dtype=torch.bool, device=C.device)  # qpth does not say which element
    else:
        u = u.to(C.dtype)
        bad = ~(_kkt_residual(C, p, lower, u) <= QPTH_TOL)
    n_bad = int(bad.sum())
    if n_bad:
        u = u.clone()
        u[bad] = _solve_exact(C[bad], p[bad], lower[bad])
    return u, n_bad


# --- the exact solver in numpy, for the small problems of every step -----------------------------


def _solve_host(G: np.ndarray, d: np.ndarray, gamma: float) -> np.ndarray:
    """`solve` for (B, k, k), (B, k) float64 arrays: _rescale + _solve_exact in numpy (the torch
    versions document the steps); a batch element with a non-finite input gets v = 0."""
    B, k = d.shape
    finite = np.isfinite(G).all((-1, -2)) & np.isfinite(d).all(-1)
    G, d = np.where(finite[:, None, None], G, 0.0), np.where(finite[:, None], d, 0.0)
    diag = np.diagonal(G, axis1=-2, axis2=-1)
    norms = np.sqrt(np.clip(diag, 0, None))
    largest = norms.max(-1, keepdims=True)
    norms = np.where(diag > 0, norms, np.where(largest > 0, largest, 1.0))
    C = 0.5 * (G + G.swapaxes(-1, -2)) / (norms[:, :, None] * norms[:, None, :]) + RIDGE * np.eye(k)
    cosine_dots = d / norms
    c = np.maximum(np.abs(cosine_dots).max(-1), gamma * norms.max(-1))
    c = np.where(c > 0, c, 1.0)[:, None]
    p, lower = cosine_dots / c, gamma * norms / c
    q = (C @ lower[..., None])[..., 0] + p
    # every support S at once: rows/columns outside S are identity with right-hand side 0
    bits = ((np.arange(2**k)[:, None] >> np.arange(k)) & 1).astype(np.float64)[:, None, :]  # (S, 1, k)
    A = bits[..., :, None] * bits[..., None, :] * C + (1 - bits)[..., :, None] * np.eye(k)
    try:
        w = np.linalg.solve(A, (-bits * q)[..., None])[..., 0] * bits  # (S, B, k)
    except np.linalg.LinAlgError:  # a singular support (not reachable with the ridge): the torch solver drops it
        u = _solve_exact(*(torch.from_numpy(x) for x in (C, p, lower))).numpy()
        return np.where(finite[:, None], np.maximum(u, lower) * (c / norms), 0.0)
    scale = 1 + np.abs(w).max(-1)
    ok = np.isfinite(w).all(-1) & (w >= -KKT_TOL * scale[..., None]).all(-1)
    w = np.where(ok[..., None], np.clip(w, 0, None), 0.0)
    r = (C @ w[..., None])[..., 0] + q
    kkt = ok & (np.abs(np.minimum(w, r)).max(-1) / (1 + np.abs(w).max(-1)) <= KKT_TOL)
    f = np.where(ok, 0.5 * (w * (C @ w[..., None])[..., 0]).sum(-1) + (q * w).sum(-1), np.inf)
    # lexicographic, as _solve_exact: a KKT point first (the empty support included), then the objective
    best = np.where(kkt.any(0), np.where(kkt, f, np.inf).argmin(0), f.argmin(0))
    v = (lower + w[best, np.arange(B)]) * (c / norms)
    return np.where((finite & np.isfinite(v).all(-1))[:, None], v, 0.0)


def _solve_scalar(G: list, d: list, gamma: float) -> list | None:
    """`_solve_host` for one QP with small k, in Python floats: every support S solved by Gaussian
    elimination, the same KKT-then-objective choice. None where a support is singular (the numpy
    and torch solvers then decide)."""
    k = len(d)
    if not all(math.isfinite(x) for row in G for x in row) or not all(math.isfinite(x) for x in d):
        return [0.0] * k
    diag = [G[i][i] for i in range(k)]
    norms = [math.sqrt(x) if x > 0 else 0.0 for x in diag]
    largest = max(norms)
    norms = [n if x > 0 else (largest if largest > 0 else 1.0) for n, x in zip(norms, diag)]
    C = [
        [0.5 * (G[i][j] + G[j][i]) / (norms[i] * norms[j]) + (RIDGE if i == j else 0.0) for j in range(k)]
        for i in range(k)
    ]
    cosine_dots = [x / n for x, n in zip(d, norms)]
    c = max(max(abs(x) for x in cosine_dots), gamma * max(norms))
    c = c if c > 0 else 1.0
    p, lower = [x / c for x in cosine_dots], [gamma * n / c for n in norms]
    q = [sum(C[i][j] * lower[j] for j in range(k)) + p[i] for i in range(k)]
    best = None  # (not kkt, objective, w): lexicographic, the first support on ties (np.argmin)
    for mask in range(2**k):
        S = [i for i in range(k) if mask >> i & 1]
        ws = _gauss([[C[i][j] for j in S] for i in S], [-q[i] for i in S])
        if ws is None:
            return None
        w = [0.0] * k
        for i, x in zip(S, ws):
            w[i] = x
        scale = 1 + max(abs(x) for x in w)
        if not all(math.isfinite(x) and x >= -KKT_TOL * scale for x in w):
            continue  # not ok: the numpy solver gives it objective inf, never chosen over an ok support
        w = [max(x, 0.0) for x in w]
        Cw = [sum(C[i][j] * w[j] for j in range(k)) for i in range(k)]
        r = [a + b for a, b in zip(Cw, q)]
        kkt = max(abs(min(a, b)) for a, b in zip(w, r)) / (1 + max(w)) <= KKT_TOL
        f = sum(0.5 * a * b + qi * a for a, b, qi in zip(w, Cw, q))
        key = (not kkt, f)
        if best is None or key < best[0]:
            best = (key, w)
    w = best[1] if best is not None else [0.0] * k  # the empty support is always ok
    v = [(lo + x) * (c / n) for lo, x, n in zip(lower, w, norms)]
    return v if all(math.isfinite(x) for x in v) else [0.0] * k


def _gauss(A: list, b: list) -> list | None:
    """x with A x = b for a small dense A (Gaussian elimination, partial pivoting); None if singular."""
    n = len(b)
    A = [row[:] + [rhs] for row, rhs in zip(A, b)]
    for col in range(n):
        pivot = max(range(col, n), key=lambda r: abs(A[r][col]))
        if A[pivot][col] == 0:
            return None
        A[col], A[pivot] = A[pivot], A[col]
        for r in range(col + 1, n):
            factor = A[r][col] / A[col][col]
            for j in range(col, n + 1):
                A[r][j] -= factor * A[col][j]
    x = [0.0] * n
    for r in range(n - 1, -1, -1):
        x[r] = (A[r][n] - sum(A[r][j] * x[j] for j in range(r + 1, n))) / A[r][r]
    return x
