"""GEM's projection on this rank's partition, as one straight line:

    gram.partial_gram (this rank's share) -> sum over ranks -> qp.solve (on every rank, from the same
    numbers) -> gram.combine (g += M^T v on this rank's runs, <g_i, g~> taken in the same pass)

The gradient (the paper) or the step the optimizer took (`gem.target: update`) is projected, with an
optional margin per constraint (`gem.anchor`). Nothing here knows about ranks: the caller hands in the
function that sums a tensor over them (None on one rank or where every rank holds the whole gradient).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch

from distgem.gem import gram, qp
from distgem.gem.buffer import Layout, Run, runs

SumOverRanks = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class Check:
    """What the post-projection check <g_i, g~> >= margin_i needs, per group and memory."""

    scale: torch.Tensor
    """|g_i| |g|: the check is reported relative to it."""
    offset: torch.Tensor
    """The margins (zeros unless anchored)."""
    after: torch.Tensor | None
    """<g_i, g~> over the whole gradient, where this rank holds it all; else None and `partial` is set."""
    partial: torch.Tensor | None
    """This rank's share of <g_i, g~>, for the step's one reduction to sum (ZeRO 1-3)."""


def counters() -> dict:
    """The run state's "gem" entry: steps projected or not, fallbacks of the QP solver, the dose."""
    return {"steps": 0, "violated_steps": 0, "fallbacks": 0, "nonfinite_steps": 0, "dual_sum": {}}


