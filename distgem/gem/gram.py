"""GEM's two passes over this rank's gradient partition: the Gram of [g_1..g_k, g], and the update g + M^T w.

Both read every value once (GEM's floor, docs/PERFORMANCE.md), on one of two paths side by side:

- CPU, fp32/bf16: fused C loops (kernels.c, compiled once per source and CPU with the system C compiler
  into the distgem cache, loaded with ctypes). Why C: on one CPU core every torch formulation of a
  (k+1) x p Gram (float64 addmm, fp32 bmm, gemv, mul + sum, torch.compile) ran at 2-5 GB/s against
  16-22 GB/s of copy bandwidth, because BLAS has no fast kernel for k+1 rows of a million columns. The
  loops accumulate products in fp32 over 256 columns per lane and in float64 beyond; the update is
  computed in fp32 in registers and rounded once to g's dtype, and its check <g_i, g~> is taken on the
  rounded value while it is still in L1.
- Everything else (CUDA, float64, no compiler, DISTGEM_KERNELS=0): torch ops on float64 chunks small
  enough to stay in cache.

The caller sums the partial Gram over ranks when the partition is sharded (distgem.gem.projector).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

import torch

from distgem.gem.buffer import Run
from distgem.store import build_once, cache_root

SOURCE = Path(__file__).with_name("kernels.c")


def partial_gram(memories: torch.Tensor, grads: Sequence[Run], groups: int) -> torch.Tensor:
    """(groups, k+1, k+1) float64 Gram of [g_1..g_k, g] over this rank's runs (task gradient last)."""
    k = memories.shape[0]
    gram = torch.zeros((groups, k + 1, k + 1), dtype=torch.float64, device=memories.device)
    for run in grads:
        rows = memories[:, run.offset : run.offset + run.size]
        if not _kernel_gram(gram[run.group], rows, run.grad):
            _gram_chunks(gram[run.group], rows, run.grad)
    return gram


def combine(grads: Sequence[Run], memories: torch.Tensor, weights: torch.Tensor, check: bool = False):
    """g <- g + sum_i w[group, i] g_i in place; `weights` (groups, k) is GEM's v or MTF's loss weights.

    With `check`, also returns the (groups, k) float64 partial <g_i, g~> of the gradient as written,
    taken in the same pass (the post-projection check costs no extra read of the partition).
    """
    weights = weights.to(device=memories.device, dtype=torch.float64).contiguous()
    dots = torch.zeros_like(weights) if check else None
    for run in grads:
        rows = memories[:, run.offset : run.offset + run.size]
        out = dots[run.group] if dots is not None else None
        if not _kernel_update(rows, run.grad, weights[run.group], out):
            _update_chunks(rows, run.grad, weights[run.group], out)
    return dots


def _chunk(device: torch.device) -> int:
    """Columns per float64 chunk: fits L2 on a CPU core (fastest of 4K..1M here), L2 of a GPU at k <= 4."""
    return 1 << 16 if device.type == "cpu" else 1 << 20


def _gram_chunks(out: torch.Tensor, rows: torch.Tensor, grad: torch.Tensor) -> None:
    """The torch path of the Gram: [rows; grad] in float64 column chunks, one reused buffer."""
    k, size = rows.shape
    chunk = _chunk(rows.device)
    buffer = torch.empty(k + 1, min(chunk, size), dtype=torch.float64, device=grad.device)
    for start in range(0, size, chunk):
        stop = min(start + chunk, size)
        block = buffer[:, : stop - start]
        block[:k].copy_(rows[:, start:stop])
        block[k].copy_(grad[start:stop])
        out.addmm_(block, block.T)


def _update_chunks(rows: torch.Tensor, grad: torch.Tensor, weights: torch.Tensor, dots: torch.Tensor | None) -> None:
    """The torch path of the update: float64 per chunk, rounded once to grad's dtype."""
    for start in range(0, grad.numel(), _chunk(rows.device)):
        stop = min(start + _chunk(rows.device), grad.numel())
        block = rows[:, start:stop].to(torch.float64)
        grad[start:stop].copy_(weights @ block + grad[start:stop])
        if dots is not None:
            dots += block @ grad[start:stop].to(torch.float64)


# --- the C path ---------------------------------------------------------------------------------------

