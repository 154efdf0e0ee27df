"""The DeepSpeed adapter: the only code that knows DeepSpeed's engine and its optimizer's private layout.

- the engine: a DeepSpeed JSON with its "auto" fields filled from the run config, then `initialize`;
- `GradientPartition`: this rank's reduced gradient and fp32 master weights, whatever the ZeRO stage,
  read out of the optimizer's private attributes (no rank ever gathers a full gradient here);
- `save_full_weights`: the module's weights gathered on rank 0.

The private attributes differ between DeepSpeed releases, so the supported range is pinned
(pyproject.toml, constraints.txt) and checked when an engine is built (`check_version`).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from distgem.errors import ConfigError, UserError

SUPPORTED = ("0.19.8", "0.20")
"""DeepSpeed versions distgem was tested with: at least the first, below the second."""
PRIVATE = {
    1: ("averaged_gradients", "single_partition_of_fp32_groups", "params_in_partition", "update_lp_params"),
    2: ("averaged_gradients", "single_partition_of_fp32_groups", "params_in_partition", "update_lp_params"),
    3: (
        "averaged_gradients",
        "fp32_partitioned_groups_flat",
        "grad_partitions_flat_buffer",
        "fp16_groups",
        "_partition_all_parameters",
        "_reassign_or_swap_out_partitioned_parameters",
        "persistent_parameters",
        "invalidate_secondary_tensor",
    ),
}
"""The optimizer's private attributes GradientPartition reads, per ZeRO stage."""


def check_version(version: str | None = None) -> None:
    """Stop with one line unless DeepSpeed is in the supported range (DISTGEM_ALLOW_DEEPSPEED=1 tries anyway)."""
    from packaging.version import Version

    if version is None:
        import deepspeed

        version = deepspeed.__version__
    low, high = SUPPORTED
    if not Version(low) <= Version(version) < Version(high) and os.environ.get("DISTGEM_ALLOW_DEEPSPEED") != "1":
        raise UserError(
            f"deepspeed {version} is not supported: distgem reads its optimizer's gradient partitions "
            f"and was tested with >={low},<{high} (pip install 'deepspeed>={low},<{high}'; "
            f"DISTGEM_ALLOW_DEEPSPEED=1 tries anyway)"
        )


def deepspeed_config(
    path: str | os.PathLike,
    *,
    micro_batch: int,
    world_size: int,
    zero_stage: int,
    precision: str,
    gradient_clipping: float,
) -> dict:
    """Load a DeepSpeed JSON and fill its "auto" fields from the run config; a disagreement is an error."""
    path = Path(path)
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such DeepSpeed config") from None
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path}:{err.lineno}: invalid JSON ({err.msg})") from None
    wanted = {
        ("train_micro_batch_size_per_gpu",): micro_batch,
        ("train_batch_size",): micro_batch * world_size,
        # distgem accumulates micro-batches itself (each task's gradient must survive its own backward)
        ("gradient_accumulation_steps",): 1,
        ("gradient_clipping",): gradient_clipping,
        ("zero_optimization", "stage"): zero_stage,
        ("bf16", "enabled"): precision == "bf16",
        ("fp16", "enabled"): precision == "fp16",
    }
    for keys, value in wanted.items():
        node = config
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        current = node.get(keys[-1], "auto")
        if current == "auto":
            node[keys[-1]] = value
        elif current != value:
            raise ConfigError(
                f"{path}: '{'.'.join(keys)}' is {current!r} but the run config implies {value!r} (set it to \"auto\")"
            )
    config["zero_allow_untested_optimizer"] = True
    config.setdefault("steps_per_print", 10**9)
    config.setdefault("wall_clock_breakdown", False)
    return config


def prebuild_ops() -> None:
    """Build (or load) the one op DeepSpeed JIT-compiles on CPU before the process group needs it.

    DeepSpeed compiles its shared-memory communication op on first use, under torch's lock *file* in
    $TORCH_EXTENSIONS_DIR: a build killed half-way leaves that file behind and every later run polls it
    forever, silently. Here the build runs under distgem's own lock (an flock, released by the kernel when
    its holder dies; a wait says what it waits for), and a torch lock file found while holding it is stale
    (no distgem process is building) and is removed. On GPU nothing is compiled (torch's AdamW, no fused ops)."""
    if torch.cuda.is_available() and os.environ.get("DS_ACCELERATOR") != "cpu":
        return
    from torch.utils.cpp_extension import _get_build_directory

    from distgem.store import lock

    root = Path(_get_build_directory("deepspeed_shm_comm", False)).parent  # $TORCH_EXTENSIONS_DIR or torch's default
    root.mkdir(parents=True, exist_ok=True)
    with lock(root / ".distgem-build.lock", "DeepSpeed's CPU extension build"):
        for stale in root.glob("**/lock"):
            print(f"distgem: removing {stale}, left by an interrupted extension build", file=sys.stderr, flush=True)
            stale.unlink(missing_ok=True)
        from deepspeed.accelerator import get_accelerator

        builder = get_accelerator().create_op_builder("ShareMemCommBuilder")
        if builder is not None:
            import contextlib
            import io

            with contextlib.redirect_stdout(io.StringIO()):  # ninja's and DeepSpeed's build chatter
                builder.load()


def build_engine(model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler, ds_config: dict):
    """Wrap model and optimizer in a DeepSpeed engine (ZeRO stage from the config), after checking the version."""
    import deepspeed

    check_version()

    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=scheduler, config=ds_config)
    return engine


