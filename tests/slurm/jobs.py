"""Slurm jobs as the tests drive them: submitting a training job or a sweep as a user types it, reading a job's and
a node's state from scontrol, waiting with a bound, and finding and freezing a run's ranks on the nodes."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from tests.slurm.conftest import CLUSTER_SH
from tests.support import ROOT, micro_overrides


def fixture_args(micro, extra: dict | None = None) -> list[str]:
    """`--set` arguments that point a sweep's runs at the micro fixture (the grid keeps its own steps, eval and
    output settings)."""
    corpus, backbone = micro
    overrides = micro_overrides(corpus, backbone, Path("unused"), **(extra or {}))
    return [
        a
        for o in overrides
        if not o.startswith(("output.run_dir=", "train.steps=", "eval.every=", "output.tensorboard="))
        for a in ("--set", o)
    ]


def sweep_grid(
    tmp_path: Path, name: str, steps: int, seeds=(0, 1), methods=("naive", "gem-both"), nodes: int = 1
) -> Path:
    """A sweep grid over seeds x methods on POS (configs/tiny.yaml), its runs under tmp_path/runs; `nodes` a run."""
    grid = {
        "name": name,
        "base": ["configs/tiny.yaml"],
        "axes": {
            "seed": list(seeds),
            "method": [f"configs/methods/{m}.yaml" for m in methods],
            "task": ["configs/tasks/pos.yaml"],
        },
        "set": {"train.steps": steps, "eval.every": max(steps // 2, 1), "output.tensorboard": True},
        "out": str(tmp_path / "runs"),
        "resources": {
            **({"nodes": nodes} if nodes > 1 else {}),
            "gpus_per_node": 0,
            "ranks_per_node": 1,
            "cpus_per_task": 1,
            "mem": "1G",
            "time": "00:20:00",
            "signal_seconds": 30,
        },
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(grid, sort_keys=False))
    return path


def submit_sweep(grid: Path, env: dict, extra: list[str]) -> str:
    result = subprocess.run(
        ["bash", "slurm/sweep.sh", str(grid), *extra], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    match = re.search(r"submitted array (\d+)", result.stdout)
    assert match, result.stdout
    return match.group(1)


def sbatch_train(
    env: dict, micro, run_dir: Path, nodes: int, ranks_per_node: int, settings: dict, extra_env: dict | None = None
) -> str:
    """`sbatch --nodes=N --ntasks-per-node=1 slurm/train.sbatch --set ...` as a user types it; the job's log is
    RUN_DIR.out (appended to by every start of the job)."""
    corpus, backbone = micro
    overrides = micro_overrides(corpus, backbone, run_dir, **settings)
    command = [
        "sbatch",
        "--parsable",
        f"--nodes={nodes}",
        "--ntasks-per-node=1",
        "--cpus-per-task=1",
        "--gpus-per-node=0",
        f"--job-name={run_dir.name}",
        f"--output={run_dir}.out",
        "slurm/train.sbatch",
        *[a for o in overrides for a in ("--set", o)],
    ]
    env = {**env, "DISTGEM_CPU_RANKS": str(ranks_per_node), **(extra_env or {})}
    result = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().split(";", 1)[0]


def job_info(job: str, env: dict) -> dict[str, str]:
    out = subprocess.run(
        ["scontrol", "show", "job", "-o", job], env=env, capture_output=True, text=True, timeout=30
    ).stdout
    return dict(re.findall(r"(?:^| )(\w+)=(\S*)", out))


def wait_job(job: str, env: dict, done, timeout: float, what: str) -> dict[str, str]:
    """Poll the job until done(info) holds; fail with its state and log tail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        info = job_info(job, env)
        if done(info):
            return info
        if time.monotonic() > deadline:
            log = Path(info.get("StdOut", "")).read_text()[-3000:] if info.get("StdOut") else ""
            pytest.fail(
                f"job {job}: not {what} after {timeout:.0f} s (state {info.get('JobState')}, "
                f"reason {info.get('Reason')}, restarts {info.get('Restarts')}):\n{log}"
            )
        time.sleep(0.2)


def node_addr(env: dict, node: str) -> str:
    return node_info(env, node)["NodeAddr"]


def node_info(env: dict, node: str) -> dict[str, str]:
    out = subprocess.run(
        ["scontrol", "show", "node", "-o", node], env=env, capture_output=True, text=True, timeout=30
    ).stdout
    return dict(re.findall(r"(?:^| )(\w+)=(\S*)", out))


def rank_pid(env: dict, node: str, run_dir: Path, timeout: float = 120) -> int:
    """The training rank of the run that runs on `node` (a process in the node's network namespace)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = subprocess.run(
            ["bash", str(CLUSTER_SH), "pids", node], env=env, capture_output=True, text=True, timeout=30
        ).stdout.split()
        for pid in pids:
            try:
                command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if "launch/train.py" in command and "--local_rank" in command and f"output.run_dir={run_dir} " in command:
                return int(pid)
        time.sleep(0.2)
    pytest.fail(f"no rank of {run_dir.name} on {node}")


def freeze(env: dict, run_dir: Path, reached, what: str, timeout: float = 300) -> dict[str, int]:
    """Once reached() holds, SIGSTOP the run's ranks on both nodes (found first, so that nothing slow stands between
    the two): the test then acts at a known point whatever the machine's load, never after the run has ended."""
    pids = {node: rank_pid(env, node, run_dir, timeout) for node in ("node1", "node2")}
    deadline = time.monotonic() + timeout
    while not reached():
        assert time.monotonic() < deadline, f"{run_dir.name}: not {what} after {timeout} s"
        time.sleep(0.005)
    for pid in pids.values():
        os.kill(pid, signal.SIGSTOP)
    return pids


def freeze_after_checkpoint(env: dict, run_dir: Path, step: int) -> dict[str, int]:
    latest = run_dir / "checkpoints" / "latest"

    def reached() -> bool:
        return latest.exists() and int(latest.read_text().strip().removeprefix("step")) >= step

    return freeze(env, run_dir, reached, f"checkpointed step {step}")
