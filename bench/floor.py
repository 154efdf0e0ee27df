"""GEM's overhead terms against its bandwidth floor, per partition p = P/N and number of memories k.

    python bench/floor.py [--quick] [--device cpu|cuda] [--models tiny small mbert] [--ranks 1 8 64] [--ks 1 2 4 8]
                          [--json ROWS.json] [--plot GROWTH.png]
    python bench/floor.py --from-json ROWS.json --plot GROWTH.png     # redraw saved rows, measure nothing

For each (model, N, k), this rank's work on a flat partition of p = ceil(P/N) fp32 values (as ZeRO 1-3
hold it), through the engine's own functions (distgem.gem.buffer, distgem.gem.gram): capture (k copies into the buffer),
the Gram, the QP, the update + check on a violated instance, and the zeroing between tasks. The floor is
(4k+3) x 4p bytes at the bandwidth of a large copy measured between the terms (each repetition: copy,
terms, copy, ...; medians). N > 1 is simulated on one device: a rank's terms depend only on p; the
all-reduce of (k+1)^2 scalars needs real ranks and is measured by bench/step.py. `--design bf16` repeats
the terms with bf16 memories. `--plot FILE` draws the growth: overhead and floor against p for each k,
and overhead / floor against k for each partition.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys

import torch
from common import Bandwidth, environment, floor_ms, floor_values, parameter_count, timed_ms

from distgem.gem import buffer as gem_buffer
from distgem.gem import gram as gem_gram
from distgem.gem import qp as gem_qp

TERMS = ("capture", "gram", "qp", "update", "zero")


def violated(k: int, p: int, device, seed: int = 0):
    """A partition (what a backward leaves), the task gradient against the memories' mean, k memory rows."""
    gen = torch.Generator(device=device).manual_seed(seed)
    partition = torch.randn(p, generator=gen, device=device)
    grad = torch.randn(p, generator=gen, device=device) - 0.5 * math.sqrt(k) * partition
    return partition, grad


