"""The one seam to torch.distributed and DeepSpeed: ranks, the engine, collectives, checkpoints.

Nothing else in distgem imports deepspeed or torch.distributed, but for `distgem/partition.py`, which
reads this rank's gradient and weight partitions out of DeepSpeed's optimizer.
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import torch

from distgem.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class World:
    rank: int
    size: int
    local_rank: int
    device: torch.device


MPI_MARKERS = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS")


def discover_ranks() -> tuple[int, int, int]:
    """(rank, world size, local rank): torchrun/deepspeed env, else MPI (mpi4py), else srun, else one process."""
    env = os.environ
    if "RANK" in env and "WORLD_SIZE" in env:
        return int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", env["RANK"]))
    if any(marker in env for marker in MPI_MARKERS):
        return _mpi_ranks()
    if "SLURM_PROCID" in env and "SLURM_NTASKS" in env:
        return int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"]), int(env.get("SLURM_LOCALID", 0))
    return 0, 1, 0


def _mpi_ranks() -> tuple[int, int, int]:
    """Ranks from mpi4py; MASTER_ADDR is rank 0's host (loopback when every rank shares one host)."""
    from mpi4py import MPI

    world = MPI.COMM_WORLD
    local = world.Split_type(MPI.COMM_TYPE_SHARED)
    hosts = world.allgather(socket.gethostname())
    if "MASTER_ADDR" not in os.environ:
        os.environ["MASTER_ADDR"] = "127.0.0.1" if len(set(hosts)) == 1 else socket.gethostbyname(hosts[0])
    if "MASTER_PORT" not in os.environ:
        os.environ["MASTER_PORT"] = str(world.bcast(_free_port() if world.Get_rank() == 0 else None))
    return world.Get_rank(), world.Get_size(), local.Get_rank()


def init(seed_port: int | None = None) -> World:
    """Join (or create) the process group; gloo on CPU, NCCL on GPU, through DeepSpeed."""
    import deepspeed

    global COMM
    if os.environ.get("DISTGEM_COMM_LOG") and COMM is None:
        COMM = CommCounter(os.environ["DISTGEM_COMM_LOG"])
        COMM.install()
    rank, size, local_rank = discover_ranks()
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(size), LOCAL_RANK=str(local_rank))
    os.environ.setdefault("MASTER_ADDR", _head_node())
    os.environ.setdefault("MASTER_PORT", str(seed_port or (_free_port() if size == 1 else 29500)))
    cuda = torch.cuda.is_available() and os.environ.get("DS_ACCELERATOR", "cuda") != "cpu"
    if cuda:
        torch.cuda.set_device(local_rank)
    deepspeed.init_distributed(dist_backend="nccl" if cuda else "gloo", auto_mpi_discovery=False,
                               verbose=False, timeout=collective_timeout())
    if size > 1:  # where each rank runs: on several nodes, the proof that they do (host name, address)
        import sys

        master = os.environ["MASTER_ADDR"]
        # one write: ranks share the job's log file, and print() writes the line and its newline apart
        sys.stderr.write(f"distgem: rank {rank}/{size} on {socket.gethostname()} ({_source_address(master)}), "
                         f"master {master}:{os.environ['MASTER_PORT']}\n")
        sys.stderr.flush()
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    return World(rank, size, local_rank, device)


COLLECTIVE_TIMEOUT_S = 600.0  # torch's default for gloo is 30 minutes (NCCL: 10)


def collective_timeout() -> timedelta:
    """How long a collective waits for its peers before it fails (DISTGEM_COLLECTIVE_TIMEOUT seconds, default 600):
    a rank whose peer died without closing its connections (a node lost) or hangs fails within it."""
    value = os.environ.get("DISTGEM_COLLECTIVE_TIMEOUT", "")
    try:
        seconds = float(value) if value else COLLECTIVE_TIMEOUT_S
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise ConfigError(f"DISTGEM_COLLECTIVE_TIMEOUT: {value!r} is not a positive number of seconds")
    return timedelta(seconds=seconds)


