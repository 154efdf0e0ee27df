"""Failure is never reported as success: divergence, damaged checkpoints, early signals, stale locks, retention.

Each test reproduces a failure a user met (issue 31) on the micro fixtures and asserts what must happen
instead: a one-line error and a distinct exit code, a fallback that says what it skipped, a requeue.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support import ROOT, micro_overrides, run_training, train_command

GEM = {"method.name": "gem", "method.memory": "[mlm, xsr]"}
DIVERGING = {**GEM, "train.lr": 1e6, "train.steps": 6, "eval.every": 3}


def _strict(path: Path):
    """The file's JSON, refusing NaN and Infinity (which json.loads would otherwise accept)."""

    def refuse(constant):
        raise AssertionError(f"{path} holds {constant}: not JSON")

    return (
        [json.loads(line, parse_constant=refuse) for line in path.read_text().splitlines()]
        if path.suffix == ".jsonl"
        else json.loads(path.read_text(), parse_constant=refuse)
    )


# --- 1. a diverged run --------------------------------------------------------------------------------


def test_a_diverged_run_stops_with_exit_3_and_is_never_a_result(micro, tmp_path):
    result = run_training(micro, tmp_path, 1, DIVERGING, check=False)
    assert result.returncode == 3, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("distgem: error: diverged: 3 steps in a row") and "Traceback" not in result.stderr
    results = _strict(tmp_path / "results.json")
    assert results["status"] == "diverged" and results["train"]["nonfinite_steps"] == 3
    assert results["test"]["average"] is None and not results["test"]["per_language"]
    steps = _strict(tmp_path / "steps.jsonl")
    flagged = [s["step"] for s in steps if s["train/nonfinite"]]
    assert flagged == [3, 4, 5] and all(s["loss/pos"] is None and "loss/pos" in s["nonfinite"] for s in steps[2:])
    assert (tmp_path / "DIVERGED").read_text().strip() == "5"
    # the dev evaluation at step 3 scored a non-finite model: no number, and never the "best" checkpoint
    assert results["dev"]["history"][0]["average"] is None and results["dev"]["best_step"] is None
    assert not (tmp_path / "checkpoints" / "best").exists()


def test_the_skip_policy_goes_on_and_no_metric_comes_from_non_finite_embeddings(micro, tmp_path):
    run_training(micro, tmp_path, 1, {**DIVERGING, "train.nonfinite": "skip"})
    results = _strict(tmp_path / "results.json")
    assert results["status"] == "ok" and results["train"]["nonfinite_steps"] >= 3
    # never P@1 = 100 from NaN similarities: the scores of a non-finite model are null and listed
    for lang, scores in results["after"]["xsr"].items():
        assert all(v is None for v in scores.values()), (lang, scores)
        assert f"after.xsr.{lang}.p@1" in results["nonfinite"]
    assert all(m["score"] is None for m in results["test"]["per_language"].values())


def test_retrieval_of_non_finite_embeddings_is_nan_never_100():
    import torch

    from distgem.tasks.metrics import perplexity, retrieval_precision

    nan = torch.full((5, 4), float("nan"))
    assert all(math.isnan(v) for v in retrieval_precision(nan, nan).values())
    one_bad = torch.randn(5, 4)
    one_bad[2, 1] = float("inf")
    assert all(math.isnan(v) for v in retrieval_precision(one_bad, torch.randn(5, 4)).values())
    finite = torch.randn(5, 4)
    assert retrieval_precision(finite, finite)["p@1"] == 100.0  # the finite case still scores
    assert math.isinf(perplexity(1e6, 1)) and math.isnan(perplexity(float("nan"), 3))


# --- 2. damaged checkpoints ----------------------------------------------------------------------------

CHECKPOINTED = {
    "train.steps": 6,
    "output.checkpoint_every": 2,
    "output.keep_checkpoints": 2,
    "eval.every": 3,
    "method.name": "mtf",
    "method.memory": "[mlm, xsr]",
    "output.save_final": "true",
}


@pytest.fixture(scope="module")
def finished(micro, tmp_path_factory):
    """A run that kept checkpoints step4 and step6 (and best)."""
    run_dir = tmp_path_factory.mktemp("finished")
    run_training(micro, run_dir, 1, CHECKPOINTED)
    return run_dir


def test_only_the_newest_checkpoints_are_kept(finished):
    kept = sorted(p.name for p in (finished / "checkpoints").iterdir() if p.is_dir())
    assert kept == ["best", "step4", "step6"]
    assert (finished / "checkpoints" / "latest").read_text() == "step6"


