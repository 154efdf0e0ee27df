"""GEM's part of a training step on this rank's partition: project the gradient (the paper) or the step
the optimizer took (`gem.target: update`), with an optional margin per constraint (`gem.anchor`).

The engine owns the passes and the one per-step all-reduce; this module owns the Gram, the dual QP
and the update, and returns what the post-projection check needs.
"""
from __future__ import annotations

import time

import numpy as np
import torch

from distgem.distributed import world as dist
from distgem.gem import memory, projection
from distgem.distributed.deepspeed import GradientPartition


class Projector:
    """Projects onto the memories' constraints; `counters` (the run state's "gem" entry) count steps."""

    def __init__(self, gem, names: list[str], partition: GradientPartition, timer):
        self.gem, self.names, self.partition, self.timer = gem, names, partition, timer

    def gradient(self, grads, memories: torch.Tensor, groups: int, counters: dict, stats: dict,
                 margin: torch.Tensor | None = None) -> dict | None:
        """Gram of [memories; task] (partial per rank, summed), the dual QP on every rank, g += M^T v, so
        that <g_i, g~> >= margin_i (0 by default).

        Returns what the post-projection check needs: `scale` (|g_i||g| per group and memory), `offset`
        (the margins), and either the global <g_i, g~> (`after`) or this rank's partial sums of it
        (`partial`), which the step adds to its one per-step all-reduce.
        """
        gem, timer = self.gem, self.timer
        sharded = self.partition.stage > 0  # stage 0: every rank holds the whole (already averaged) gradient
        started = time.perf_counter()
        with timer.phase("gram"):
            gram = memory.partial_gram(memories, grads, groups)
        k = memories.shape[0]
        local_dots = gram[:, :k, k].clone() if sharded else None
        if sharded:
            with timer.phase("all_reduce"):
                dist.all_reduce_sum(gram)
        with timer.phase("qp"):  # (k+1)^2 numbers per group: on the host, in numpy (one copy from a GPU)
            host = gram.cpu().numpy()
            finite = bool(np.isfinite(host).all())
            if finite:
                mem_gram, dots, task_norm2 = host[:, :k, :k], host[:, :k, k], host[:, k, k]
                offset = np.zeros_like(dots) if margin is None else margin.numpy()[None, :]
                violated = (dots < offset).any(1)
                v = np.zeros_like(dots)
                if violated.any():
                    v = projection.solve_dual(torch.from_numpy(mem_gram), torch.from_numpy(dots - offset),
                                              gem.memory_strength, gem.solver).numpy()
                    v = np.where(violated[:, None], v, 0.0)
        if not finite:
            # an fp16 overflow: DeepSpeed skips this step and lowers the loss scale; nothing to project
            counters["nonfinite_steps"] = counters.get("nonfinite_steps", 0) + 1
            stats["gem/nonfinite"] = 1.0
            return None
        after = torch.from_numpy(dots)
        if violated.any():
            with timer.phase("update"):  # the check <g_i, g~> is taken in the same pass as the update
                after = memory.combine(grads, memories, torch.from_numpy(v), check=True)
            local_dots = after if sharded else None
        elapsed = time.perf_counter() - started
        scale = np.maximum(np.sqrt(np.diagonal(mem_gram, axis1=1, axis2=2) * task_norm2[:, None]), 1e-30)
        new_norm2 = task_norm2 + 2 * (v * dots).sum(1) + np.einsum("gi,gij,gj->g", v, mem_gram, v)
        counters["steps"] += 1
        counters["violated_steps"] += int(violated.any())
        # the dose: how much memory gradient the projection added, summed over steps (0 on steps not projected)
        dual_sum = counters.setdefault("dual_sum", {})
        for i, name in enumerate(self.names):
            dual_sum[name] = dual_sum.get(name, 0.0) + float(v[:, i].mean())
        stats.update({
            "gem/violated": float(violated.any()),
            "gem/projection_ms": 1000 * elapsed,
            "gem/norm_ratio": float(np.sqrt(max(new_norm2.sum(), 0)) / max(np.sqrt(task_norm2.sum()), 1e-30)),
        })
        for i, name in enumerate(self.names):
            stats[f"gem/cosine/{name}"] = float((dots[:, i] / scale[:, i]).mean())
            stats[f"gem/dual/{name}"] = float(v[:, i].mean())
        return {"scale": torch.from_numpy(scale), "after": after, "partial": local_dots,
                "offset": torch.from_numpy(offset)}

    def update(self, before: torch.Tensor, current: torch.Tensor, layout: memory.Layout, memories: torch.Tensor,
               counters: dict, stats: dict, margin: torch.Tensor | None = None) -> dict | None:
        """GEM on the step the optimizer took: u = theta_before - theta_after (AdamW's update, weight decay
        included; `before`, `current` are flat copies in the memories' layout) is projected like a gradient,
        u~ = u + M^T v with <g_i, u~> >= margin_i, and the master weights are rewritten to
        theta_before - u~ (then copied to the model's weights, gathered under ZeRO 1-2).

        With margin e_i = L_i(theta) - L_i(theta_0) (gem.anchor: pretrained), to first order the step
        leaves no memory loss above the pre-trained model's. `current` is overwritten with u~.
        """
        update = torch.sub(before, current, out=current)
        runs = memory.runs([update[o:o + n] for o, n in zip(layout.offsets, layout.sizes)], layout)
        check = self.gradient(runs, memories, len(layout.group_names), counters, stats, margin)
        if stats.get("gem/violated"):
            with self.timer.phase("update"):
                start = 0
                for flat in self.partition.values():  # flat tensors laid end to end as the gradient's pieces
                    end = start + flat.numel()
                    torch.sub(before[start:end], update[start:end], out=flat)
                    start = end
                self.partition.publish_values()
        return check
