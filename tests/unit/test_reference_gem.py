"""distgem's projection with memory_strength 0.5 against GEM as its authors run it.

The reference (facebookresearch/GradientEpisodicMemory, model/gem.py) projects only when some
<g, g_k> < 0, and then solves the dual with quadprog, the dual variables bounded below by the margin:

    P = M M^T + eps I,  q = -M g,  v = argmin 1/2 v^T P v - q^T v  s.t.  v >= margin,  x = g + M^T v

with margin = memory_strength = 0.5 (run_experiments.sh) and eps = 1e-3. The formula is written out here
independently (quadprog, float64) and compared with distgem's `project` (the engine's passes) on random
instances, k = 1..6, some constraints violated and some not. With eps = 0 the two are the same problem;
the reference's absolute eps = 1e-3 differs from distgem's relative ridge, and how much that moves v on
real gradients is measured in docs/PROJECTION.md ("The reference's ridge").
"""

from __future__ import annotations

import numpy as np
import pytest
import quadprog
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from distgem.gem.projector import project

MARGIN = 0.5


def reference_project(grad: np.ndarray, memories: np.ndarray, margin: float = MARGIN, eps: float = 1e-3) -> np.ndarray:
    """project2cone2 and the condition around it, as the reference runs them (memories: k x P, float64)."""
    if not (memories @ grad < 0).any():
        return grad
    t = memories.shape[0]
    P = memories @ memories.T
    P = 0.5 * (P + P.T) + np.eye(t) * eps
    q = -(memories @ grad)
    v = quadprog.solve_qp(P, q, np.eye(t), np.zeros(t) + margin)[0]
    return v @ memories + grad


@st.composite
def instances(draw):
    """(grad, memories): k = 1..6 well-conditioned memories, and a gradient against some of them."""
    k = draw(st.integers(1, 6))
    size = draw(st.integers(k + 4, 60))
    gen = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    memories = gen.standard_normal((k, size))
    grad = gen.standard_normal(size)
    against = draw(st.lists(st.booleans(), min_size=k, max_size=k))
    for i, push in enumerate(against):  # turn g against some memories, leave the others as drawn
        if push:
            grad -= 1.5 * memories[i] * (grad @ memories[i] + abs(grad @ memories[i]) + 1) / (memories[i] @ memories[i])
    return grad, memories


@settings(max_examples=300, deadline=None)
@given(instances())
def test_memory_strength_0_5_is_the_reference_projection_without_its_ridge(instance):
    grad, memories = instance
    ours = project(torch.from_numpy(grad), torch.from_numpy(memories), MARGIN, "exact").numpy()
    theirs = reference_project(grad, memories, eps=0.0)
    scale = np.abs(grad).max() + np.abs(theirs).max()
    np.testing.assert_allclose(ours, theirs, rtol=1e-7, atol=1e-8 * scale)
    if (memories @ grad < 0).any():  # projected: every constraint holds with the margin's push
        assert (memories @ ours >= -1e-8 * scale * np.abs(memories).max()).all()
    else:
        assert np.array_equal(ours, grad)  # the margin does not trigger a projection by itself


@pytest.mark.parametrize("solver", ["exact", "qpth"])
def test_only_some_constraints_violated_still_bounds_every_dual_variable_by_the_margin(solver):
    """k = 3, only the first violated: the reference's v has every component >= 0.5, so the projected gradient
    moves along the memories that held too (GEM's backward-transfer push), and distgem does the same."""
    gen = np.random.default_rng(7)
    memories = gen.standard_normal((3, 40))
    grad = memories[1] + memories[2] - 2.0 * memories[0]
    dots = memories @ grad
    assert dots[0] < 0 and dots[1] > 0 and dots[2] > 0
    theirs = reference_project(grad, memories, eps=0.0)
    ours = project(torch.from_numpy(grad), torch.from_numpy(memories), MARGIN, solver).numpy()
    np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-7)
    v = np.linalg.lstsq(memories.T, ours - grad, rcond=None)[0]
    assert (v >= MARGIN - 1e-6).all()


def test_the_reference_ridge_is_absolute_and_distgems_is_relative():
    """g and M scaled by s: distgem's projection is scale-free (s times the same result); the reference's eps = 1e-3
    is absolute, so small gradients (s = 1e-3) are projected differently (see docs/PROJECTION.md)."""
    gen = np.random.default_rng(3)
    memories = gen.standard_normal((2, 30))
    grad = -memories[0] + 0.1 * gen.standard_normal(30)
    for s in (1.0, 1e-3):
        ours = project(torch.from_numpy(s * grad), torch.from_numpy(s * memories), MARGIN, "exact").numpy() / s
        exact = reference_project(s * grad, s * memories, eps=0.0) / s
        np.testing.assert_allclose(ours, exact, rtol=1e-7, atol=1e-9)
    small = reference_project(1e-3 * grad, 1e-3 * memories, eps=1e-3) / 1e-3
    assert np.abs(small - ours).max() > 1e-2 * np.abs(ours).max(), "eps=1e-3 should matter at this scale"
