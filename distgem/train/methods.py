"""The methods the paper compares, as objects with the same few hooks (composer's shape, not a plugin zoo).

A method says which memory gradients a step computes (`refresh`), edits the task gradient after the
backward passes (`after_backward`) or the step the optimizer took (`after_step`), and reads its own
slots of the step's reduction back into the log (`report`). What it may touch is handed to it in a
`StepView` (this rank's partition of the gradient and of the weights); it never sees ranks.

- naive: the task gradient alone (+ weight decay from the optimizer).
- frozen: naive with the embeddings and bottom layers frozen (at build time).
- mtf: the memory losses added to the task loss: g += sum_i w_i g_i.
- gem: the task gradient (or, with `gem.target: update`, the optimizer's step) projected so that no
  memory loss increases to first order (distgem.gem.projector).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from distgem.gem.buffer import Layout, Run
from distgem.gem.projector import Check, Projector
from distgem.model.multitask import freeze_bottom
from distgem.train.reduction import Reduction


@dataclass
class StepView:
    """What a method may read and write during one step, all on this rank's partition and in one layout."""

    grads: list[Run]
    """The task gradient, as DeepSpeed reduced it; written in place."""
    memories: torch.Tensor | None
    """(k, p) memory gradients (rows of the memory buffer), None without memory tasks."""
    layout: Layout
    values: Callable[[], torch.Tensor]
    """A float32 copy of the trainable values (the optimizer's master weights) in the layout."""
    partition: object
    """The DeepSpeed partition (GEM's update target rewrites the master weights through it)."""
    reduction: Reduction
    stats: dict[str, float] = field(default_factory=dict)


class Naive:
    """Fine-tuning on the task alone; the base every method extends."""

    name = "naive"
    edits_update = False
    """Whether `after_step` needs the values before the optimizer step (`before`)."""

    def __init__(self, config, memories: list, world, sharded: bool, timer):
        """`config`: the method section; `memories`: the constraints' sources; `world`: to sum over ranks;
        `sharded`: each rank holds only its partition of the gradient (ZeRO 1-3)."""
        self.config, self.memories, self.world, self.timer = config, memories, world, timer

    def prepare(self, model) -> None:
        """Adjust the model before the engine is built (frozen layers)."""

    def refresh(self, step: int) -> bool:
        """Whether this step recomputes the memory gradients (the first step always does)."""
        return True

    def after_memory_backward(self, row: int, model, inputs: dict, scale: float, loss: float) -> None:
        """Called after each memory micro-batch's backward, with its inputs (GEM's pre-trained anchor)."""

    def after_backward(self, view: StepView) -> None:
        """Edit the task gradient before the optimizer step."""

    def after_step(self, view: StepView, before: torch.Tensor | None) -> None:
        """Edit the step the optimizer took."""

    def report(self, reduced: dict[str, torch.Tensor], stats: dict[str, float]) -> None:
        """Read this method's slots of the step's reduction into the log."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class Frozen(Naive):
    name = "frozen"

    def prepare(self, model) -> None:
        freeze_bottom(model, self.config.frozen_layers)


class MultiTask(Naive):
    """MTF: the weighted memory losses added to the task loss, i.e. their gradients added to the task's."""

    name = "mtf"

    def after_backward(self, view: StepView) -> None:
        from distgem.gem import gram

        weights = torch.tensor([[self.config.mtf_weights[s.name.split(".")[0]] for s in self.memories]])
        with self.timer.phase("update"):
            gram.combine(view.grads, view.memories, weights)


class GEM(Naive):
    """GEM: project the task gradient (or the optimizer's step) onto the memories' constraints."""

    name = "gem"

    def __init__(self, config, memories: list, world, sharded: bool, timer):
        super().__init__(config, memories, world, sharded, timer)
        gem = config.gem
        # the partial Gram is summed over ranks where each holds a share of the gradient; at ZeRO 0 every
        # rank holds the whole (already averaged) gradient and solves the same QP without a collective
        self.projector = Projector([s.name for s in memories], gem.memory_strength, gem.solver,
                                   world.sum if sharded else None, timer)
        self.edits_update = gem.target == "update"
        self.reference = None  # gem.anchor: pretrained: a frozen copy of the pre-trained model
        self.excess: torch.Tensor | None = None
        self.check: Check | None = None

    def prepare(self, model) -> None:
        if self.config.gem.anchor == "pretrained":
            import copy

            self.reference = copy.deepcopy(model).requires_grad_(False).to(self.world.device)

    def refresh(self, step: int) -> bool:
        # every R steps; the memory gradients stay in the buffer in between
        return step % self.config.gem.refresh_every == 0

    def after_memory_backward(self, row: int, model, inputs: dict, scale: float, loss: float) -> None:
        if self.reference is None:
            return
        if self.excess is None:
            self.excess = torch.zeros(len(self.memories), dtype=torch.float64)
        with torch.no_grad(), self.timer.phase("reference"):  # the pre-trained model's loss on the same batch
            self.reference.train(model.training)
            reference = self.reference(task=self.memories[row].kind, scale=scale, **inputs)["loss"]
        self.excess[row] += loss - reference.item()

    def after_backward(self, view: StepView) -> None:
        self.check = None
        if not self.edits_update:
            self.check = self.projector.gradient(view.grads, view.memories, len(view.layout.group_names), view.stats)
            self._add_check(view.reduction)

    def after_step(self, view: StepView, before: torch.Tensor | None) -> None:
        if not self.edits_update:
            return
        margin = None
        if self.reference is not None:  # L_i(theta) - L_i(theta_0) on this step's memory batches, global mean
            margin = self.world.sum(self.excess.to(self.world.device)).cpu() / self.world.size
            view.stats.update({f"gem/excess/{s.name}": float(e) for s, e in zip(self.memories, margin)})
            self.excess = None
        self.check = self.projector.update(before, view.values(), view.layout, view.memories, view.partition,
                                           view.stats, margin)
        self._add_check(view.reduction)

    def _add_check(self, reduction: Reduction) -> None:
        if self.check is not None and self.check.partial is not None:
            reduction.add("gem/check", self.check.partial)

    def report(self, reduced: dict[str, torch.Tensor], stats: dict[str, float]) -> None:
        check = self.check
        if check is None:
            return
        after = reduced["gem/check"].view_as(check.scale) if check.partial is not None else check.after.cpu()
        # on the gradient actually written: >= -tol means no constraint is violated
        stats["gem/min_constraint_after"] = float(((after - check.offset) / check.scale).min())

    def state_dict(self) -> dict:
        return self.projector.counters

    def load_state_dict(self, state: dict) -> None:
        self.projector.counters.update(state)


METHODS = {cls.name: cls for cls in (Naive, Frozen, MultiTask, GEM)}
