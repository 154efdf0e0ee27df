"""`slurm/sweep.sh` on a real one-node Slurm: a 2 seeds x 2 methods x 1 task sweep, resubmission that
reruns nothing, the report over its runs, and a preempted element that checkpoints, requeues and finishes."""

from __future__ import annotations

import json
import subprocess
import time

from tests.slurm.conftest import wait_for_jobs
from tests.slurm.jobs import fixture_args, submit_sweep, sweep_grid
from tests.support import ROOT, micro_overrides

pytestmark = []


def test_sweep_runs_every_element_and_resubmission_reruns_nothing(slurm_cluster, micro, tmp_path):
    grid = sweep_grid(tmp_path, "ci", steps=6)
    extra = fixture_args(micro)
    started = time.time()
    job = submit_sweep(grid, slurm_cluster, extra)
    states = wait_for_jobs([job], slurm_cluster, timeout=600)
    assert set(states.values()) == {"COMPLETED"} and len(states) == 4, states
    runs = tmp_path / "runs" / "ci"
    results = {p.parent.name: json.loads(p.read_text()) for p in runs.glob("*/results.json")}
    assert sorted(results) == ["seed0-gem-both-pos", "seed0-naive-pos", "seed1-gem-both-pos", "seed1-naive-pos"]
    for run_id, r in results.items():
        assert r["run"]["seed"] == int(run_id[4]) and r["run"]["method"] == run_id.split("-")[1]
        assert r["train"]["steps"] == 6 and set(r["test"]["per_language"]) == {"en", "es", "el"}
    stamps = {p: p.stat().st_mtime_ns for p in runs.glob("*/results.json")}
    wall = time.time() - started

    again = submit_sweep(grid, slurm_cluster, extra)
    assert set(wait_for_jobs([again], slurm_cluster, timeout=300).values()) == {"COMPLETED"}
    assert {p: p.stat().st_mtime_ns for p in runs.glob("*/results.json")} == stamps
    logs = list((runs / "slurm").glob(f"{again}_*.out"))
    assert len(logs) == 4 and all("finished already: skipping" in p.read_text() for p in logs)

    report = tmp_path / "report"
    subprocess.run(
        ["distgem", "report", str(runs), "--out", str(report)],
        cwd=ROOT,
        env=slurm_cluster,
        check=True,
        capture_output=True,
        timeout=300,
    )
    table = (report / "report.md").read_text()
    naive = [r["test"]["average"] for k, r in results.items() if "naive" in k]
    assert "| naive | 2 | " in table and f"{sum(naive) / 2:.2f} ± " in table
    assert (report / "table2_pos.png").is_file() and (report / "forgetting.png").is_file()
    (tmp_path / "wall.txt").write_text(f"{wall:.1f}\n")
    print(f"sweep of 4 runs: {wall:.1f} s wall\n{table}")


def test_preempted_element_checkpoints_requeues_and_finishes(slurm_cluster, micro, tmp_path):
    grid = sweep_grid(tmp_path, "preempt", steps=60, seeds=(0,), methods=("gem-both",))
    job = submit_sweep(grid, slurm_cluster, fixture_args(micro))
    run_dir = tmp_path / "runs" / "preempt" / "seed0-gem-both-pos"
    steps = run_dir / "steps.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and not (steps.exists() and len(steps.read_text().splitlines()) >= 5):
        time.sleep(0.2)
    assert steps.exists(), "the element never started training"
    # what Slurm does before the time limit with --signal=B:USR1@N: signal the batch shell
    subprocess.run(["scancel", "--signal=USR1", "--batch", f"{job}_0"], env=slurm_cluster, check=True, timeout=30)
    states = wait_for_jobs([job], slurm_cluster, timeout=600)
    assert set(states.values()) == {"COMPLETED"}, states
    results = json.loads((run_dir / "results.json").read_text())
    assert results["train"]["steps"] == 60
    log = "".join(p.read_text() for p in (tmp_path / "runs" / "preempt" / "slurm").glob("*.out"))
    assert "requeueing" in log, log[-3000:]
    assert not (run_dir / "PREEMPTED").exists()
    assert [json.loads(line)["step"] for line in steps.read_text().splitlines()] == list(range(1, 61))


def test_srun_started_ranks_train_together(slurm_cluster, micro, tmp_path):
    """Two tasks started by a real srun find each other through SLURM_PROCID/SLURM_NTASKS."""
    corpus, backbone = micro
    overrides = micro_overrides(
        corpus,
        backbone,
        tmp_path / "run",
        **{"train.steps": 3, "eval.before_training": "false", "eval.after_training": "false"},
    )
    command = [
        "srun",
        "-n",
        "2",
        "--cpus-per-task=1",
        "--kill-on-bad-exit=1",
        "python",
        "launch/train.py",
        *[a for o in overrides for a in ("--set", o)],
    ]
    env = {**slurm_cluster, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu", "MASTER_PORT": "29871"}
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["run"]["world_size"] == 2 and results["train"]["steps"] == 3