# What gloo and NCCL say when a collective's peer is gone or silent
_LOST_PEER = ("Timed out waiting", "Connection reset by peer", "Connection closed by peer", "Broken pipe",
              "Connection refused", "operation timeout", "communicator was aborted")


def lost_peer(error: BaseException) -> str | None:
    """One line describing a collective that failed because another rank died or stopped answering, else None."""
    text = str(error).strip()
    if not isinstance(error, RuntimeError) or not any(marker in text for marker in _LOST_PEER):
        return None
    first = text.splitlines()[0]
    if first.startswith("[") and "] " in first:  # gloo's "[/path/to/pair.cc:537] Read error ..."
        first = first.split("] ", 1)[1]
    return first.split(". ")[0].rstrip(".")


def _source_address(host: str) -> str:
    """The local address this host reaches `host` from (connecting a UDP socket sends nothing)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect((host, 9))
            return probe.getsockname()[0]
    except OSError:
        return "?"


def _head_node() -> str:
    """MASTER_ADDR under srun: the first host of the job (never `hostname -I`, which may be unroutable)."""
    nodes = os.environ.get("SLURM_JOB_NODELIST") or os.environ.get("SLURM_NODELIST")
    if nodes and int(os.environ.get("SLURM_NNODES", "1")) > 1:
        import subprocess

        hosts = subprocess.run(["scontrol", "show", "hostnames", nodes], capture_output=True, text=True, check=True)
        return hosts.stdout.split()[0]
    return "127.0.0.1"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def deepspeed_config(path: str | os.PathLike, *, micro_batch: int, world_size: int, zero_stage: int,
                     precision: str, gradient_clipping: float) -> dict:
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
            raise ConfigError(f"{path}: '{'.'.join(keys)}' is {current!r} but the run config implies {value!r} "
                              f"(set it to \"auto\")")
    config["zero_allow_untested_optimizer"] = True
    config.setdefault("steps_per_print", 10**9)
    config.setdefault("wall_clock_breakdown", False)
    return config


def build_engine(model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler, ds_config: dict):
    """Wrap model and optimizer in a DeepSpeed engine (ZeRO stage from the config)."""
    import deepspeed

    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=scheduler, config=ds_config)
    return engine


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum over ranks, in place (no-op on one rank)."""
    import torch.distributed as dist

    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def lockstep(batches: list, agree: Callable[[int], int] | None, spare: Callable[[], object]) -> list[tuple]:
    """This rank's evaluation `batches` as (batch, True), then (spare(), False) up to the most any rank has.

    ZeRO-3 gathers each layer's parameters collectively in every forward, so a rank with one batch fewer than
    another would leave it waiting forever (an evaluation set of 17 on two ranks in batches of 4 has three
    batches on rank 0, two on rank 1): the short rank runs forwards whose output it drops. `agree` is the
    max all-reduce of a count, None where forwards hold no collectives (stages 0-2, one rank); it runs before
    the first forward, so the count is agreed before any rank gets ahead."""
    count = agree(len(batches)) if agree is not None else len(batches)
    padding = [(spare(), False)] * (count - len(batches)) if count > len(batches) else []
    return [(batch, True) for batch in batches] + padding


