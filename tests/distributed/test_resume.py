"""A run killed with SIGKILL at a random step and resumed ends exactly like an uninterrupted run."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time

import pytest

from tests.distributed.conftest import ROOT, read_steps, read_weights, run_training, train_command
from tests.support import micro_overrides

STEPS = 12
SETTINGS = {"train.steps": STEPS, "output.checkpoint_every": 2, "eval.every": 3, "output.save_final": "true",
            "model.dropout": 0.1, "method.name": "mtf", "method.memory": "[mlm, xsr]"}


def _kill_at(micro, run_dir, step: int) -> None:
    corpus, backbone = micro
    command = train_command(1) + [a for o in micro_overrides(corpus, backbone, run_dir, **SETTINGS) for a in ("--set", o)]
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
