"""Step time of every method side by side, in one process per rank count, steps interleaved.

    python bench/step.py [--quick] [--ranks 1 2] [--steps 20] [--methods ...] [--config FILE ...]
                         [--set section.key=value ...]
    python bench/step.py --config configs/real/me5-pos.yaml --set model.backbone=DIR --ranks 1 \
        --methods naive gem-xsr gem-xsr-gamma0.1 ...        # the real-model knobs, side by side
    python bench/step.py --encoder mbert --seq 128 --batch 32 --ranks 1 --methods naive mtf-both gem-both \
        --set train.precision=bf16 --set train.zero_stage=2 --json F   # an mBERT-sized encoder (GPU check)

One Trainer per method is built in the same process(es) (torchrun for N > 1) and their steps alternate
(A B C ... then ... C B A, so no method always runs first), each between two barriers; medians over the
steps after --warmup (and the mean step: a batch with one long sentence is slow, and a run lasts the mean).
With DISTGEM_PROFILE=1 the engine times its phases; GEM's overhead outside
forward/backward is capture + Gram + all-reduce + QP + update, set against its floor: the values it
must move on each step (bench/common.py) at the copy bandwidth measured once per round in the same run.
Prints one markdown table per rank count; `--json` also writes every figure. On CUDA each method's GPU
memory is tracked in the same process: what its construction and first step left allocated (weights,
optimizer state, GEM's rows) and the most its steps allocated on top of that.

`--encoder SHAPE` (bench/common.py SHAPES: tiny, small, mbert) needs no backbone or corpus: it writes a
corpus of long sentences (the micro corpus's formats and words), a small WordPiece tokenizer trained on it,
and a random-weight BertForMaskedLM of that shape (mbert: bert-base-multilingual-cased's config, 178M
values with the 17-tag head), cached under --encoder-dir; every batch is then `--batch` windows of `--seq`
tokens (memory batches `--memory-batch`: MLM windows, XSR pairs of two sequences).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from common import ROOT, Bandwidth, environment, floor_ms, floor_values, launcher, load_average, random_backbone

METHODS = {
    "naive": ["method.name=naive"],
    "mtf-both": ["method.name=mtf", "method.memory=[mlm,xsr]"],
    "gem-mlm": ["method.name=gem", "method.memory=[mlm]"],
    "gem-xsr": ["method.name=gem", "method.memory=[xsr]"],
    "gem-both": ["method.name=gem", "method.memory=[mlm,xsr]"],
    "gem-per-language": ["method.name=gem", "method.memory=[mlm,xsr]", "method.gem.per_language=true"],
    "gem-both-R4": ["method.name=gem", "method.memory=[mlm,xsr]", "method.gem.refresh_every=4"],
    "gem-per-layer": ["method.name=gem", "method.memory=[mlm,xsr]", "method.gem.per_layer=true"],
    "gem-mlm-en": ["method.name=gem", "method.memory=[mlm]", "method.mlm_languages=en"],
    "gem-both-update": ["method.name=gem", "method.memory=[mlm,xsr]", "method.gem.target=update"],
    "gem-both-anchor": [
        "method.name=gem",
        "method.memory=[mlm,xsr]",
        "method.gem.target=update",
        "method.gem.anchor=pretrained",
    ],
    # the real-model knobs (docs/RESULTS.md "Real model"; XSR memory only, as multilingual-e5 has no MLM head)
    "mtf-xsr": ["method.name=mtf", "method.memory=[xsr]"],
    "mtf-xsr-w0.1": ["method.name=mtf", "method.memory=[xsr]", "method.mtf_weights={xsr: 0.1}"],
    "gem-xsr-gamma0.1": ["method.name=gem", "method.memory=[xsr]", "method.gem.memory_strength=0.1"],
    "gem-xsr-gamma0.5": ["method.name=gem", "method.memory=[xsr]", "method.gem.memory_strength=0.5"],
    "gem-xsr-batch64": ["method.name=gem", "method.memory=[xsr]", "method.memory_batch_size=64"],
    "gem-xsr-batch256": ["method.name=gem", "method.memory=[xsr]", "method.memory_batch_size=256"],
    # the sentence embeddings in one padded pass, as before model.embed_chunk_tokens (the default chunks them)
    "gem-xsr-onepass": ["method.name=gem", "method.memory=[xsr]", "model.embed_chunk_tokens=0"],
    "gem-xsr-batch64-onepass": [
        "method.name=gem",
        "method.memory=[xsr]",
        "method.memory_batch_size=64",
        "model.embed_chunk_tokens=0",
    ],
    "gem-xsr-per-language": ["method.name=gem", "method.memory=[xsr]", "method.gem.per_language=true"],
    "gem-xsr-per-language-gamma0.1": [
        "method.name=gem",
        "method.memory=[xsr]",
        "method.gem.per_language=true",
        "method.gem.memory_strength=0.1",
    ],
    "gem-xsr-R4": ["method.name=gem", "method.memory=[xsr]", "method.gem.refresh_every=4"],
    # issue 29's cheapest form of the margin: memory gradients refreshed every R steps (1 + k/R passes a step)
    "gem-xsr-gamma0.5-R4": [
        "method.name=gem",
        "method.memory=[xsr]",
        "method.gem.memory_strength=0.5",
        "method.gem.refresh_every=4",
    ],
    "gem-xsr-gamma0.5-R8": [
        "method.name=gem",
        "method.memory=[xsr]",
        "method.gem.memory_strength=0.5",
        "method.gem.refresh_every=8",
    ],
    # what a practitioner weighs GEM against
    "l2sp": ["method.name=l2sp", "method.l2sp_strength=0.1"],
    "lora-r8": ["method.name=lora", "method.lora_rank=8", "train.lr=5e-4"],
    "gem-xsr-update": ["method.name=gem", "method.memory=[xsr]", "method.gem.target=update"],
    "gem-xsr-anchor": [
        "method.name=gem",
        "method.memory=[xsr]",
        "method.gem.target=update",
        "method.gem.anchor=pretrained",
    ],
}
DEFAULT = [
    "naive",
    "mtf-both",
    "gem-mlm",
    "gem-xsr",
    "gem-both",
    "gem-per-language",
    "gem-both-R4",
    "gem-per-layer",
    "gem-both-update",
    "gem-both-anchor",
]
OVERHEAD = ("capture", "gram", "all_reduce", "qp", "update")
COMMON = ["eval.before_training=false", "eval.memory=false", "output.tensorboard=false"]


def worker(args) -> None:
    """Runs inside every rank: build the trainers, interleave their steps, rank 0 writes the records."""
    from distgem.config.sections import load_run_config
    from distgem.distributed import world as dist
    from distgem.train.engine import Trainer

    os.environ["DISTGEM_PROFILE"] = "1"
    world = dist.init()
    gpu = GpuMemory(world.device)
    trainers = {}
    for name in args.methods:
        config = load_run_config(
            args.configs, [*COMMON, f"output.run_dir={args.workdir}/{name}", *METHODS[name], *args.overrides]
        )
        with gpu.building(name):
            trainers[name] = Trainer(config, world)
        trainers[name].engine.train()  # what Trainer.train does first (from_pretrained returns eval mode)
    bandwidth = Bandwidth(world.device)
    records: dict[str, list] = {name: [] for name in args.methods}
    for step in range(args.warmup + args.steps):
        bandwidth.measure()
        for name in args.methods if step % 2 == 0 else args.methods[::-1]:
            trainer = trainers[name]
            world.barrier()
            with gpu.stepping(name):
                stats = _timed_step(trainer, step, world)
            if step >= args.warmup:
                records[name].append(
                    {
                        **stats,
                        "p": trainer.gradients.layout.numel,
                        "k": len(trainer.memories),
                        "refreshed": trainer.gradients.memory is not None and trainer.method.refresh(step),
                    }
                )
    if world.rank == 0:
        Path(args.out).write_text(
            json.dumps(
                {
                    "records": records,
                    "bandwidth": bandwidth.samples,
                    "environment": environment(world.device),
                    "gpu_memory": gpu.by_method,
                }
            )
        )
    dist.shutdown()
    dist.exit_process(0)


class GpuMemory:
    """Per method on CUDA (empty elsewhere): `resident_mb`, what building it and its steps left allocated
    (weights, optimizer state, GEM's rows: created at the first step), and `transient_mb`, the most a step
    allocated on top of what was allocated before it. Their sum is the method's peak were it alone."""

    def __init__(self, device):
        import torch

        self.torch, self.device, self.cuda = torch, device, device.type == "cuda"
        self.by_method: dict[str, dict[str, float]] = {}

    def _allocated(self) -> float:
        return self.torch.cuda.memory_allocated(self.device) / 2**20

    @contextlib.contextmanager
    def building(self, name: str):
        before = self._allocated() if self.cuda else 0.0
        yield
        if self.cuda:
            self.by_method[name] = {"resident_mb": self._allocated() - before, "transient_mb": 0.0}

    @contextlib.contextmanager
    def stepping(self, name: str):
        if not self.cuda:
            yield
            return
        self.torch.cuda.reset_peak_memory_stats(self.device)
        before = self._allocated()
        yield
        mine = self.by_method[name]
        mine["resident_mb"] += self._allocated() - before
        mine["transient_mb"] = max(
            mine["transient_mb"], self.torch.cuda.max_memory_allocated(self.device) / 2**20 - before
        )
        mine["peak_alone_mb"] = mine["resident_mb"] + mine["transient_mb"]


def _timed_step(trainer, step: int, world) -> dict:
    import time

    from common import sync

    sync(world.device)
    start = time.perf_counter()
    stats = trainer.step(step)
    sync(world.device)
    world.barrier()
    return {**stats, "step_ms": 1000 * (time.perf_counter() - start)}


def summarise(records: list[dict], bandwidth: float) -> dict:
    """Medians of step and phase times; the overhead against the floor summed over the same steps."""
    med = lambda key: statistics.median(r.get(f"time/{key}_ms", 0.0) for r in records)  # noqa: E731
    k, p = records[0]["k"], records[0]["p"]
    gem = "gem/violated" in records[0]
    overhead = [sum(r.get(f"time/{t}_ms", 0.0) for t in OVERHEAD) for r in records]
    floors = (
        [floor_ms(floor_values(k, p, r["refreshed"], bool(r.get("gem/violated", 0))), bandwidth) for r in records]
        if gem
        else None
    )
    passes = [(k + 1 if r["refreshed"] else 1) for r in records]
    return {
        "k": k,
        "p": p,
        "step": statistics.median(r["step_ms"] for r in records),
        "mean": statistics.fmean(r["step_ms"] for r in records),  # what a run's length follows: slow batches count
        "fb_per_pass": statistics.median(r.get("time/forward_backward_ms", 0.0) / n for r, n in zip(records, passes)),
        "overhead": statistics.median(overhead),
        "floor": statistics.median(floors) if gem else None,
        "ratio": sum(overhead) / sum(floors) if gem else None,
        "violated": statistics.mean(r.get("gem/violated", 0.0) for r in records) if gem else None,
        **{t: med(t) for t in (*OVERHEAD, "zero", "optimizer")},
    }


def report(n: int, result: dict, steps: int, loads: tuple[str, str]) -> dict:
    """Prints the table of one rank count; returns its rows (what --json keeps)."""
    bandwidth = statistics.median(result["bandwidth"])
    rows = {
        m: {**summarise(r, bandwidth), **result.get("gpu_memory", {}).get(m, {})} for m, r in result["records"].items()
    }
    base = rows["naive"]["step"] if "naive" in rows else None
    print(
        f"\n{n} rank(s), {steps} interleaved steps each; {result['environment']}; load before / after: "
        f"{loads[0]} | {loads[1]}; copy bandwidth {bandwidth:.1f} GB/s per rank (read + write)"
    )
    gpu = any("resident_mb" in r for r in rows.values())
    print(
        "| method | k | p (values/rank) | step ms | / naive | mean ms | / naive | k+1 | fwd-bwd ms/pass "
        "| overhead ms | floor ms "
        "| overhead / floor | capture | Gram | all-reduce | QP | update | zero | optimizer | violated |"
        + (" GPU resident MB | GPU step peak over it MB |" if gpu else "")
    )
    print("|---" * (20 + 2 * gpu) + "|")
    for m, r in rows.items():
        gem = r["floor"] is not None
        mean_base = rows["naive"]["mean"] if "naive" in rows else None
        cells = [
            m,
            r["k"],
            f"{r['p'] / 1e6:.2f}M",
            f"{r['step']:.1f}",
            f"{r['step'] / base:.2f}" if base else "",
            f"{r['mean']:.1f}",
            f"{r['mean'] / mean_base:.2f}" if mean_base else "",
            r["k"] + 1,
            f"{r['fb_per_pass']:.1f}",
            f"{r['overhead']:.2f}",
            f"{r['floor']:.2f}" if gem else "",
            f"{r['ratio']:.2f}" if gem else "",
            *(f"{r[t]:.2f}" for t in (*OVERHEAD, "zero", "optimizer")),
            f"{r['violated']:.2f}" if gem else "",
        ]
        if gpu:
            cells += [f"{r.get('resident_mb', 0):.0f}", f"{r.get('transient_mb', 0):.0f}"]
        print("| " + " | ".join(str(c) for c in cells) + " |")
    return {
        "ranks": n,
        "environment": result["environment"],
        "bandwidth_gbs": bandwidth,
        "steps": steps,
        "load_before": loads[0],
        "load_after": loads[1],
        "rows": rows,
    }


def encoder_overrides(args) -> list[str]:
    """--set overrides for a random-weight encoder of shape `args.encoder` on a generated long-sentence corpus
    (built once under --encoder-dir): every batch is `--batch` windows of `--seq` tokens."""
    from common import long_corpus

    from tests.support import micro_overrides, write_micro_backbone

    workdir = Path(args.encoder_dir or ROOT / ".cache" / "bench-encoder") / f"seq{args.seq}"
    corpus = workdir / "corpus"
    if not (corpus / "DONE").exists():
        long_corpus(corpus, words=args.seq)
        (corpus / "DONE").write_text("ok\n")
    tokenizer = workdir / "tokenizer"
    if not (tokenizer / "config.json").exists():
        write_micro_backbone(tokenizer, corpus)  # its tokenizer; the weights come from random_backbone
    backbone = random_backbone(args.encoder, str(tokenizer), workdir)
    settings = {
        "model.max_length": args.seq,
        "model.stride": args.seq // 4,
        "train.batch_size": args.batch,
        "method.memory_batch_size": args.memory_batch,
        "train.lr": 1e-5,
        "eval.every": 10**6,
    }
    return [
        o
        for o in micro_overrides(corpus, Path(backbone), workdir / "unused", **settings)
        if not o.startswith("output.run_dir=")
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="naive and gem-both, 1 rank, 3 steps")
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--methods", nargs="+", default=DEFAULT, choices=list(METHODS))
    parser.add_argument(
        "--config",
        action="append",
        default=[],
        dest="configs",
        help="run config files under every method (e.g. configs/real/me5-pos.yaml); --set wins",
    )
    parser.add_argument("--set", action="append", default=[], dest="overrides")
    parser.add_argument(
        "--encoder",
        choices=["tiny", "small", "mbert"],
        help="a random-weight encoder of this shape on generated long sentences (no backbone needed)",
    )
    parser.add_argument("--seq", type=int, default=128, help="--encoder: tokens per window")
    parser.add_argument("--batch", type=int, default=32, help="--encoder: windows per task batch")
    parser.add_argument(
        "--memory-batch",
        type=int,
        default=16,
        help="--encoder: memory batch (MLM windows; XSR pairs, two sequences each)",
    )
    parser.add_argument("--encoder-dir", help="--encoder: where the corpus and weights are cached")
    parser.add_argument("--json", help="also write every figure here")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return 0
    if args.quick:
        args.methods, args.ranks, args.steps, args.warmup = ["naive", "gem-both"], [1], 3, 1
    if args.encoder:
        args.overrides = [*encoder_overrides(args), *args.overrides]
    # ROOT goes first on PYTHONPATH; what was there stays (the GPU machine's carried wheels live there)
    env = {
        **os.environ,
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
        "DS_ACCELERATOR": os.environ.get("DS_ACCELERATOR", "cpu"),
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
    }
    tables = []
    for n in args.ranks:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "records.json"
            command = [
                *launcher(n),
                __file__,
                "--worker",
                "--workdir",
                tmp,
                "--out",
                str(out),
                "--steps",
                str(args.steps),
                "--warmup",
                str(args.warmup),
                "--methods",
                *args.methods,
                *[a for c in args.configs for a in ("--config", c)],
                *[a for s in args.overrides for a in ("--set", s)],
            ]
            before = load_average()
            # the workers' stderr passes through: a run stopped from outside (the GPU check's budget) shows how far
            # it got
            done = subprocess.run(command, stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
            if done.returncode:
                raise SystemExit(f"{n} rank(s) failed (exit status {done.returncode}); their output is above")
            tables.append(report(n, json.loads(out.read_text()), args.steps, (before, load_average())))
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {"methods": args.methods, "overrides": args.overrides, "encoder": args.encoder, "tables": tables},
                indent=1,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
