"""Projection cost: distgem's `project` against the original GEM path, side by side, on a violated instance.

The reference is GEM's own code (Lopez-Paz & Ranzato, facebookresearch/GradientEpisodicMemory,
model/gem.py: `observe` + `project2cone2`): gradients stored as columns of a (P, T) fp32 matrix,
copied to the CPU as float64 numpy, `quadprog.solve_qp` on the dual with an absolute eps, copied back.

    OMP_NUM_THREADS=1 python bench/projection.py --quick     # a few seconds
    OMP_NUM_THREADS=1 python bench/projection.py             # P = 1M, 10M, 100M; k = 1, 2, 5, 10
    python bench/projection.py --device cuda --sizes 1.78e8 --ks 1 2 --json F   # the GPU check's cell

"ours" is `distgem.gem.projector.project` (the engine's passes on a copy of the gradient, one solver forced),
and "engine" what a training step does on its partition, in place (distgem.gem.projector.Projector: the Gram,
the dual, the update + check); on a GPU both stay on the device, while the reference copies the gradients
to the host as float64.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import time

import numpy as np
import quadprog
import torch

from distgem.gem.buffer import Layout, runs
from distgem.gem.projector import Projector, project
from distgem.gem.qp import solve_dual


def project2cone2(gradient, memories, margin=0.5, eps=1e-3):
    """GEM's reference, verbatim (memories: (P, t) columns; gradient: (P, 1), overwritten)."""
    memories_np = memories.cpu().t().double().numpy()
    gradient_np = gradient.cpu().contiguous().view(-1).double().numpy()
    t = memories_np.shape[0]
    P = np.dot(memories_np, memories_np.transpose())
    P = 0.5 * (P + P.transpose()) + np.eye(t) * eps
    q = np.dot(memories_np, gradient_np) * -1
    G = np.eye(t)
    h = np.zeros(t) + margin
    v = quadprog.solve_qp(P, q, G, h)[0]
    x = np.dot(v, memories_np) + gradient_np
    gradient.copy_(torch.Tensor(x).view(-1, 1))


def gem_step(grads: torch.Tensor, k: int, margin: float) -> None:
    """GEM's `observe` after the backward passes: task t = column k, memories = columns 0..k-1."""
    indx = torch.arange(k, device=grads.device)
    dotp = torch.mm(grads[:, k].unsqueeze(0), grads.index_select(1, indx))
    if (dotp < 0).sum() != 0:
        project2cone2(grads[:, k].unsqueeze(1), grads.index_select(1, indx), margin)


def timed(fn, repeats: int, device: torch.device, reset=None) -> float:
    """Median wall time in ms of fn() over `repeats` runs (after one warm-up); reset() runs untimed before each."""
    times = []
    for i in range(repeats + 1):
        if reset is not None:
            reset()
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i:
            times.append(1000 * (time.perf_counter() - start))
    return statistics.median(times)


def available_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.mem_get_info()[0]
    with open("/proc/meminfo") as f:
        info = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in f}
    return info["MemAvailable"]


def violated_instance(P: int, k: int, device: torch.device, seed: int = 0):
    """Memories (k, P) fp32 and a task gradient pointing against their mean: every constraint violated."""
    gen = torch.Generator(device=device).manual_seed(seed)
    memories = torch.randn(k, P, generator=gen, device=device)
    grad = torch.randn(P, generator=gen, device=device) - 0.5 * memories.mean(0) * k**0.5
    return grad, memories


def engine_path(grad: torch.Tensor, memories: torch.Tensor, margin: float) -> None:
    """What a training step does on its partition: the Gram, the dual, g <- g + M^T v with the check, in place."""
    Projector([str(i) for i in range(memories.shape[0])], margin).gradient(
        runs([grad], Layout.of([grad])), memories, 1, {}
    )


