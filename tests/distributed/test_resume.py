"""A run killed with SIGKILL at a random step and resumed ends exactly like an uninterrupted run."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time

import pytest

from tests.support import ROOT, micro_overrides, read_steps, read_weights, run_training, train_command

STEPS = 12
SETTINGS = {
    "train.steps": STEPS,
    "output.checkpoint_every": 2,
    "eval.every": 3,
    "output.save_final": "true",
    "model.dropout": 0.1,
    "method.name": "mtf",
    "method.memory": "[mlm, xsr]",
}


def _kill_at(micro, run_dir, step: int) -> None:
    corpus, backbone = micro
    command = train_command(1) + [
        a for o in micro_overrides(corpus, backbone, run_dir, **SETTINGS) for a in ("--set", o)
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu"}
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=ROOT)
    steps_file = run_dir / "steps.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and process.poll() is None:
        if steps_file.exists() and len(steps_file.read_text().splitlines()) >= step:
            break
        time.sleep(0.05)
    assert process.poll() is None, "the run ended before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()


def test_sigkill_and_resume_equals_uninterrupted(micro, tmp_path):
    uninterrupted, resumed = tmp_path / "a", tmp_path / "b"
    run_training(micro, uninterrupted, 1, SETTINGS)
    kill_step = random.Random(os.getpid()).randint(3, STEPS - 2)
    _kill_at(micro, resumed, kill_step)
    assert (resumed / "checkpoints" / "latest").exists()
    run_training(micro, resumed, 1, SETTINGS, args=("--resume",))
    a, b = json.loads((uninterrupted / "results.json").read_text()), json.loads((resumed / "results.json").read_text())
    assert b["test"] == a["test"], f"killed at step {kill_step}"
    assert b["dev"] == a["dev"] and b["train"]["steps"] == STEPS
    assert [s["loss/pos"] for s in read_steps(resumed)] == [s["loss/pos"] for s in read_steps(uninterrupted)]
    wa, wb = read_weights(uninterrupted), read_weights(resumed)
    assert all(bool((wa[k] == wb[k]).all()) for k in wa), f"weights differ after a kill at step {kill_step}"


def test_resume_without_checkpoint_starts_fresh(micro, tmp_path):
    result = run_training(micro, tmp_path, 1, {"train.steps": 2, "eval.every": 2}, args=("--resume",))
    assert json.loads((tmp_path / "results.json").read_text())["train"]["steps"] == 2
    assert result.returncode == 0


@pytest.mark.parametrize("bad", [["--set", "train.lrr=1"], ["--set", "train.zero_stage=5"]])
def test_bad_config_is_one_line_exit_2(micro, tmp_path, bad):
    result = run_training(micro, tmp_path, 1, {}, args=tuple(bad), check=False)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and result.stderr.strip().startswith("distgem: error: --set train.")


def _children(pid: int) -> list[int]:
    path = f"/proc/{pid}/task/{pid}/children"
    if not os.path.exists(path):
        return []
    with open(path) as handle:
        return [int(p) for p in handle.read().split()]


def _start(micro, run_dir, ranks: int, settings: dict) -> subprocess.Popen:
    corpus, backbone = micro
    command = train_command(ranks) + [
        a for o in micro_overrides(corpus, backbone, run_dir, **settings) for a in ("--set", o)
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu"}
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)


@pytest.mark.parametrize("ranks, signum", [(1, signal.SIGUSR1), (2, signal.SIGTERM)])
def test_preemption_checkpoints_exits_for_requeue_and_resumes_identically(micro, tmp_path, ranks, signum):
    settings = {**SETTINGS, "output.checkpoint_every": 0}
    run_training(micro, tmp_path / "a", ranks, settings)
    process = _start(micro, tmp_path / "b", ranks, settings)
    steps_file = tmp_path / "b" / "steps.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and not (steps_file.exists() and len(steps_file.read_text().splitlines()) >= 3):
        time.sleep(0.05)
    # Slurm signals every task; here only one rank hears it: the others must stop at the same step
    target = process.pid if ranks == 1 else _children(process.pid)[-1]
    os.kill(target, signum)
    _, stderr = process.communicate(timeout=240)
    marker = tmp_path / "b" / "PREEMPTED"
    assert marker.exists(), stderr[-2000:]
    stopped_at = int(marker.read_text())
    assert 3 <= stopped_at < STEPS
    if ranks == 1:
        assert process.returncode == 75
    else:
        assert process.returncode != 0  # torchrun folds the workers' 75 into its own failure code
    assert (tmp_path / "b" / "checkpoints" / f"step{stopped_at}").is_dir()
    run_training(micro, tmp_path / "b", ranks, settings, args=("--resume",))
    assert not marker.exists()
    a = json.loads((tmp_path / "a" / "results.json").read_text())
    b = json.loads((tmp_path / "b" / "results.json").read_text())
    assert b["test"] == a["test"] and b["dev"] == a["dev"]
    wa, wb = read_weights(tmp_path / "a"), read_weights(tmp_path / "b")
    assert max(float((wa[k] - wb[k]).abs().max()) for k in wa) == 0.0


@pytest.mark.parametrize("stage", [1, 3])
def test_gem_resumes_its_memory_gradients_on_a_sharded_partition(micro, tmp_path, stage):
    """GEM with memory gradients refreshed every 2 steps, stopped at step 3 (its memories from step 2 in the
    checkpoint) and resumed under ZeRO 1/3, where the partition exists only after the first backward: the same
    weights as the run that never stopped (the restore once crashed on a partition of size 0)."""
    settings = {
        "method.name": "gem",
        "method.memory": "[mlm, xsr]",
        "method.gem.refresh_every": 2,
        "train.zero_stage": stage,
        "output.checkpoint_every": 3,
        "eval.every": 3,
        "output.save_final": "true",
        "eval.before_training": "false",
        "eval.after_training": "false",
    }
    run_training(micro, tmp_path / "once", 1, {**settings, "train.steps": 6})
    run_training(micro, tmp_path / "twice", 1, {**settings, "train.steps": 3})
    run_training(
        micro, tmp_path / "twice", 1, {**settings, "train.steps": 6}, args=("--resume", "--allow-config-change")
    )
    a, b = read_weights(tmp_path / "once"), read_weights(tmp_path / "twice")
    assert all(bool((a[k] == b[k]).all()) for k in a)
    assert [s["loss/pos"] for s in read_steps(tmp_path / "twice")] == [
        s["loss/pos"] for s in read_steps(tmp_path / "once")
    ]
