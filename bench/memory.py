"""Peak memory of GEM against naive and MTF per ZeRO stage, set against the k extra gradient partitions.

    python bench/memory.py [--quick] [--ranks 2] [--stages 0 1 2 3] [--hidden 768 --layers 6] [--set ...]

Each cell is one training run (torchrun, CPU ranks, gloo) of --steps steps on the embedded tiny world
with a random-weight BERT of the tiny backbone's vocabulary and the given width and depth (large
enough that k gradient partitions stand out of the process's ~1 GB baseline); evaluation off. The
figure is each rank's peak RSS (results.json, train.peak_rss_mb), the larger of the ranks. GEM and
MTF keep k memory gradients over the rank's partition, k x p fp32 (p = P at stage 0, P/N at 1-3):
`GEM - naive` is that plus the memory tasks' data and their (larger) activations, `GEM - MTF` isolates
what GEM adds to the same passes (the Gram and the update are streamed: nothing P-sized).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from common import ROOT, launcher, load_average

METHODS = {
    "naive": ["method.name=naive"],
    "mtf-both": ["method.name=mtf", "method.memory=[mlm,xsr]"],
    "gem-both": ["method.name=gem", "method.memory=[mlm,xsr]"],
}
COMMON = [
    "eval.before_training=false",
    "eval.after_training=false",
    "eval.memory=false",
    "eval.every=100000",
    "eval.memory_loss_examples=0",
    "output.tensorboard=false",
]


def write_model(directory: Path, hidden: int, layers: int, backbone: str) -> int:
    """A random-weight BertForMaskedLM with the tokenizer of `backbone`; returns its parameter count."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForMaskedLM

    from distgem.model.backbone import resolve

    tokenizer = AutoTokenizer.from_pretrained(resolve(backbone))
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=max(1, hidden // 64),
        intermediate_size=4 * hidden,
        max_position_embeddings=512,
    )
    model = BertForMaskedLM(config)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return sum(p.numel() for p in model.parameters())


def peak(run_dir: Path, ranks: int, stage: int, method: str, model: Path, args, env: dict) -> float:
    sets = [
        *COMMON,
        *METHODS[method],
        f"model.backbone={model}",
        f"train.steps={args.steps}",
        f"train.zero_stage={stage}",
        f"output.run_dir={run_dir}",
        *args.overrides,
    ]
    done = subprocess.run(
        [*launcher(ranks), str(ROOT / "launch" / "train.py"), *[a for s in sets for a in ("--set", s)]],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
    )
    if done.returncode:
        raise SystemExit(f"{method} ZeRO-{stage} failed (rc={done.returncode}):\n{done.stderr[-4000:]}")
    return max(json.loads((run_dir / "results.json").read_text())["train"]["peak_rss_mb"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="hidden 128, 2 layers, 1 rank, ZeRO-2, 2 steps")
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--stages", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--hidden", type=int, default=768)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--backbone", default="embedded:tiny", help="whose tokenizer (vocabulary) the model takes")
    parser.add_argument("--set", action="append", default=[], dest="overrides")
    args = parser.parse_args()
    if args.quick:
        args.hidden, args.layers, args.ranks, args.stages, args.steps = 128, 2, 1, [2], 2
    backbone = next((s.split("=", 1)[1] for s in args.overrides if s.startswith("model.backbone=")), args.backbone)
    args.overrides = [s for s in args.overrides if not s.startswith("model.backbone=")]
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "DS_ACCELERATOR": os.environ.get("DS_ACCELERATOR", "cpu"),
        "PYTHONPATH": str(ROOT),
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    k = 2
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "model"
        P = write_model(model, args.hidden, args.layers, backbone)
        print(
            f"# peak RSS per rank (max over {args.ranks} ranks), hidden {args.hidden}, {args.layers} layers, "
            f"P = {P / 1e6:.1f}M, k = {k}, {args.steps} steps; load average {load_average()}\n"
        )
        print(
            "| ZeRO | p = values/rank | naive MB | MTF-both MB | GEM-both MB | GEM - naive MB | GEM - MTF MB "
            "| k x p x 4 B (MB) |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for stage in args.stages:
            p = P if stage == 0 else -(-P // args.ranks)
            mb = {m: peak(Path(tmp) / f"{m}-{stage}", args.ranks, stage, m, model, args, env) for m in METHODS}
            print(
                f"| {stage} | {p / 1e6:.1f}M | {mb['naive']:.0f} | {mb['mtf-both']:.0f} | {mb['gem-both']:.0f} | "
                f"{mb['gem-both'] - mb['naive']:+.0f} | {mb['gem-both'] - mb['mtf-both']:+.0f} | "
                f"{k * p * 4 / 2**20:.0f} |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