class GradientPartition:
    """This rank's reduced gradient as a list of writable pieces, with the parameter name of each."""

    def __init__(self, engine, names: dict[int, str]):
        self.engine = engine
        self.stage = engine.zero_optimization_stage()
        missing = [name for name in PRIVATE.get(self.stage, ()) if not hasattr(engine.optimizer, name)]
        if missing:
            import deepspeed

            raise UserError(
                f"deepspeed {deepspeed.__version__}: its ZeRO-{self.stage} optimizer has no "
                f"{', '.join(missing)}, which distgem reads (supported: >={SUPPORTED[0]},<{SUPPORTED[1]})"
            )
        self.names = names  # id(param) -> name
        self._layout: list[str] | None = None
        self._padding: torch.Tensor | None = None

    def zero(self) -> None:
        """Forget the previous task's gradient before the next task's backward."""
        if self.stage == 0:
            for param in self.engine.module.parameters():
                if param.grad is not None:
                    param.grad.zero_()
        else:
            self.engine.optimizer.zero_grad()
            if self.stage == 3:
                # ZeRO-3 keeps each parameter's partition in one flat buffer and only *copies* into the
                # slots of parameters this backward touches: clear it, or an untouched parameter (the
                # tagging head during MLM) would carry the previous task's gradient into this one.
                self.engine.optimizer.grad_partitions_flat_buffer.zero_()

    def pieces(self) -> list[torch.Tensor]:
        """Views of the local gradient partition, in the same order every call (call after backward)."""
        if self.stage == 0:
            out = []
            for param in self._trainable():
                if param.grad is None:  # untouched by this task: zeros, consistently on every rank
                    param.grad = torch.zeros_like(param)
                out.append(param.grad.view(-1))
            return out
        groups = self.engine.optimizer.averaged_gradients
        return [t.view(-1) for i in sorted(groups) for t in groups[i]]

    def values(self) -> list[torch.Tensor]:
        """This rank's trainable values laid out as `pieces()` (ZeRO 1-3: the fp32 master partition the
        optimizer updates, one flat tensor per group, padding included: see `padding()`)."""
        if self.stage == 0:
            return [p.detach().view(-1) for p in self._trainable()]
        optimizer = self.engine.optimizer
        flat = optimizer.fp32_partitioned_groups_flat if self.stage == 3 else optimizer.single_partition_of_fp32_groups
        return [t.detach().view(-1) for t in flat]

    def padding(self) -> torch.Tensor:
        """Positions in the values' layout (`values()` laid end to end) that hold no parameter.

        ZeRO-3 pads each parameter's partition on the last ranks to an equal size and leaves that
        padding uninitialised (DeepSpeed allocates it with torch.empty): garbage, sometimes NaN, which
        a difference of two copies of the values (a predicted change, an update target) must not read.
        ZeRO 1-2 pad with zeros and stage 0 does not pad: empty for them."""
        if self._padding is None:
            positions, start = [], 0
            if self.stage == 3:
                device = self.values()[0].device
                for group in self.engine.optimizer.fp16_groups:
                    for param in group:
                        rank = dist.get_rank(group=param.ds_process_group) if dist.is_initialized() else 0
                        size = param.ds_tensor.ds_numel  # this rank's partition, padding included
                        valid = max(0, min(size, param.ds_numel - rank * size))
                        positions.append(torch.arange(start + valid, start + size, device=device))
                        start += size
            self._padding = torch.cat(positions) if positions else torch.zeros(0, dtype=torch.long)
        return self._padding

    def publish_values(self) -> None:
        """After `values()` were edited in place: make the model's weights match them (ZeRO 1-2: copy this
        rank's partition to the low-precision weights and gather them; ZeRO 3: refresh the partitioned
        weights and re-gather the persistent ones). Every rank must call it."""
        optimizer = self.engine.optimizer
        if self.stage in (1, 2):
            optimizer.update_lp_params()
        elif self.stage == 3:
            optimizer._partition_all_parameters()  # persistent weights stay gathered: release, then re-gather
            for group in range(len(optimizer.fp16_groups)):
                optimizer._reassign_or_swap_out_partitioned_parameters(group)
            if optimizer.persistent_parameters:
                optimizer.persistent_parameters[0].all_gather(optimizer.persistent_parameters)
            optimizer.invalidate_secondary_tensor()

    def piece_names(self) -> list[str]:
        """The parameter name of every piece (for per-layer grouping); padding pieces are named ''."""
        if self._layout is None:
            if self.stage == 0:
                params = [list(self._trainable())]
            elif self.stage == 3:
                params = self.engine.optimizer.fp16_groups
            else:
                params = self.engine.optimizer.params_in_partition
            groups = self.engine.optimizer.averaged_gradients if self.stage else {0: self.pieces()}
            layout = []
            for i, group in enumerate(params):
                names = [self.names[id(p)] for p in group]
                layout += names + [""] * (len(groups[i]) - len(names))
            self._layout = layout
        return self._layout

    def _trainable(self):
        return (p for p in self.engine.module.parameters() if p.requires_grad)


def save_full_weights(module: torch.nn.Module, path, world) -> None:
    """The module's full weights as safetensors on rank 0 (ZeRO-3 partitions gathered one parameter at a time)."""
    from safetensors.torch import save_file

    tensors = {}
    for name, param in module.named_parameters():
        if hasattr(param, "ds_id"):
            import deepspeed

            with deepspeed.zero.GatheredParameters([param], modifier_rank=None):
                if world.is_main:
                    tensors[name] = param.detach().float().cpu().clone()
        elif world.is_main:
            tensors[name] = param.detach().float().cpu().clone()
    if world.is_main:
        save_file(tensors, str(path))
    world.barrier()
