"""Step time of every method side by side, in one run, on the same data and model (CPU ranks here).

    python bench/step.py [--quick] [--ranks 1 2] [--steps 30] [--set model.backbone=DIR ...]

Per method: median step time (from steps.jsonl, first steps excluded), its ratio to naive, the
forward-backward floor k+1, and GEM's projection time (Gram + all-reduce + QP + update).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
METHODS = {
    "naive": (0, ["method.name=naive"]),
    "mtf-both": (2, ["method.name=mtf", "method.memory=[mlm,xsr]"]),
    "gem-mlm": (1, ["method.name=gem", "method.memory=[mlm]"]),
    "gem-xsr": (1, ["method.name=gem", "method.memory=[xsr]"]),
    "gem-both": (2, ["method.name=gem", "method.memory=[mlm,xsr]"]),
    "gem-per-language": (None, ["method.name=gem", "method.memory=[mlm,xsr]", "method.gem.per_language=true"]),
    "gem-both-R4": (2, ["method.name=gem", "method.memory=[mlm,xsr]", "method.gem.refresh_every=4"]),
}


def run(method: str, ranks: int, steps: int, overrides: list[str], workdir: Path) -> dict:
    run_dir = workdir / f"{method}-{ranks}"
    settings = [f"output.run_dir={run_dir}", f"train.steps={steps}", "eval.every=100000", "eval.before_training=false",
                "eval.memory=false", "output.tensorboard=false", *METHODS[method][1], *overrides]
    launcher = [sys.executable] if ranks == 1 else [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node",
                                                   str(ranks), "--master_port", "29733"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu"}
    result = subprocess.run([*launcher, str(ROOT / "launch" / "train.py"), *[a for s in settings for a in ("--set", s)]],
                            capture_output=True, text=True, env=env, cwd=ROOT)
    if result.returncode:
        raise SystemExit(f"{method} on {ranks} rank(s) failed:\n{result.stderr[-3000:]}")
    records = [json.loads(line) for line in (run_dir / "steps.jsonl").read_text().splitlines()][3:]
    batch = json.loads((run_dir / "results.json").read_text())["config"]["train"]["batch_size"]
    k = sum(1 for key in records[0] if key.startswith("loss/")) - 1
    return {"step_ms": statistics.median(1000 * batch / r["samples_per_s"] for r in records),
            "projection_ms": statistics.median(r.get("gem/projection_ms", 0.0) for r in records), "k": k}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="naive and gem-both, 8 steps, 1 rank")
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--set", action="append", default=[], dest="overrides")
    args = parser.parse_args()
    methods = ["naive", "gem-both"] if args.quick else list(METHODS)
    ranks, steps = ([1], 8) if args.quick else (args.ranks, args.steps)
    with tempfile.TemporaryDirectory() as tmp:
        for n in ranks:
            rows = {m: run(m, n, steps, args.overrides, Path(tmp)) for m in methods}
            base = rows["naive"]["step_ms"]
            print(f"\n{n} rank(s), {steps} steps, median step time")
            print(f"{'method':18s} {'k':>3s} {'step ms':>9s} {'/naive':>7s} {'k+1':>4s} {'projection ms':>14s}")
            for m, r in rows.items():
                print(f"{m:18s} {r['k']:3d} {r['step_ms']:9.1f} {r['step_ms'] / base:7.2f} {r['k'] + 1:4d} {r['projection_ms']:14.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
