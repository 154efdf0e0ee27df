"""Who this process is among the ranks, and the few collectives the rest of distgem needs.

Ranks come from the torchrun/deepspeed environment, from MPI (mpi4py under mpirun/srun) or from
Slurm; gloo on CPU, NCCL on GPU, through DeepSpeed. Everything else in distgem receives a `World`
and calls its methods (which share of a batch or an evaluation set is mine, sum this tensor over
the ranks, gather these objects): no other module reads a rank or imports torch.distributed.
"""

from __future__ import annotations

import contextlib
import io
import os
import socket
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import torch

MPI_MARKERS = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS")
WAIT_TIMEOUT_HOURS = 12  # tokenising a paper-scale corpus takes minutes to hours; the default group waits 30 min


@dataclass(frozen=True)
class World:
    """This process's place among the data-parallel ranks, and the collectives over them."""

    rank: int
    size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that writes logs, results and shared files."""
        return self.rank == 0

    @property
    def parallel(self) -> bool:
        return self.size > 1 and _initialised()

    # --- which share is mine ---------------------------------------------------------------------
    def micro_batches(self, batch: Sequence[int], accumulation: int) -> list[list[int]]:
        """This rank's contiguous slice of a global batch, cut into `accumulation` micro-batches (every rank
        draws the same global batch, so N ranks see exactly the batch one process would)."""
        if len(batch) % (self.size * accumulation):
            raise ValueError(
                f"global batch {len(batch)} does not divide into {self.size} ranks x {accumulation} micro-batches"
            )
        per_rank = len(batch) // self.size
        mine = list(batch[self.rank * per_rank : (self.rank + 1) * per_rank])
        micro = per_rank // accumulation
        return [mine[i * micro : (i + 1) * micro] for i in range(accumulation)]

    def shard(self, indices: Sequence[int]) -> list[int]:
        """A strided share of an evaluation set (every example on exactly one rank)."""
        return list(indices[self.rank :: self.size])

    # --- collectives (no-ops on one process) -----------------------------------------------------
    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum over ranks, in place (the tensor must be on `device`: NCCL reduces no host tensor)."""
        if self.parallel:
            import torch.distributed as dist

            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def max(self, value: int) -> int:
        """The largest of every rank's `value`."""
        if not self.parallel:
            return value
        import torch.distributed as dist

        tensor = torch.tensor([value], dtype=torch.long, device=self.device)
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return int(tensor.item())

    def gather(self, obj) -> list:
        """Every rank's object, in rank order."""
        if not self.parallel:
            return [obj]
        import torch.distributed as dist

        out = [None] * self.size
        dist.all_gather_object(out, obj)
        return out

    def gather_rows(self) -> Callable[[torch.Tensor], tuple[torch.Tensor, int]]:
        """An all-gather along dim 0 that passes gradients back to every rank's rows (in-batch XSR negatives):
        tensor -> (every rank's rows, where this rank's start)."""
        rank, parallel = self.rank, self.parallel

        def gather(tensor: torch.Tensor) -> tuple[torch.Tensor, int]:
            if not parallel:
                return tensor, 0
            return _GatherRows.apply(tensor), rank * tensor.shape[0]

        return gather

    def barrier(self) -> None:
        if self.parallel:
            import torch.distributed as dist

            dist.barrier()

    @contextlib.contextmanager
    def main_first(self) -> Iterator[None]:
        """Rank 0 runs the block first (building a shared cache), the other ranks once it is done (reading it).

        If rank 0 fails it still releases the others, which then meet the same error (or build themselves).
        The wait uses a gloo group of its own with a long timeout, created on first use by every rank."""
        if not self.parallel:
            yield
            return
        import torch.distributed as dist

        group = _wait_group()
        if not self.is_main:
            dist.barrier(group=group)
        try:
            yield
        finally:
            if self.is_main:
                dist.barrier(group=group)