@pytest.mark.parametrize("damage", ["mp_rank_00_model_states.pt", "rank0.safetensors", "state.json", "delete"])
def test_resume_skips_a_damaged_checkpoint_and_says_which_file(micro, finished, tmp_path, damage):
    run_dir = tmp_path / "run"
    shutil.copytree(finished, run_dir)
    latest = run_dir / "checkpoints" / "step6"
    if damage == "delete":
        shutil.rmtree(latest)
    else:
        path = latest / damage
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # truncated, as by a full disk
    result = run_training(micro, run_dir, 1, CHECKPOINTED, args=("--resume",))
    if damage != "delete":
        assert f"checkpoint step6: {damage} has" in result.stderr and "resuming from step4" in result.stderr
    ours, theirs = (
        json.loads((run_dir / "results.json").read_text()),
        json.loads((finished / "results.json").read_text()),
    )
    assert ours["test"] == theirs["test"] and ours["train"]["steps"] == 6  # steps 5-6 again, the same numbers


def test_resume_with_no_intact_checkpoint_is_exit_2(micro, finished, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(finished, run_dir)
    for tag in ("step4", "step6"):
        (run_dir / "checkpoints" / tag / "state.json").write_text("{")
    result = run_training(micro, run_dir, 1, CHECKPOINTED, args=("--resume",), check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "no intact checkpoint" in result.stderr.strip().splitlines()[-1]


def test_resume_with_another_config_is_refused_with_the_keys_named(micro, finished, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(finished, run_dir)
    changed = {**CHECKPOINTED, "train.lr": 5e-4}
    result = run_training(micro, run_dir, 1, changed, args=("--resume",), check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "train.lr: 0.001 -> 0.0005" in result.stderr.strip().splitlines()[-1]
    before = (run_dir / "config.yaml").read_text()
    assert "lr: 0.001" in before  # the refused resume did not rewrite the run's record
    run_training(micro, run_dir, 1, changed, args=("--resume", "--allow-config-change"))
    assert "lr: 0.0005" in (run_dir / "config.yaml").read_text()


# --- 3. a preemption signal during start-up -------------------------------------------------------------


@pytest.mark.parametrize("moment", ["imports", "start-up"])
def test_a_signal_during_start_up_exits_75_for_a_requeue(micro, tmp_path, moment):
    corpus, backbone = micro
    command = train_command(1) + [
        a for o in micro_overrides(corpus, backbone, tmp_path, **{"train.steps": 3}) for a in ("--set", o)
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu"}
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    deadline = time.time() + 120
    if moment == "imports":
        time.sleep(1.0)  # torch and DeepSpeed are still being imported
    else:  # the config is written once the process group exists: data and engine come next
        while not (tmp_path / "config.yaml").exists() and time.time() < deadline and process.poll() is None:
            time.sleep(0.02)
    process.send_signal(signal.SIGUSR1 if moment == "start-up" else signal.SIGTERM)
    _, err = process.communicate(timeout=240)
    assert process.returncode == 75, err[-2000:]
    assert (tmp_path / "PREEMPTED").read_text().strip() == "0"  # no step taken: the requeue starts afresh
    assert not (tmp_path / "results.json").exists()


# --- 4. a build lock left by a killed extension build ----------------------------------------------------


def test_a_stale_extension_build_lock_is_cleared_not_waited_on(tmp_path):
    extensions = Path(os.environ.get("TORCH_EXTENSIONS_DIR", ROOT / ".cache" / "torch_extensions"))
    op = extensions / "deepspeed_shm_comm"
    op.mkdir(parents=True, exist_ok=True)
    (op / "lock").write_text("")  # what a build killed half-way leaves: torch would poll it forever
    code = "from distgem.distributed.deepspeed import prebuild_ops; prebuild_ops(); print('ready')"
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
        env={**os.environ, "DS_ACCELERATOR": "cpu", "TORCH_EXTENSIONS_DIR": str(extensions)},
    )
    assert done.returncode == 0 and "ready" in done.stdout, done.stderr[-2000:]
    assert f"removing {op / 'lock'}, left by an interrupted extension build" in done.stderr
    assert not (op / "lock").exists()


def test_a_wait_for_another_build_says_what_it_waits_for(tmp_path, capsys, monkeypatch):
    from distgem import store

    path = tmp_path / "x.lock"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, sys, time; f = open(sys.argv[1], 'a'); "
            "fcntl.flock(f, fcntl.LOCK_EX); f.write('4242'); f.flush(); print('held', flush=True); "
            "time.sleep(1.5)",
            str(path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    monkeypatch.setattr(store, "WAIT_QUIET_SECONDS", 0.3)
    with store.lock(path, "the test build"):
        assert path.read_text() == str(os.getpid())  # the holder's pid, for the next one who waits
    holder.communicate()
    err = capsys.readouterr().err
    assert "waiting" in err and "for the test build" in err and "held by pid 4242" in err
