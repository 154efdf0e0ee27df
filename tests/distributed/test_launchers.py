"""Every way of starting ranks resolves them correctly: each 2-rank launch reproduces one process.

torchrun, the deepspeed launcher (plain, and with a hostfile + --no_ssh as on multi-node Slurm),
mpirun (ranks from mpi4py), and srun-style tasks (SLURM_PROCID / SLURM_NTASKS, no RANK variables).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT, free_port, micro_overrides, read_steps, read_weights, run_training

SETTINGS = {
    "train.steps": 6,
    "eval.before_training": "false",
    "eval.after_training": "false",
    "output.save_final": "true",
    "train.zero_stage": 2,
    "method.name": "mtf",
    "method.memory": "[mlm, xsr]",
}
TRAIN = str(ROOT / "launch" / "train.py")


@pytest.fixture(scope="module")
def reference(micro, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("one")
    run_training(micro, run_dir, 1, SETTINGS)
    return run_dir


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", DS_ACCELERATOR="cpu", **extra)
    return env


def _args(micro, run_dir):
    corpus, backbone = micro
    return [a for o in micro_overrides(corpus, backbone, run_dir, **SETTINGS) for a in ("--set", o)]


def _assert_same(reference, run_dir):
    assert json.loads((run_dir / "results.json").read_text())["run"]["world_size"] == 2
    one, two = read_steps(reference), read_steps(run_dir)
    assert [s["loss/pos"] for s in two] == pytest.approx([s["loss/pos"] for s in one], abs=5e-6)
    w1, w2 = read_weights(reference), read_weights(run_dir)
    assert max(float((w1[k] - w2[k]).abs().max()) for k in w1) < 2e-4


def _launch(command, env, timeout=300):
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]


def test_deepspeed_launcher(micro, reference, tmp_path):
    """Two ranks under the deepspeed launcher equal one process, and leave none of DeepSpeed's shared-memory
    all-reduce segments (66 MB each, named after the port) behind in /dev/shm."""
    port = free_port()
    _launch(["deepspeed", "--num_gpus", "2", "--master_port", str(port), TRAIN, *_args(micro, tmp_path)], _env())
    _assert_same(reference, tmp_path)
    assert not list(Path("/dev/shm").glob(f"deepspeed_allreduce_buffer_*_{port}_*"))


def test_deepspeed_hostfile_without_ssh(micro, reference, tmp_path):
    hostfile = tmp_path / "hostfile"
    hostfile.write_text("localhost slots=2\n")
    _launch(
        [
            "deepspeed",
            "--hostfile",
            str(hostfile),
            "--no_ssh",
            "--node_rank",
            "0",
            "--master_addr",
            "127.0.0.1",
            "--master_port",
            str(free_port()),
            TRAIN,
            *_args(micro, tmp_path / "run"),
        ],
        _env(),
    )
    _assert_same(reference, tmp_path / "run")


@pytest.mark.skipif(shutil.which("mpirun") is None, reason="mpirun not installed (pip install '.[mpi]')")
def test_mpirun_ranks_from_mpi4py(micro, reference, tmp_path):
    env = _env(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    _launch(
        [
            "mpirun",
            "-n",
            "2",
            "--mca",
            "btl",
            "self,sm",
            "-x",
            "PATH",
            "-x",
            "OMP_NUM_THREADS",
            "-x",
            "DS_ACCELERATOR",
            "-x",
            "TORCH_EXTENSIONS_DIR",
            sys.executable,
            TRAIN,
            *_args(micro, tmp_path),
        ],
        env,
    )
    _assert_same(reference, tmp_path)


def test_srun_style_tasks(micro, reference, tmp_path):
    """What srun gives each task: SLURM_PROCID/NTASKS/LOCALID and the node list, no torchrun variables."""
    port = str(free_port())
    processes = [
        subprocess.Popen(
            [sys.executable, TRAIN, *_args(micro, tmp_path)],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(
                SLURM_PROCID=str(r),
                SLURM_NTASKS="2",
                SLURM_LOCALID=str(r),
                SLURM_NNODES="1",
                SLURM_JOB_NODELIST="localhost",
                MASTER_PORT=port,
            ),
        )
        for r in range(2)
    ]
    for process in processes:
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr[-3000:]
    _assert_same(reference, tmp_path)


def test_discover_ranks_precedence(monkeypatch):
    from distgem.distributed.world import discover_ranks

    for key in (
        "RANK",
        "WORLD_SIZE",
        "LOCAL_RANK",
        "SLURM_PROCID",
        "SLURM_NTASKS",
        "SLURM_LOCALID",
        "OMPI_COMM_WORLD_SIZE",
        "PMI_SIZE",
        "PMIX_RANK",
        "MPI_LOCALNRANKS",
    ):
        monkeypatch.delenv(key, raising=False)
    assert discover_ranks() == (0, 1, 0)
    monkeypatch.setenv("SLURM_PROCID", "3")
    monkeypatch.setenv("SLURM_NTASKS", "8")
    monkeypatch.setenv("SLURM_LOCALID", "1")
    assert discover_ranks() == (3, 8, 1)
    monkeypatch.setenv("RANK", "5")  # a launcher inside the allocation wins over srun's task ids
    monkeypatch.setenv("WORLD_SIZE", "16")
    monkeypatch.setenv("LOCAL_RANK", "2")
    assert discover_ranks() == (5, 16, 2)
