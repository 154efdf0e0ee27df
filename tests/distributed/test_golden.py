"""Golden losses (torchtitan's habit): the tiny default's first 20 losses and final parameters, committed.

The tiny default's configuration (configs/tiny.yaml: the synthetic world's tiny preset, its backbone's
architecture) with the backbone pre-trained for 40 steps instead of 3000 (seconds instead of minutes;
what is guarded is the training step, not the backbone's quality). Naive, MTF w/ Both and GEM w/ Both
(margin 0.5) at ZeRO 0 on one process, and GEM w/ Both at ZeRO 3 on two ranks: every logged loss of every step and a
digest of every final parameter must equal tests/golden/tiny.json exactly. A refactor that reorders one
floating-point operation of the step changes them.

Exact equality needs the same float kernels: the file records torch's CPU capability (AVX2, AVX512, ...)
it was written with; on another, losses and parameter sums are compared to 1e-5 relative instead, and
the digests are not compared. Rewrite the file only for an intended change of the numbers:

    DISTGEM_WRITE_GOLDEN=1 bash scripts/test.sh tests/distributed/test_golden.py
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT, read_steps, read_weights, train_command

GOLDEN = ROOT / "tests" / "golden" / "tiny.json"
STEPS = 20
METHODS = {
    "naive": {"method.name": "naive", "method.memory": "[]"},
    "mtf-both": {"method.name": "mtf", "method.memory": "[mlm, xsr]"},
    "gem-both": {"method.name": "gem", "method.memory": "[mlm, xsr]", "method.gem.memory_strength": 0.5},
}
STAGES = {0: 1, 3: 2}  # ZeRO stage -> ranks
# every method at ZeRO 0 in one process; the sharded path once, with the method that uses most of it (GEM's
# capture, Gram and projection on ZeRO-3 partitions over two ranks); naive and MTF on ZeRO-3 are held to one
# process by tests/distributed/test_equivalence.py
RUNS = [(name, 0) for name in METHODS] + [("gem-both", 3)]
RELATIVE = 1e-5  # only where the CPU capability differs from the file's


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(world, backbone): the tiny preset's world and its backbone after 40 pre-training steps (one thread)."""
    base = tmp_path_factory.mktemp("golden")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cli = [sys.executable, "-m", "distgem.cli"]
    subprocess.run(
        [*cli, "world", "--out", str(base / "world"), "--preset", "tiny", "--seed", "0"],
        check=True,
        capture_output=True,
        env=env,
        cwd=ROOT,
    )
    subprocess.run(
        [
            *cli,
            "pretrain",
            "--world",
            str(base / "world"),
            "--out",
            str(base / "backbone"),
            "--preset",
            "tiny",
            "--max-steps",
            "40",
            "--threads",
            "1",
        ],
        check=True,
        capture_output=True,
        env=env,
        cwd=ROOT,
    )
    return base / "world", base / "backbone"


def _run(tiny, run_dir: Path, method: dict, stage: int) -> dict:
    world, backbone = tiny
    overrides = {
        "model.backbone": backbone,
        "data.root": world,
        "data.cache_dir": world.parent / "datasets",
        "train.steps": STEPS,
        "train.zero_stage": stage,
        "eval.every": 1000,
        "eval.before_training": "false",
        "eval.after_training": "false",
        "output.save_final": "true",
        "output.tensorboard": "false",
        "output.run_dir": run_dir,
        **method,
    }
    command = train_command(STAGES[stage]) + ["--config", str(ROOT / "configs" / "tiny.yaml")]
    command += [a for key, value in overrides.items() for a in ("--set", f"{key}={value}")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-4000:]
    losses = [{k: v for k, v in step.items() if k.startswith("loss/")} for step in read_steps(run_dir)]
    weights = read_weights(run_dir)
    parameters = {
        name: {
            "sha256": hashlib.sha256(tensor.contiguous().numpy().tobytes()).hexdigest()[:16],
            "sum": float(tensor.double().sum()),
            "abs_sum": float(tensor.double().abs().sum()),
        }
        for name, tensor in sorted(weights.items())
    }
    return {"losses": losses, "parameters": parameters}


def _capability() -> str:
    import torch

    return torch.backends.cpu.get_cpu_capability()


def test_tiny_default_matches_the_golden_file(tiny, tmp_path):
    runs = {
        f"{name}/zero{stage}": _run(tiny, tmp_path / f"{name}-{stage}", METHODS[name], stage) for name, stage in RUNS
    }
    if os.environ.get("DISTGEM_WRITE_GOLDEN"):
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(json.dumps({"cpu_capability": _capability(), "steps": STEPS, "runs": runs}, indent=1) + "\n")
        pytest.skip(f"wrote {GOLDEN}")
    golden = json.loads(GOLDEN.read_text())
    exact = golden["cpu_capability"] == _capability()
    for key, run in runs.items():
        want = golden["runs"][key]
        assert len(run["losses"]) == STEPS == len(want["losses"]), key
        for step, (got, expected) in enumerate(zip(run["losses"], want["losses"]), 1):
            assert set(got) == set(expected), f"{key} step {step}: logged losses {sorted(got)} != {sorted(expected)}"
            for name in expected:
                same = (
                    got[name] == expected[name] if exact else math.isclose(got[name], expected[name], rel_tol=RELATIVE)
                )
                assert same, f"{key} step {step} {name}: {got[name]!r} != golden {expected[name]!r}"
        assert set(run["parameters"]) == set(want["parameters"]), key
        for name, digest in want["parameters"].items():
            got = run["parameters"][name]
            if exact:  # the bytes; the sums are this process's reductions of them, whose order follows its threads
                assert got["sha256"] == digest["sha256"], f"{key} final {name}: {got} != golden {digest}"
            else:
                assert math.isclose(got["sum"], digest["sum"], rel_tol=RELATIVE, abs_tol=RELATIVE), (key, name)