def measure(k: int, p: int, device, repeats: int, bandwidth: Bandwidth, memory_dtype=torch.float32) -> dict:
    """Median ms of every term, interleaved with copy-bandwidth samples."""
    partition, grad = violated(k, p, device)
    layout = gem_buffer.Layout.of([grad])
    buffer = gem_buffer.MemoryBuffer(k, layout, device, memory_dtype)  # the engine's is fp32
    rows = buffer.data
    grads, source = gem_buffer.runs([grad], layout), gem_buffer.runs([partition], layout)
    times: dict[str, list[float]] = {t: [] for t in TERMS}
    state = {}

    def capture():
        for i in range(k):
            buffer.capture(i, source)

    def gram():
        state["gram"] = gem_gram.partial_gram(rows, grads, 1)

    def qp():
        g = state["gram"]
        state["v"] = gem_qp.solve_dual(g[:, :k, :k], g[:, :k, k])

    def update():
        gem_gram.combine(grads, rows, state["v"], check=True)

    for _ in range(repeats + 1):  # the first round warms caches and builds the kernels
        bandwidth.measure()
        for name, fn in (
            ("capture", capture),
            ("gram", gram),
            ("qp", qp),
            ("update", update),
            ("zero", partition.zero_),
        ):
            times[name].append(timed_ms(fn, device))
        partition.normal_()
    return {t: statistics.median(v[1:]) for t, v in times.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny only, N = 1 and 8, k = 1 and 2, 2 repeats")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--models", nargs="+", default=["tiny", "small", "mbert"])
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--design", choices=["fp32", "bf16"], default="fp32", help="dtype of the memory buffer")
    parser.add_argument("--json", help="also write the rows here (--from-json redraws them)")
    parser.add_argument("--plot", help="draw the growth against p and k into this image")
    parser.add_argument("--from-json", help="measure nothing: read rows written by --json (for --plot)")
    args = parser.parse_args()
    if args.from_json:
        if not args.plot:
            parser.error("--from-json needs --plot")
        try:
            saved = json.loads(open(args.from_json).read())
            rows, where = saved["rows"], saved["environment"]
        except (OSError, ValueError, KeyError) as err:
            print(f"{args.from_json}: not rows written by --json ({err})", file=sys.stderr)
            return 2
        plot(rows, args.plot, where)
        return 0
    if args.quick:
        args.models, args.ranks, args.ks, args.repeats = ["tiny"], [1, 8], [1, 2], 2
    device = torch.device(args.device)
    memory_dtype = torch.bfloat16 if args.design == "bf16" else torch.float32
    bandwidth = Bandwidth(device)
    print(f"# GEM overhead terms vs floor, {environment(device)}")
    print(
        f"# fused CPU kernels: "
        f"{'yes' if gem_gram.library() is not None and device.type == 'cpu' else 'no (torch path)'}; "
        f"memories {args.design}; median of {args.repeats}"
    )
    print(
        "\n| model | P | N | p = P/N | k | capture ms | Gram ms | QP ms | update ms | overhead ms | floor ms "
        "| overhead / floor | zero ms |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    rows = []
    for model in args.models:
        P = parameter_count(model)
        for n in args.ranks:
            p = -(-P // n)
            for k in args.ks:
                t = measure(k, p, device, args.repeats, bandwidth, memory_dtype)
                overhead = t["capture"] + t["gram"] + t["qp"] + t["update"]
                floor = floor_ms(floor_values(k, p), bandwidth.median)
                rows.append(
                    {
                        "model": model,
                        "P": P,
                        "N": n,
                        "p": p,
                        "k": k,
                        **t,
                        "overhead": overhead,
                        "floor": floor,
                        "bandwidth": bandwidth.median,
                    }
                )
                print(
                    f"| {model} | {P / 1e6:.1f}M | {n} | {p / 1e6:.2f}M | {k} | {t['capture']:.2f} | {t['gram']:.2f} "
                    f"| {t['qp']:.2f} | {t['update']:.2f} | {overhead:.2f} | {floor:.2f} | {overhead / floor:.2f} "
                    f"| {t['zero']:.2f} |",
                    flush=True,
                )
    print(
        f"\ncopy bandwidth (read + write): median {bandwidth.median:.1f} GB/s over {len(bandwidth.samples)} copies "
        f"of {bandwidth.src.numel() * 4 >> 20} MiB (min {min(bandwidth.samples):.1f}, max {max(bandwidth.samples):.1f})"
    )
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"environment": environment(device), "design": args.design, "rows": rows}, handle, indent=1)
    if args.plot:
        plot(rows, args.plot, environment(device))
    return 0


def plot(rows: list[dict], path: str, where: str) -> None:
    """Left: overhead (points) and floor (lines) against p, one colour per k. Right: overhead / floor
    against k, one line per partition (model, N)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.4))
    ks = sorted({r["k"] for r in rows})
    colours = dict(zip(ks, plt.rcParams["axes.prop_cycle"].by_key()["color"] * 4))
    for k in ks:
        mine = sorted((r for r in rows if r["k"] == k), key=lambda r: r["p"])
        left.plot([r["p"] for r in mine], [r["overhead"] for r in mine], "o", color=colours[k], label=f"k = {k}")
        left.plot([r["p"] for r in mine], [r["floor"] for r in mine], "-", color=colours[k], alpha=0.6)
    left.set(
        xscale="log",
        yscale="log",
        xlabel="p = P/N values per rank",
        ylabel="ms per step",
        title="GEM overhead (points) and its floor (lines)",
    )
    left.legend()
    for key in sorted(
        {(r["model"], r["N"]) for r in rows}, key=lambda m: -min(r["p"] for r in rows if (r["model"], r["N"]) == m)
    ):
        mine = sorted((r for r in rows if (r["model"], r["N"]) == key), key=lambda r: r["k"])
        right.plot(
            [r["k"] for r in mine],
            [r["overhead"] / r["floor"] for r in mine],
            "o-",
            label=f"{key[0]} N={key[1]} (p={mine[0]['p'] / 1e6:.2g}M)",
        )
    right.axhline(1.3, color="grey", linestyle="--", linewidth=1)
    right.set(
        yscale="log",
        xlabel="k memories",
        ylabel="overhead / floor",
        xticks=ks,
        title="against the floor (dashed: the 1.3x target)",
    )
    right.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.suptitle(where, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