def all_reduce_max_int(value: int, device: torch.device) -> int:
    """The largest of every rank's `value` (a small tensor on the device: NCCL reduces no host tensor)."""
    import torch.distributed as dist

    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return value
    tensor = torch.tensor([value], dtype=torch.long, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return int(tensor.item())


def all_gather_objects(obj) -> list:
    """Every rank's object, in rank order."""
    import torch.distributed as dist

    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


class AutogradGather:
    """All-gather along dim 0 that passes gradients back to every rank's rows (in-batch XSR negatives)."""

    def __init__(self, rank: int, size: int):
        self.rank, self.size = rank, size

    def __call__(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.size == 1:
            return tensor
        from torch.distributed.nn.functional import all_gather

        return torch.cat(all_gather(tensor), dim=0)


def barrier() -> None:
    import torch.distributed as dist

    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


_WAIT_GROUP = None
WAIT_TIMEOUT_HOURS = 12  # tokenising a paper-scale corpus takes minutes to hours; the default group waits 30 min


@contextlib.contextmanager
def rank0_first():
    """Rank 0 runs the block first (building a shared cache), the other ranks once it is done (reading it).

    If rank 0 fails it still releases the others, which then meet the same error (or build themselves).
    The wait uses a gloo group of its own with a long timeout, created on first use by every rank.
    """
    import torch.distributed as dist

    global _WAIT_GROUP
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        yield
        return
    if _WAIT_GROUP is None:
        _WAIT_GROUP = dist.new_group(backend="gloo", timeout=timedelta(hours=WAIT_TIMEOUT_HOURS))
    if dist.get_rank() != 0:
        dist.barrier(group=_WAIT_GROUP)
    try:
        yield
    finally:
        if dist.get_rank() == 0:
            dist.barrier(group=_WAIT_GROUP)


def shutdown(wait: bool = True) -> None:
    """Leave the process group (after a barrier unless `wait` is False: a failing rank must not hang)."""
    import torch.distributed as dist

    if COMM is not None and dist.is_initialized():
        COMM.dump(dist.get_rank())
    if dist.is_initialized():
        if wait and dist.get_world_size() > 1:
            dist.barrier()
        dist.destroy_process_group()


def exit_process(code: int) -> None:
    """End a training process without running interpreter teardown, which can abort after ZeRO-3;
    MPI is finalised first so that mpirun sees a clean exit."""
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    if "mpi4py.MPI" in sys.modules:
        from mpi4py import MPI

        if MPI.Is_initialized() and not MPI.Is_finalized():
            MPI.Finalize()
    os._exit(code)


def save_engine(engine, directory, tag: str) -> None:
    """DeepSpeed's checkpoint of model, optimizer partitions and scheduler (all ranks call it)."""
    engine.save_checkpoint(str(directory), tag=tag, save_latest=False)


def load_engine(engine, directory, tag: str, module_only: bool) -> None:
    """Load a DeepSpeed checkpoint with weights_only unpickling (an allowlist, never arbitrary objects)."""
    engine.checkpoint_engine = _safe_checkpoint_engine(engine.checkpoint_engine)
    # Always the full state: DeepSpeed's module-only path under ZeRO-3 bypasses the checkpoint engine
    # (zero_to_fp32 with its own unpickling and the `latest` file); weights alone are restored all the same.
    load_path, _ = engine.load_checkpoint(str(directory), tag=tag, load_module_only=module_only)
    if load_path is None:
        raise FileNotFoundError(f"{directory}/{tag}: DeepSpeed found no checkpoint")


def _safe_checkpoint_engine(current):
    """Wrap DeepSpeed's torch checkpoint engine so that every torch.load is weights_only."""
    if getattr(current, "_distgem_safe", False):
        return current

    class SafeLoad:
        _distgem_safe = True

        def __getattr__(self, name):
            return getattr(current, name)

        def load(self, path, map_location=None):
            with safe_torch_load():
                return torch.load(path, map_location=map_location)

    return SafeLoad()


class safe_torch_load:
    """Context in which every torch.load (DeepSpeed's included) is weights_only, with our allowlist."""

    def __enter__(self):
        self.original = torch.load
        self.globals = torch.serialization.safe_globals(_allowed_globals())
        self.globals.__enter__()
        original = self.original

        def load(*args, **kwargs):
            kwargs["weights_only"] = True
            return original(*args, **kwargs)

        torch.load = load
        return self

    def __exit__(self, *exc):
        torch.load = self.original
        self.globals.__exit__(*exc)
        return False


def consolidated_weights(checkpoint_root, tag: str) -> dict[str, torch.Tensor]:
    """Full fp32 weights of a checkpoint of any ZeRO stage, in one process (DeepSpeed's zero_to_fp32)."""
    from pathlib import Path as _Path

    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    directory = _Path(checkpoint_root) / tag
    with safe_torch_load():
        if list(directory.glob("*optim_states.pt")) and any("zero" in p.name for p in directory.glob("*optim_states.pt")):
            return get_fp32_state_dict_from_zero_checkpoint(str(checkpoint_root), tag=tag)
        states = torch.load(directory / "mp_rank_00_model_states.pt", map_location="cpu")
    return {name: tensor.float() for name, tensor in states["module"].items()}


def _allowed_globals() -> list:
    """The non-tensor types DeepSpeed's checkpoints contain (checked by tests/distributed)."""
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    allowed = [ZeroStageEnum, fragment_address]
    try:
        from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler

        allowed += [LossScaler, DynamicLossScaler]
    except ImportError:
        pass
    return allowed


def save_weights(engine, module: torch.nn.Module, path, rank: int) -> None:
    """The module's full weights as safetensors on rank 0 (ZeRO-3 partitions gathered one parameter at a time)."""
    from safetensors.torch import save_file

    tensors = {}
    for name, param in module.named_parameters():
        if hasattr(param, "ds_id"):
            import deepspeed

            with deepspeed.zero.GatheredParameters([param], modifier_rank=None):
                if rank == 0:
                    tensors[name] = param.detach().float().cpu().clone()
        elif rank == 0:
            tensors[name] = param.detach().float().cpu().clone()
    if rank == 0:
        save_file(tensors, str(path))
    barrier()


class CommCounter:
    """Counts the collectives this rank issues, per phase (e.g. `step 7`), by wrapping torch.distributed.

    Enabled by DISTGEM_COMM_LOG=DIR (tests, bench/): installed before DeepSpeed binds its functions;
    nested calls (all_gather_object -> all_gather) count once; the log is DIR/rank<r>.json.
    """

    OPS = ("all_reduce", "all_reduce_coalesced", "reduce", "reduce_scatter", "reduce_scatter_tensor",
           "_reduce_scatter_base", "all_gather", "all_gather_into_tensor", "_all_gather_base", "broadcast",
           "all_to_all_single", "all_to_all", "gather", "scatter", "all_gather_object", "broadcast_object_list")

    def __init__(self, directory: str):
        import threading

        self.directory = Path(directory)
        self.phase = "setup"
        self.records: dict[str, list] = {}
        self._depth = threading.local()

    def install(self) -> None:
        import torch.distributed as dist
        from torch.distributed import distributed_c10d

        for module in (dist, distributed_c10d):
            for name in self.OPS:
                original = getattr(module, name, None)
                if original is not None and not getattr(original, "_distgem_counted", False):
                    setattr(module, name, self._wrap(name, original))

    def _wrap(self, name, original):
        def counted(*args, **kwargs):
            depth = getattr(self._depth, "value", 0)
            if depth == 0:
                self.records.setdefault(self.phase, []).append([name, _payload_bytes(args, kwargs)])
            self._depth.value = depth + 1
            try:
                return original(*args, **kwargs)
            finally:
                self._depth.value = depth

        counted._distgem_counted = True
        return counted

    def dump(self, rank: int) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / f"rank{rank}.json").write_text(json.dumps(self.records))


def _payload_bytes(args, kwargs) -> int:
    """Bytes this rank contributes: the input tensor (the last tensor argument; lists summed)."""
    values = list(args) + list(kwargs.values())
    for value in reversed(values):
        if isinstance(value, torch.Tensor):
            return value.numel() * value.element_size()
        if isinstance(value, (list, tuple)) and value and all(isinstance(v, torch.Tensor) for v in value):
            return sum(v.numel() * v.element_size() for v in value)
    return 0


COMM: CommCounter | None = None


def comm_phase(label: str) -> None:
    """Attribute the collectives that follow to `label` (no-op unless counting)."""
    if COMM is not None:
        COMM.phase = label