class _GatherRows(torch.autograd.Function):
    """All-gather along dim 0 with a backward that sums every rank's gradient of this rank's rows.

    Each rank computes its loss over every rank's rows, so the gradient of a row is the sum over ranks
    (torch.distributed.nn.functional.all_gather, deprecated since torch 2.10, does the same; its
    replacement is private). The rows are a batch of sentence embeddings: all-reducing the whole gradient
    and keeping one's own slice costs no more than a reduce-scatter would at that size."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        tensor = tensor.contiguous()
        parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, tensor)
        ctx.rows = tensor.shape[0]
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        total = grad.contiguous().clone()
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        start = dist.get_rank() * ctx.rows
        return total[start : start + ctx.rows]


def _initialised() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


_WAIT_GROUP = None


def _wait_group():
    global _WAIT_GROUP
    if _WAIT_GROUP is None:
        import torch.distributed as dist

        _WAIT_GROUP = dist.new_group(backend="gloo", timeout=timedelta(hours=WAIT_TIMEOUT_HOURS))
    return _WAIT_GROUP


# --- joining and leaving -------------------------------------------------------------------------


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


def init(local_rank: int | None = None) -> World:
    """Join (or create) the process group; gloo on CPU, NCCL on GPU, through DeepSpeed. `local_rank`: what the
    deepspeed launcher passes as --local_rank (it also sets LOCAL_RANK, which wins)."""
    import deepspeed

    if local_rank is not None:
        os.environ.setdefault("LOCAL_RANK", str(local_rank))
    rank, size, local_rank = discover_ranks()
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(size), LOCAL_RANK=str(local_rank))
    os.environ.setdefault("MASTER_ADDR", _head_node())
    os.environ.setdefault("MASTER_PORT", str(_free_port() if size == 1 else 29500))
    cuda = torch.cuda.is_available() and os.environ.get("DS_ACCELERATOR", "cuda") != "cpu"
    if cuda:
        torch.cuda.set_device(local_rank)
    from distgem.distributed.deepspeed import prebuild_ops

    prebuild_ops()  # before the process group: a build one rank waits for must not hold the others' rendezvous
    with contextlib.redirect_stdout(io.StringIO()):  # "DeepSpeed ... op built successfully", once per rank
        deepspeed.init_distributed(
            dist_backend="nccl" if cuda else "gloo",
            auto_mpi_discovery=False,
            verbose=False,
            timeout=collective_timeout(),
        )
    if not cuda:
        _release_shared_memory_name(rank, size)
    if size > 1:  # where each rank runs: on several nodes, the proof that they do (host name, address)
        import sys

        master = os.environ["MASTER_ADDR"]
        # one write: ranks share the job's log file, and print() writes the line and its newline apart
        sys.stderr.write(
            f"distgem: rank {rank}/{size} on {socket.gethostname()} ({_source_address(master)}), "
            f"master {master}:{os.environ['MASTER_PORT']}\n"
        )
        sys.stderr.flush()
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    return World(rank, size, local_rank, device)


SHM_DIR = Path("/dev/shm")


def _release_shared_memory_name(rank: int, size: int) -> None:
    """DeepSpeed's CPU all-reduce (ranks on one host, under its launcher) maps a 66 MB shared-memory segment per
    rank, named after the master address and port, and never unlinks it: every run left its segments in
    /dev/shm, which is memory (87 of them, 5.3 GB, after a day of runs here). Each rank maps its peers' segments
    inside init_distributed, so once every rank is past it (a barrier) each unlinks its own name: the mappings
    stay valid until the process ends, and nothing is left behind, whatever way it ends. DeepSpeed makes them only
    when every rank is on this host (LOCAL_SIZE, which its launcher sets, equals the world size): other runs
    (torchrun, several nodes) skip the barrier too."""
    if os.environ.get("LOCAL_SIZE") != str(size):
        return
    if size > 1:
        import torch.distributed as dist

        dist.barrier()
    name = f"deepspeed_allreduce_buffer_{os.getuid()}_{os.environ['MASTER_ADDR']}_{os.environ['MASTER_PORT']}_{rank}"
    with contextlib.suppress(FileNotFoundError):
        (SHM_DIR / name).unlink()


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
        from distgem.errors import ConfigError

        raise ConfigError(f"DISTGEM_COLLECTIVE_TIMEOUT: {value!r} is not a positive number of seconds")
    return timedelta(seconds=seconds)


# What gloo and NCCL say when a collective's peer is gone or silent
_LOST_PEER = (
    "Timed out waiting",
    "Connection reset by peer",
    "Connection closed by peer",
    "Broken pipe",
    "Connection refused",
    "operation timeout",
    "communicator was aborted",
)


def lost_peer(error: BaseException, world: World) -> str | None:
    """One line describing a collective that failed because another rank died or stopped answering, else None."""
    text = str(error).strip()
    if not isinstance(error, RuntimeError) or not any(marker in text for marker in _LOST_PEER):
        return None
    first = text.splitlines()[0]
    if first.startswith("[") and "] " in first:  # gloo's "[/path/to/pair.cc:537] Read error ..."
        first = first.split("] ", 1)[1]
    return (
        f"rank {world.rank}: a collective failed, a peer rank died or stopped answering "
        f"(timeout {collective_timeout().total_seconds():.0f} s): {first.split('. ')[0].rstrip('.')}"
    )


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


def shutdown(wait: bool = True) -> None:
    """Leave the process group (after a barrier unless `wait` is False: a failing rank must not hang)."""
    if _initialised():
        import torch.distributed as dist

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