class Projector:
    """Projects onto the memories' constraints and counts what it did into `self.counters`."""

    def __init__(
        self,
        names: list[str],
        memory_strength: float = 0.0,
        solver: str = "auto",
        sum_over_ranks: SumOverRanks | None = None,
        timer=None,
    ):
        self.names, self.memory_strength, self.solver = names, memory_strength, solver
        self.sum_over_ranks = sum_over_ranks
        self.timer = timer
        self.counters = counters()

    def _phase(self, name: str):
        return self.timer.phase(name) if self.timer is not None else nullcontext()

    def gradient(
        self, grads: Sequence[Run], memories: torch.Tensor, groups: int, stats: dict, margin: torch.Tensor | None = None
    ) -> Check | None:
        """g~ = g + M^T v in place on `grads`, so that <g_i, g~> >= margin_i (0 by default); None where the
        Gram is not finite (an fp16 overflow step, which DeepSpeed skips: nothing to project)."""
        started = time.perf_counter()
        with self._phase("gram"):
            full = gram.partial_gram(memories, grads, groups)
        k = memories.shape[0]
        sharded = self.sum_over_ranks is not None
        local_dots = full[:, :k, k].clone() if sharded else None
        if sharded:
            with self._phase("all_reduce"):
                self.sum_over_ranks(full)
        with self._phase("qp"):  # (k+1)^2 numbers per group: on the host, in numpy (one copy from a GPU)
            host = full.cpu().numpy()
            if not np.isfinite(host).all():
                self.counters["nonfinite_steps"] += 1
                stats["gem/nonfinite"] = 1.0
                return None
            mem_gram, dots, task_norm2 = host[:, :k, :k], host[:, :k, k], host[:, k, k]
            offset = np.zeros_like(dots) if margin is None else margin.numpy()[None, :]
            # GEM projects only the steps that violate a constraint; the margin (memory_strength) then bounds
            # every dual variable below, including those of the constraints that held
            violated = (dots < offset).any(1)
            v = np.zeros_like(dots)
            if violated.any():
                dual = qp.solve(
                    torch.from_numpy(mem_gram), torch.from_numpy(dots - offset), self.memory_strength, self.solver
                )
                v = np.where(violated[:, None], dual.v.numpy(), 0.0)
                self.counters["fallbacks"] += dual.fallbacks
        after = torch.from_numpy(dots)
        if violated.any():
            with self._phase("update"):  # the check <g_i, g~> is taken in the same pass as the update
                after = gram.combine(grads, memories, torch.from_numpy(v), check=True)
            local_dots = after if sharded else None
        self._count(v, violated, dots, mem_gram, task_norm2, time.perf_counter() - started, stats)
        scale = np.maximum(np.sqrt(np.diagonal(mem_gram, axis1=1, axis2=2) * task_norm2[:, None]), 1e-30)
        return Check(torch.from_numpy(scale), torch.from_numpy(offset), None if sharded else after, local_dots)

    def _count(self, v, violated, dots, mem_gram, task_norm2, elapsed: float, stats: dict) -> None:
        counters = self.counters
        counters["steps"] += 1
        counters["violated_steps"] += int(violated.any())
        for i, name in enumerate(self.names):  # the dose: memory gradient added, summed over steps
            counters["dual_sum"][name] = counters["dual_sum"].get(name, 0.0) + float(v[:, i].mean())
        new_norm2 = task_norm2 + 2 * (v * dots).sum(1) + np.einsum("gi,gij,gj->g", v, mem_gram, v)
        stats.update(
            {
                "gem/violated": float(violated.any()),
                "gem/projection_ms": 1000 * elapsed,
                "gem/norm_ratio": float(np.sqrt(max(new_norm2.sum(), 0)) / max(np.sqrt(task_norm2.sum()), 1e-30)),
            }
        )
        scale = np.maximum(np.sqrt(np.diagonal(mem_gram, axis1=1, axis2=2) * task_norm2[:, None]), 1e-30)
        for i, name in enumerate(self.names):
            stats[f"gem/cosine/{name}"] = float((dots[:, i] / scale[:, i]).mean())
            stats[f"gem/dual/{name}"] = float(v[:, i].mean())

    def update(
        self,
        before: torch.Tensor,
        current: torch.Tensor,
        layout: Layout,
        memories: torch.Tensor,
        partition,
        stats: dict,
        margin: torch.Tensor | None = None,
    ) -> Check | None:
        """GEM on the step the optimizer took: u = theta_before - theta_after (AdamW's update, weight decay
        included; `before`, `current` are flat copies in the memories' layout) is projected like a gradient,
        u~ = u + M^T v with <g_i, u~> >= margin_i, and the master weights are rewritten to
        theta_before - u~ (`partition` publishes them to the model's weights, gathered under ZeRO 1-2).

        With margin e_i = L_i(theta) - L_i(theta_0) (gem.anchor: pretrained), to first order the step
        leaves no memory loss above the pre-trained model's. `current` is overwritten with u~.
        """
        update = torch.sub(before, current, out=current)
        pieces = runs([update[o : o + n] for o, n in zip(layout.offsets, layout.sizes)], layout)
        check = self.gradient(pieces, memories, len(layout.group_names), stats, margin)
        if stats.get("gem/violated"):
            with self._phase("update"):
                start = 0
                for flat in partition.values():  # flat tensors laid end to end as the gradient's pieces
                    end = start + flat.numel()
                    torch.sub(before[start:end], update[start:end], out=flat)
                    start = end
                partition.publish_values()
        return check


def project(
    grad: torch.Tensor, memories: torch.Tensor, memory_strength: float = 0.0, solver: str = "auto"
) -> torch.Tensor:
    """GEM on one flat gradient through the engine's own passes: `grad` itself when no <g_i, g> < 0 (or the
    Gram is not finite), else a new tensor g + M^T v* in grad's dtype (tests, benchmarks)."""
    if grad.dim() != 1 or memories.dim() != 2 or memories.shape[1] != grad.shape[0]:
        raise ValueError(f"want grad (P,) and memories (k, P), got {tuple(grad.shape)} and {tuple(memories.shape)}")
    if grad.numel() == 0:
        return grad
    out = grad.clone()
    layout = Layout.of([out])
    stats: dict = {}
    projector = Projector([str(i) for i in range(memories.shape[0])], memory_strength, solver)
    projector.gradient(runs([out], layout), memories, 1, stats)
    return out if stats.get("gem/violated") else grad