def bench_project(sizes, ks, repeats, device, margin) -> list[dict]:
    """Rows: P, k, reference ms, ours ms per solver and the engine's path, ratios, agreement of the results."""
    print(
        "\n| P | k | GEM reference (ms) | ours exact (ms) | ours qpth (ms) | engine (ms) | ref/exact | ref/qpth "
        "| ref/engine | max rel diff |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    out = []
    for P in sizes:
        for k in ks:
            if 4 * P * (k + 3) > 0.6 * available_bytes(device):
                print(f"| {P:.0e} | {k} | skipped: inputs need {4 * P * (k + 3) / 2**30:.1f} GiB | | | | | | | |")
                continue
            grad, memories = violated_instance(P, k, device)
            ours = {
                s: timed(lambda s=s: project(grad, memories, margin, s), repeats, device) for s in ("exact", "qpth")
            }
            mine = project(grad, memories, margin, "exact").cpu()
            work = grad.clone()
            ours["engine"] = timed(
                lambda: engine_path(work, memories, margin), repeats, device, reset=lambda: work.copy_(grad)
            )
            engine_diff = float((work.cpu() - mine).abs().max() / mine.abs().max())
            work = None  # free it (a closure above refers to the name: rebind, not del)
            row = {
                "P": P,
                "k": k,
                "exact_ms": ours["exact"],
                "qpth_ms": ours["qpth"],
                "engine_ms": ours["engine"],
                "engine_rel_diff": engine_diff,
                "reference_ms": None,
            }
            # GEM's layout: one (P, k+1) column per task; the reference overwrites the task column
            grads = torch.empty(P, k + 1, device=device)
            grads[:, :k].copy_(memories.T)
            grads[:, k].copy_(grad)
            memories = None
            need = P * (8 * k + 4 * k + 8 + 8 + 4)  # index_select copy, float64 copies, the result
            cells = (
                f"| {P:.0e} | {k} | skipped: needs {need / 2**30:.0f} GiB more | "
                f"{ours['exact']:.1f} | {ours['qpth']:.1f} | {ours['engine']:.1f} | | | | |"
            )
            if need <= 0.7 * available_bytes(torch.device("cpu")):
                ref = timed(lambda: gem_step(grads, k, margin), repeats, device, reset=lambda: grads[:, k].copy_(grad))
                gem_step(grads, k, margin)
                diff = float((grads[:, k].cpu() - mine).abs().max() / mine.abs().max())
                row.update(reference_ms=ref, reference_rel_diff=diff)
                cells = (
                    f"| {P:.0e} | {k} | {ref:.1f} | {ours['exact']:.1f} | {ours['qpth']:.1f} | "
                    f"{ours['engine']:.1f} | {ref / ours['exact']:.1f} | {ref / ours['qpth']:.1f} | "
                    f"{ref / ours['engine']:.1f} | {max(diff, engine_diff):.1e} |"
                )
            grads = grad = None
            out.append(row)
            print(cells, flush=True)
    return out


def bench_qp(ks, batches, device) -> list[dict]:
    """The QP alone (the `auto` choice): exact enumeration vs qpth vs quadprog in a Python loop, per call."""
    print("\n| k | batch | exact (ms) | qpth (ms) | quadprog loop (ms) |")
    print("|---|---|---|---|---|")
    out = []
    gen = torch.Generator().manual_seed(1)
    for k in ks:
        for B in batches:
            m = torch.randn(B, k, 4 * k + 8, generator=gen, dtype=torch.float64)
            g = torch.randn(B, 4 * k + 8, generator=gen, dtype=torch.float64) - m.mean(1)
            gram, dots = (m @ m.mT).to(device), (m @ g[..., None])[..., 0].to(device)
            exact = float("nan")  # 2^k B systems: minutes beyond this
            if 2**k * B <= 2**17:
                exact = timed(lambda: solve_dual(gram, dots, 0.0, "exact"), 5, device)
            qpth = timed(lambda: solve_dual(gram, dots, 0.0, "qpth"), 5, device)
            G, d = gram.cpu().numpy(), dots.cpu().numpy()
            loop = timed(lambda: [quadprog.solve_qp(G[b], -d[b], np.eye(k), np.zeros(k)) for b in range(B)], 5, device)
            print(f"| {k} | {B} | {exact:.2f} | {qpth:.2f} | {loop:.2f} |", flush=True)
            out.append(
                {
                    "k": k,
                    "batch": B,
                    "exact_ms": exact if exact == exact else None,
                    "qpth_ms": qpth,
                    "quadprog_loop_ms": loop,
                }
            )
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, a few seconds")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--sizes", type=float, nargs="+", help="P values (default 1e6 1e7 1e8)")
    parser.add_argument("--ks", type=int, nargs="+", help="numbers of memories (default 1 2 5 10)")
    parser.add_argument("--repeats", type=int, help="timed runs per cell, median reported (default 5, 3 in --quick)")
    parser.add_argument("--margin", type=float, default=0.0, help="memory_strength / GEM's margin")
    parser.add_argument("--qp-ks", type=int, nargs="+", help="k of the QP-alone table (default 1 2 5 8 10 13)")
    parser.add_argument("--qp-batches", type=int, nargs="+", help="batches of the QP-alone table (default 1 16 128)")
    parser.add_argument("--json", help="also write every figure here")
    args = parser.parse_args()
    device = torch.device(args.device)
    sizes = [int(p) for p in args.sizes or ([1e5, 1e6] if args.quick else [1e6, 1e7, 1e8])]
    ks = args.ks or ([1, 5] if args.quick else [1, 2, 5, 10])
    repeats = args.repeats or (3 if args.quick else 5)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{platform.processor() or 'cpu'}"
    where = (
        f"{datetime.date.today()}, device {device} ({name}), torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, median of {repeats}"
    )
    print(f"# projection bench, {where}")
    rows = bench_project(sizes, ks, repeats, device, args.margin)
    qp = bench_qp(
        args.qp_ks or ([1, 5, 10] if args.quick else [1, 2, 5, 8, 10, 13]),
        args.qp_batches or ([1, 16] if args.quick else [1, 16, 128]),
        device,
    )
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"environment": where, "margin": args.margin, "rows": rows, "qp": qp}, handle, indent=1)


if __name__ == "__main__":
    main()
