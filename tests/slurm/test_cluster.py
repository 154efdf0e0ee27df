"""Self-test of the local one-node Slurm harness (slurm/local/cluster.sh, tests/slurm/conftest.py):
array jobs, multi-task srun steps, fake GPUs and the orphan marker the teardown relies on."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.slurm.conftest import wait_for_jobs


def run(args: list[str], env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, f"{args} failed (rc={proc.returncode}):\n{proc.stdout}{proc.stderr}"
    return proc


def sbatch(env: dict[str, str], workdir: Path, *args: str) -> str:
    """Submit; --output goes into workdir/out, created first (an absent directory fails the job)."""
    (workdir / "out").mkdir(exist_ok=True)
    proc = run(["sbatch", "--parsable", f"--chdir={workdir}", f"--output={workdir}/out/%A_%a.log", *args], env)
    return proc.stdout.strip().split(";", 1)[0]


def test_array_job_runs_every_element(slurm_cluster, tmp_path):
    job = sbatch(
        slurm_cluster,
        tmp_path,
        "--array=0-3",
        "--wrap",
        'echo "$SLURM_ARRAY_TASK_ID" > "task_$SLURM_ARRAY_TASK_ID.txt"',
    )
    states = wait_for_jobs([job], slurm_cluster, timeout=45)
    assert states == {f"{job}_{i}": "COMPLETED" for i in range(4)}
    for i in range(4):
        assert (tmp_path / f"task_{i}.txt").read_text().strip() == str(i)
        assert (tmp_path / "out" / f"{job}_{i}.log").is_file()


def test_srun_two_tasks_get_distinct_ranks(slurm_cluster, tmp_path):
    proc = run(["srun", "-n", "2", f"--chdir={tmp_path}", "bash", "-c", 'echo "rank=$SLURM_PROCID"'], slurm_cluster)
    assert sorted(proc.stdout.split()) == ["rank=0", "rank=1"], proc.stdout + proc.stderr


def test_gpu_jobs_get_cuda_visible_devices(slurm_cluster, tmp_path):
    job = sbatch(
        slurm_cluster,
        tmp_path,
        "--array=0-1",
        "--gres=gpu:1",
        "--wrap",
        'echo "${CUDA_VISIBLE_DEVICES:-unset} ${SLURM_JOB_GPUS:-unset}" > "gpu_$SLURM_ARRAY_TASK_ID.txt"',
    )
    both = run(
        [
            "srun",
            "-n",
            "1",
            "--gres=gpu:2",
            f"--chdir={tmp_path}",
            "bash",
            "-c",
            'echo "${CUDA_VISIBLE_DEVICES:-unset}"',
        ],
        slurm_cluster,
    )
    assert both.stdout.strip() == "0,1"
    assert wait_for_jobs([job], slurm_cluster, timeout=45) == {f"{job}_{i}": "COMPLETED" for i in range(2)}
    for i in range(2):
        visible, job_gpus = (tmp_path / f"gpu_{i}.txt").read_text().split()
        assert visible in {"0", "1"} and job_gpus in {"0", "1"}
    # More GPUs than the node has: rejected at submission, not left pending forever.
    over = subprocess.run(
        ["sbatch", "--gres=gpu:3", "--wrap", "true"],
        env=slurm_cluster,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert over.returncode != 0 and "not available" in over.stderr, over.stderr


def test_jobs_carry_the_teardown_marker(slurm_cluster, tmp_path):
    """cluster.sh down finds orphaned job processes by DISTGEM_SLURM_JOB_OF in /proc/PID/environ,
    injected by the TaskProlog: present even for --export=NONE jobs."""
    job = sbatch(
        slurm_cluster, tmp_path, "--export=NONE", "--wrap", 'echo "${DISTGEM_SLURM_JOB_OF:-unset}" > marker.txt'
    )
    assert wait_for_jobs([job], slurm_cluster, timeout=45) == {job: "COMPLETED"}
    assert (tmp_path / "marker.txt").read_text().strip() == slurm_cluster["DISTGEM_SLURM_ROOT"]
