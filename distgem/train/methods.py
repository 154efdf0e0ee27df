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

And what a practitioner would weigh GEM against (docs/RESULTS.md, the trade-off):
- l2sp: naive plus alpha (theta - theta_0) on the encoder's gradient, a pull toward the pre-trained weights.
- lora: the encoder frozen, low-rank adapters on its attention projections (peft) and the head train.
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

    def tensors(self) -> dict[str, torch.Tensor]:
        """This rank's tensors a checkpoint must keep (beside the optimizer's)."""
        return {}

    def load_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
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
        self.projector = Projector(
            [s.name for s in memories], gem.memory_strength, gem.solver, world.sum if sharded else None, timer
        )
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
        self.check = self.projector.update(
            before, view.values(), view.layout, view.memories, view.partition, view.stats, margin
        )
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


class L2SP(Naive):
    """L2-SP: the gradient of alpha/2 |theta - theta_0|^2 over the encoder's weights added to the task's."""

    name = "l2sp"

    def __init__(self, config, memories: list, world, sharded: bool, timer):
        super().__init__(config, memories, world, sharded, timer)
        self.start: torch.Tensor | None = None  # theta_0 on this rank's partition, in the gradient's layout
        self.pulled: list[tuple[int, int]] | None = None  # (offset, size) of the encoder's pieces

    def after_backward(self, view: StepView) -> None:
        values = view.values()
        if self.start is None:  # the first step of the run: the values are still the pre-trained ones
            self.start = values.clone()
        if self.pulled is None:
            names = view.partition.piece_names()
            self.pulled = [
                (o, n)
                for o, n, name in zip(view.layout.offsets, view.layout.sizes, names)
                if name.startswith("encoder.")
            ]
        with self.timer.phase("update"):
            for piece, (offset, size) in zip(self._encoder_pieces(view), self.pulled):
                piece.add_(
                    (values[offset : offset + size] - self.start[offset : offset + size]).to(piece.dtype),
                    alpha=self.config.l2sp_strength,
                )

    def _encoder_pieces(self, view: StepView) -> list[torch.Tensor]:
        names = view.partition.piece_names()
        return [piece for piece, name in zip(view.partition.pieces(), names) if name.startswith("encoder.")]

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"l2sp_start": self.start} if self.start is not None else {}

    def load_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        if "l2sp_start" in tensors:
            self.start = tensors["l2sp_start"].to(self.world.device)


class LoRA(Naive):
    """LoRA: low-rank adapters (peft) on the encoder's attention projections; the encoder itself is frozen."""

    name = "lora"

    def prepare(self, model) -> None:
        try:
            from peft import LoraConfig, inject_adapter_in_model
        except ImportError:
            from distgem.errors import ConfigError

            raise ConfigError("method.name: lora needs peft (pip install 'distgem[lora]')") from None
        config = LoraConfig(
            r=self.config.lora_rank,
            lora_alpha=self.config.lora_alpha,
            target_modules=list(self.config.lora_modules),
            lora_dropout=0.0,
            bias="none",
        )
        inject_adapter_in_model(config, model.encoder)
        for name, param in model.encoder.named_parameters():
            param.requires_grad_("lora_" in name)


METHODS = {cls.name: cls for cls in (Naive, Frozen, MultiTask, GEM, L2SP, LoRA)}