KMAX = 64
"""Largest k + 1 the kernels take (the torch path serves more)."""
DTYPES = {torch.float32: 0, torch.bfloat16: 1}
_STATE: dict[str, object] = {}


def library() -> ctypes.CDLL | None:
    """The compiled kernels (built on first use, cached per source and CPU), or None where unavailable."""
    if "lib" not in _STATE:
        _STATE["lib"] = None if os.environ.get("DISTGEM_KERNELS", "1") == "0" else _load()
    return _STATE["lib"]  # type: ignore[return-value]


def _kernel_gram(out: torch.Tensor, memories: torch.Tensor, grad: torch.Tensor) -> bool:
    """out (k+1, k+1) float64 += Gram of [memories (k, n) rows; grad (n,)]; False if the kernels cannot take them."""
    lib = _usable(memories, grad, out)
    if lib is None:
        return False
    k, n = memories.shape
    code = lib.distgem_gram(
        DTYPES[memories.dtype],
        DTYPES[grad.dtype],
        memories.data_ptr(),
        memories.stride(0),
        grad.data_ptr(),
        n,
        k,
        out.data_ptr(),
    )
    return code == 0


def _kernel_update(memories: torch.Tensor, grad: torch.Tensor, v: torch.Tensor, dots: torch.Tensor | None) -> bool:
    """grad += memories^T v in place (float64, rounded once); dots (k,) float64 += memories @ grad as written."""
    lib = _usable(memories, grad, v, *([] if dots is None else [dots]))
    if lib is None:
        return False
    k, n = memories.shape
    code = lib.distgem_update(
        DTYPES[memories.dtype],
        DTYPES[grad.dtype],
        memories.data_ptr(),
        memories.stride(0),
        grad.data_ptr(),
        n,
        k,
        v.data_ptr(),
        None if dots is None else dots.data_ptr(),
    )
    return code == 0


def _usable(memories: torch.Tensor, grad: torch.Tensor, *doubles: torch.Tensor):
    """The library when these tensors fit the kernels' layout (CPU, fp32/bf16, unit column stride), else None."""
    if memories.device.type != "cpu" or grad.device.type != "cpu" or memories.dim() != 2 or grad.dim() != 1:
        return None
    if memories.dtype not in DTYPES or grad.dtype not in DTYPES or not 1 <= memories.shape[0] < KMAX:
        return None
    if (
        memories.shape[1] != grad.shape[0]
        or (memories.shape[1] > 1 and memories.stride(1) != 1)
        or (grad.numel() > 1 and grad.stride(0) != 1)
    ):
        return None
    if any(d.dtype != torch.float64 or not d.is_contiguous() or d.device.type != "cpu" for d in doubles):
        return None
    return library()


def _load() -> ctypes.CDLL | None:
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        return None
    source = SOURCE.read_text()
    key = hashlib.sha256((source + compiler + _cpu_identity()).encode()).hexdigest()[:16]
    try:
        directory = build_once(cache_root() / "kernels" / key, lambda tmp: _compile(compiler, source, tmp))
        lib = ctypes.CDLL(str(directory / "gem.so"))
    except (OSError, subprocess.CalledProcessError):
        return None
    i64, ptr = ctypes.c_int64, ctypes.c_void_p
    lib.distgem_gram.argtypes = [ctypes.c_int, ctypes.c_int, ptr, i64, ptr, i64, ctypes.c_int, ptr]
    lib.distgem_update.argtypes = [ctypes.c_int, ctypes.c_int, ptr, i64, ptr, i64, ctypes.c_int, ptr, ptr]
    return lib


def _compile(compiler: str, source: str, directory: Path) -> None:
    path = directory / "gem.c"
    path.write_text(source)
    base = [compiler, "-O3", "-shared", "-fPIC", "-o", str(directory / "gem.so"), str(path)]
    # -march=native is what makes the lanes SIMD; a compiler without it still gets a correct build
    for flags in (["-march=native"], []):
        if subprocess.run(base[:1] + flags + base[1:], capture_output=True).returncode == 0:
            return
    raise subprocess.CalledProcessError(1, base)


def _cpu_identity() -> str:
    """The build is -march=native: a cache shared by different CPUs must keep one build per instruction set."""
    try:
        text = Path("/proc/cpuinfo").read_text()
        return next((line for line in text.splitlines() if line.startswith("flags")), "") + platform.machine()
    except OSError:
        return platform.processor() + platform.machine()
