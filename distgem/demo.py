"""The README's first command: the embedded default end to end, naive vs GEM w/ Both, on 2 ranks.

Builds (once, cached) the synthetic world and the tiny pre-trained backbone, trains both methods
through the `deepspeed` launcher on CPU ranks (GPUs when there are), and prints a small table.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
METHODS = {"naive": "configs/methods/naive.yaml", "gem-both": "configs/methods/gem-both.yaml"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/demo.sh", description=__doc__)
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--out", default="runs/demo")
    parser.add_argument("--set", action="append", default=[], dest="overrides", help="passed to every run")
    args = parser.parse_args(argv)
    from distgem.world.pretrain import ensure_backbone

    started = time.perf_counter()
    print("[demo] embedded world and tiny backbone (built on first use, then cached)", file=sys.stderr)
    backbone = ensure_backbone(preset="tiny")
    print(f"[demo] backbone: {backbone}", file=sys.stderr)
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    for name, method in METHODS.items():
        run_dir = Path(args.out) / name
        command = ["deepspeed", "--num_gpus", str(args.ranks), "--master_port", str(_free_port()),
                   str(ROOT / "launch" / "train.py"), "--config", str(ROOT / "configs" / "tiny.yaml"),
                   "--config", str(ROOT / method), "--set", f"output.run_dir={run_dir}",
                   *[a for o in args.overrides for a in ("--set", o)]]
        print(f"[demo] training {name} on {args.ranks} ranks: {' '.join(command)}", file=sys.stderr)
        result = subprocess.run(command, env=env, cwd=ROOT)
        if result.returncode != 0:
            print(f"[demo] {name} failed (exit {result.returncode})", file=sys.stderr)
            return result.returncode
    print(table({name: json.loads((Path(args.out) / name / "results.json").read_text()) for name in METHODS}))
    print(f"\nwall time {time.perf_counter() - started:.0f} s; TensorBoard: tensorboard --logdir {args.out}")
    return 0


def table(runs: dict[str, dict]) -> str:
    """Zero-shot score per language, MLM perplexity and XSR P@1 before/after fine-tuning, per method."""
    first = next(iter(runs.values()))
    task = first["run"]["task"]
    langs = list(first["test"]["per_language"])
    targets = [lang for lang in langs if lang != "en"]
    lines = [f"{'zero-shot ' + task:<22}" + "".join(f"{lang:>8}" for lang in langs) + f"{'avg':>8}"]
    for name, r in runs.items():
        per = r["test"]["per_language"]
        lines.append(f"{name:<22}" + "".join(f"{per[lang]['score']:8.1f}" for lang in langs) + f"{r['test']['average']:8.1f}")
    lines.append("")
    lines.append(f"{'MLM perplexity':<22}" + "".join(f"{lang:>8}" for lang in langs))
    lines.append(f"{'backbone':<22}" + "".join(f"{first['backbone']['mlm_perplexity'][lang]:8.1f}" for lang in langs))
    for name, r in runs.items():
        lines.append(f"{name:<22}" + "".join(f"{r['after']['mlm_perplexity'][lang]:8.1f}" for lang in langs))
    lines.append("")
    lines.append(f"{'XSR P@1 (xx->en)':<22}" + "".join(f"{lang:>8}" for lang in targets))
    lines.append(f"{'backbone':<22}" + "".join(f"{first['backbone']['xsr'][lang]['p@1']:8.1f}" for lang in targets))
    for name, r in runs.items():
        lines.append(f"{name:<22}" + "".join(f"{r['after']['xsr'][lang]['p@1']:8.1f}" for lang in targets))
    return "\n".join(lines)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


if __name__ == "__main__":
    sys.exit(main())
