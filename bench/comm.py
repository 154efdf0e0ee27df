"""Bytes per step per collective for naive, MTF and GEM on every ZeRO stage (2 CPU ranks, torchrun).

    python bench/comm.py [--quick] [--set model.backbone=DIR --set data.root=DIR ...]

Counts are rank 0's collectives during one steady-state step (bench/collectives.py wraps torch.distributed
before DeepSpeed binds it). Prints a table per stage and GEM's additions over MTF.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from common import launcher  # noqa: E402

METHODS = {
    "naive": ["method.name=naive"],
    "mtf-both": ["method.name=mtf", "method.memory=[mlm,xsr]"],
    "gem-both": ["method.name=gem", "method.memory=[mlm,xsr]"],
}


def measure(stage: int, method: str, overrides: list[str], workdir: Path, step: int = 3) -> Counter:
    run_dir = workdir / f"{method}-zero{stage}"
    settings = [
        f"train.zero_stage={stage}",
        f"output.run_dir={run_dir}",
        "train.steps=3",
        "eval.every=1000",
        "eval.before_training=false",
        "output.tensorboard=false",
        *METHODS[method],
        *overrides,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu"}
    command = [
        *launcher(2),
        str(ROOT / "bench" / "collectives.py"),
        "--out",
        str(run_dir / "comm"),
        *[a for s in settings for a in ("--set", s)],
    ]
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT)
    if result.returncode:
        raise SystemExit(f"{method} zero{stage} failed:\n{result.stderr[-3000:]}")
    records = json.loads((run_dir / "comm" / "rank0.json").read_text())[f"step {step}"]
    return Counter((op, size) for op, size in records)


def summary(counter: Counter) -> dict[str, tuple[int, int]]:
    by_op: dict[str, list[int]] = {}
    for (op, size), n in counter.items():
        calls, total = by_op.get(op, [0, 0])
        by_op[op] = [calls + n, total + n * size]
    return {op: tuple(v) for op, v in sorted(by_op.items())}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="stage 2 only")
    parser.add_argument("--set", action="append", default=[], dest="overrides")
    args = parser.parse_args()
    stages = [2] if args.quick else [0, 1, 2, 3]
    with tempfile.TemporaryDirectory() as tmp:
        for stage in stages:
            counts = {m: measure(stage, m, args.overrides, Path(tmp)) for m in METHODS}
            print(f"\nZeRO-{stage}: bytes per step (rank 0), calls x op")
            for method, counter in counts.items():
                parts = ", ".join(f"{op} {calls}x {total:,} B" for op, (calls, total) in summary(counter).items())
                print(f"  {method:9s} total {sum(s * n for (_, s), n in counter.items()):>10,} B   {parts}")
            added = counts["gem-both"] - counts["mtf-both"]
            print(
                f"  GEM - MTF: {dict(added) or 'nothing'}; "
                f"MTF - GEM: {dict(counts['mtf-both'] - counts['gem-both']) or 'nothing'}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
