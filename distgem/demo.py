"""The README's first command: the embedded default end to end, naive vs GEM w/ Both, on 2 ranks.

Builds (once, cached) the synthetic world and the tiny pre-trained backbone, trains both methods
through the `deepspeed` launcher on CPU ranks (GPUs when there are), and prints a table: zero-shot
scores of the tested checkpoint, and MLM perplexity and XSR P@1 before training, at the end of
training and for the tested checkpoint, each row labelled with its step.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
METHODS = {"naive": "configs/methods/naive.yaml", "gem-both": "configs/methods/gem-both.yaml"}
# what the deepspeed launcher says on every run, expected on a CPU machine: kept in the run's launcher.log
NOISE = re.compile(r"^\[\d{4}-\d\d-\d\d [\d:,]+\] \[(INFO|WARNING)\] \[(runner|launch|real_accelerator)\.py:")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/demo.sh", description=__doc__)
    parser.add_argument("--ranks", type=int, default=2, help="training processes (CPU cores or GPUs)")
    parser.add_argument("--out", default="runs/demo", help="where the two runs go")
    parser.add_argument("--set", action="append", default=[], dest="overrides", help="passed to every run")
    args = parser.parse_args(argv)
    from distgem.world.pretrain import ensure_backbone

    started = time.perf_counter()
    cpu = os.environ.get("DS_ACCELERATOR") == "cpu"
    print("[demo] embedded world and tiny backbone (built on first use, then cached)", file=sys.stderr)
    backbone = ensure_backbone(preset="tiny")
    print(f"[demo] backbone: {backbone}", file=sys.stderr)
    if cpu:
        print(
            f"[demo] a CPU run: {args.ranks} ranks on CPU cores (gloo); the deepspeed launcher's own messages go "
            f"to {args.out}/<method>/launcher.log",
            file=sys.stderr,
        )
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    for name, method in METHODS.items():
        run_dir = Path(args.out) / name
        command = [
            "deepspeed",
            "--num_gpus",
            str(args.ranks),
            "--master_port",
            str(_free_port()),
            str(ROOT / "launch" / "train.py"),
            "--config",
            str(ROOT / "configs" / "tiny.yaml"),
            "--config",
            str(ROOT / method),
            "--set",
            f"output.run_dir={run_dir}",
            *[a for o in args.overrides for a in ("--set", o)],
        ]
        print(f"[demo] training {name} on {args.ranks} ranks: {' '.join(command)}", file=sys.stderr)
        code = _run_quietly(command, env, run_dir / "launcher.log")
        if code != 0:
            print(f"[demo] {name} failed (exit {code}); the whole output is in {run_dir}/launcher.log", file=sys.stderr)
            return code
    runs = {name: json.loads((Path(args.out) / name / "results.json").read_text()) for name in METHODS}
    print(table(runs))
    # this process (where the world and backbone are built, on every core) and the training runs it waited for
    cpu = sum(
        u.ru_utime + u.ru_stime for u in map(resource.getrusage, (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    )
    print(
        f"\nwall time {time.perf_counter() - started:.0f} s, CPU time {cpu:.0f} s "
        f"(this run, building the world and backbone included when it did; they are cached for the next)"
    )
    print(next_commands(args.out))
    return 0


def _run_quietly(command: list[str], env: dict, log: Path) -> int:
    """Run the launcher: everything into `log`, and to the terminal all but its expected messages."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as record:
        process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        pending = b""
        for chunk in iter(lambda: process.stdout.read1(4096), b""):
            record.write(chunk.decode(errors="replace"))
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                if not NOISE.match(line.decode(errors="replace").rsplit("\r", 1)[-1]):
                    sys.stderr.buffer.write(line + b"\n")
            if b"\r" in pending and not pending.startswith(b"["):  # a progress bar redraws within its line
                sys.stderr.buffer.write(pending)
                pending = b""
            sys.stderr.flush()
        sys.stderr.buffer.write(pending)
        return process.wait()


def method_label(name: str, results: dict) -> str:
    """`gem-both (margin 0.5)`: the method and the GEM setting it ran with."""
    gem = results["config"]["method"]["gem"] if results["config"]["method"]["name"] == "gem" else None
    return f"{name} (margin {gem['memory_strength']:g})" if gem else name


def table(runs: dict[str, dict]) -> str:
    """Zero-shot score per language of the tested checkpoint; MLM perplexity and XSR P@1 of the backbone, at the
    end of training and of the tested checkpoint, per method, each row with its step."""
    first = next(iter(runs.values()))
    task = first["run"]["task"]
    langs = list(first["test"]["per_language"])
    targets = [lang for lang in langs if lang != "en"]
    width = 44

    def row(label: str, values) -> str:
        return f"{label:<{width}}" + "".join(f"{v:8.1f}" if v is not None else f"{'-':>8}" for v in values)

    def tested_step(r: dict) -> str:
        best = r["dev"]["best_step"]
        return f"step {best}, best dev" if best is not None else f"step {r['train']['steps']}, last"

    lines = [
        f"{'zero-shot ' + task + ' (tested checkpoint)':<{width}}"
        + "".join(f"{lang:>8}" for lang in langs)
        + f"{'avg':>8}"
    ]
    for name, r in runs.items():
        per = r["test"]["per_language"]
        lines.append(
            row(
                f"{method_label(name, r)} ({tested_step(r)})",
                [*(per[lang]["score"] for lang in langs), r["test"]["average"]],
            )
        )
    for title, key, columns, pick in (
        ("MLM perplexity", "mlm_perplexity", langs, lambda m, lang: m[lang]),
        ("XSR P@1 (xx->en)", "xsr", targets, lambda m, lang: m[lang]["p@1"]),
    ):
        lines += ["", f"{title:<{width}}" + "".join(f"{lang:>8}" for lang in columns)]
        lines.append(row("backbone (step 0)", [pick(first["backbone"][key], lang) for lang in columns]))
        for name, r in runs.items():
            end = r["dev"]["history"][-1] if r["dev"]["history"] else {}
            if end.get("memory") and end["step"] == r["train"]["steps"]:  # what was forgotten by the end
                lines.append(
                    row(f"{name}, end (step {end['step']})", [pick(end["memory"][key], lang) for lang in columns])
                )
            if r.get("after"):  # what the model that was tested kept
                lines.append(
                    row(f"{name}, tested ({tested_step(r)})", [pick(r["after"][key], lang) for lang in columns])
                )
    return "\n".join(lines)


def next_commands(out: str) -> str:
    """What to type next: the environment the demo installed, then the tools on its runs."""
    venv = ROOT / ".venv"
    return "\n".join(
        [
            "",
            "next:",
            f"  source {os.path.relpath(venv / 'bin' / 'activate')}      # distgem, tensorboard, deepspeed on the PATH",
            f"  tensorboard --logdir {out}                    # curves over training; open http://localhost:6006",
            f"  distgem report {out} --out {out}/report        # tables, t-tests, plots (forgetting.png)",
            f"  distgem export {out}/gem-both --out {out}/model && "
            f"distgem predict {out}/model FILE.conllu --out tagged.conllu",
        ]
    )


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


if __name__ == "__main__":
    sys.exit(main())
