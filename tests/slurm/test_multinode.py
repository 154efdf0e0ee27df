"""Two nodes for real: slurm/train.sbatch and slurm/sweep.sh on a two-node Slurm (`slurm_nodes`: node1 and node2,
each a network, UTS and mount namespace of this machine with its own host name and address), so that ranks on
different nodes talk over TCP between namespaces as across hosts.

- one rank on each of two nodes = two ranks on one node = one process with the whole batch (losses, parameters);
- jobs that run at once on one head node rendezvous at its address on distinct ports;
- a sweep whose runs ask for two nodes;
- a killed rank, a lost node and a preemption: the survivors never wait past a bound, Slurm requeues the job,
  and the run resumes from its last checkpoint and ends bit-identical to the run that was never interrupted;
- mpirun across the two nodes (ranks from mpi4py) = the deepspeed launcher's run.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import time
from datetime import datetime
from pathlib import Path

import pytest

from tests.slurm.conftest import CLUSTER_SH, wait_for_jobs
from tests.slurm.jobs import (
    fixture_args,
    freeze,
    freeze_after_checkpoint,
    job_info,
    node_addr,
    node_info,
    sbatch_train,
    submit_sweep,
    sweep_grid,
    wait_job,
)
from tests.support import (
    EQUIVALENCE_RUN,
    EQUIVALENCE_STEPS,
    LOSS_TOL,
    PARAM_TOL,
    ROOT,
    micro_overrides,
    read_steps,
    read_weights,
)

METHODS = {"naive": {"method.name": "naive"}, "gem-both": {"method.name": "gem", "method.memory": "[mlm, xsr]"}}
STAGES = (0, 3)
STEPS = EQUIVALENCE_STEPS
COMMON = EQUIVALENCE_RUN
# The interrupted runs: GEM-both under ZeRO-3 (every rank holds its own partition and memory gradients)
FAULTY = {**COMMON, **METHODS["gem-both"], "train.zero_stage": 3}
TIMEOUT = 15  # DISTGEM_COLLECTIVE_TIMEOUT of the interrupted runs; the cluster's SlurmdTimeout is 15 s
RANK_LINE = re.compile(r"^distgem: rank (\d+)/(\d+) on (\S+) \((\S+)\), master (\S+):(\d+)$", re.M)
START_LINE = re.compile(r"^\[train\] job (\d+) \(start (\d+)\) on \S+: .*master (\S+):(\d+)", re.M)


# --- helpers ---------------------------------------------------------------------------------------------
def frozen_two_node_run(env: dict, micro, run_dir: Path) -> tuple[str, dict[str, int], str]:
    """A two-node GEM-both run checkpointing every 2 steps, both ranks stopped once it has: (job, pids, checkpoint)."""
    job = sbatch_train(
        env,
        micro,
        run_dir,
        2,
        1,
        {**FAULTY, "output.checkpoint_every": 2},
        {"DISTGEM_COLLECTIVE_TIMEOUT": str(TIMEOUT)},
    )
    pids = freeze_after_checkpoint(env, run_dir, 2)
    return job, pids, (run_dir / "checkpoints" / "latest").read_text().strip()


def rank_lines(log: str) -> list[tuple]:
    return [
        (int(r), int(n), host, addr, master, int(port)) for r, n, host, addr, master, port in RANK_LINE.findall(log)
    ]


def assert_identical(run_dir: Path, reference: Path) -> None:
    """Same losses at every step, same final parameters (bit for bit) and the same test and dev results."""
    assert [s["step"] for s in read_steps(run_dir)] == list(range(1, STEPS + 1))
    for a, b in zip(read_steps(reference), read_steps(run_dir)):
        assert {k: v for k, v in a.items() if k.startswith("loss/")} == {
            k: v for k, v in b.items() if k.startswith("loss/")
        }, a["step"]
    wa, wb = read_weights(reference), read_weights(run_dir)
    assert all(bool((wa[k] == wb[k]).all()) for k in wa), "final parameters differ from the uninterrupted run"
    a, b = (json.loads((d / "results.json").read_text()) for d in (reference, run_dir))
    assert b["test"] == a["test"] and b["dev"] == a["dev"] and b["train"]["steps"] == STEPS


# --- equivalence and rendezvous ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def equivalence_runs(slurm_nodes, micro, tmp_path_factory):
    """Every layout's runs, submitted at once (the two-node ones first, so that they run side by side on the
    same head node): {("2x1" | "1x2", method, stage) or ("1x1", method): (run dir, job id)}."""
    base = tmp_path_factory.mktemp("equivalence")
    jobs = {}
    for layout, nodes, ranks in (("2x1", 2, 1), ("1x2", 1, 2)):
        for method in METHODS:
            for stage in STAGES:
                run_dir = base / f"{layout}-{method}-zero{stage}"
                jobs[layout, method, stage] = (
                    run_dir,
                    sbatch_train(
                        slurm_nodes,
                        micro,
                        run_dir,
                        nodes,
                        ranks,
                        {**COMMON, **METHODS[method], "train.zero_stage": stage},
                    ),
                )
    for method in METHODS:
        run_dir = base / f"1x1-{method}"
        jobs["1x1", method] = run_dir, sbatch_train(slurm_nodes, micro, run_dir, 1, 1, {**COMMON, **METHODS[method]})
    states = wait_for_jobs([job for _, job in jobs.values()], slurm_nodes, timeout=900)
    failed = {key: run_dir.name for key, (run_dir, job) in jobs.items() if states[job] != "COMPLETED"}
    assert not failed, f"{failed}: {states}\n" + "\n".join(
        Path(f"{d}.out").read_text()[-2000:] for key, (d, _) in jobs.items() if key in failed
    )
    return jobs


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("method", list(METHODS))
def test_one_rank_on_each_of_two_nodes_equals_two_ranks_on_one_and_one_process(
    equivalence_runs, slurm_nodes, method, stage
):
    two_nodes, one_node, single = (
        equivalence_runs[key][0] for key in (("2x1", method, stage), ("1x2", method, stage), ("1x1", method))
    )
    # where the ranks ran: one on each node, each at its own node's address; on one node, both on it
    addrs = {node: node_addr(slurm_nodes, node) for node in ("node1", "node2")}
    ranks = sorted(rank_lines(Path(f"{two_nodes}.out").read_text()))
    assert [(r, n, host, addr) for r, n, host, addr, _, _ in ranks] == [
        (0, 2, "node1", addrs["node1"]),
        (1, 2, "node2", addrs["node2"]),
    ], ranks
    assert {master for *_, master, _ in ranks} == {addrs["node1"]}  # the head node's address, never loopback
    assert len({host for _, _, host, *_ in rank_lines(Path(f"{one_node}.out").read_text())}) == 1
    steps = {name: read_steps(d) for name, d in (("2x1", two_nodes), ("1x2", one_node), ("1x1", single))}
    assert all(len(s) == STEPS for s in steps.values())
    keys = [k for k in steps["1x1"][0] if k.startswith("loss/")]
    assert len(keys) == (1 if method == "naive" else 3)
    weights = {name: read_weights(d) for name, d in (("2x1", two_nodes), ("1x2", one_node), ("1x1", single))}
    table = {}
    for other in ("1x2", "1x1"):
        loss = max(abs(a[k] - b[k]) for a, b in zip(steps["2x1"], steps[other]) for k in keys)
        param = max(float((weights["2x1"][k] - weights[other][k]).abs().max()) for k in weights["2x1"])
        assert loss <= LOSS_TOL and param < PARAM_TOL, (other, loss, param)
        table[other] = (loss, param)
    if method == "gem-both":
        assert any(s["gem/violated"] for s in steps["2x1"]), "no step was projected: the test would prove nothing"
        assert [s["gem/violated"] for s in steps["2x1"]] == [s["gem/violated"] for s in steps["1x1"]]
    print(
        f"\n| {method} | ZeRO {stage} | 2x1 vs 1x2: loss {table['1x2'][0]:.1e}, params {table['1x2'][1]:.1e} "
        f"| 2x1 vs 1x1: loss {table['1x1'][0]:.1e}, params {table['1x1'][1]:.1e} |"
    )


def _interval(info: dict) -> tuple[datetime, datetime]:
    return datetime.fromisoformat(info["StartTime"]), datetime.fromisoformat(info["EndTime"])


def test_jobs_at_once_on_one_head_node_rendezvous_on_its_address_at_distinct_ports(equivalence_runs, slurm_nodes):
    head = node_addr(slurm_nodes, "node1")
    two_node = [(d, job) for key, (d, job) in equivalence_runs.items() if key[0] == "2x1"]
    starts = [START_LINE.search(Path(f"{d}.out").read_text()) for d, _ in two_node]
    assert all(starts), "a two-node job printed no rendezvous line"
    assert {m.group(3) for m in starts} == {head}, "the master address is not the head node's (node1's) address"
    ports = [int(m.group(4)) for m in starts]
    assert len(set(ports)) == len(ports), f"two jobs share a master port: {ports}"
    intervals = [_interval(job_info(job, slurm_nodes)) for _, job in two_node]
    overlapping = [(a, b) for i, a in enumerate(intervals) for b in intervals[i + 1 :] if a[0] < b[1] and b[0] < a[1]]
    assert overlapping, f"no two two-node jobs ran at the same time: {intervals}"


def test_rendezvous_skips_a_busy_port_and_refuses_loopback(slurm_nodes, tmp_path):
    """slurm/job.sh's rendezvous in a two-node batch step: the job-id port moves past one that is listening on the
    head node; a user's MASTER_PORT that is busy there, or a loopback MASTER_ADDR, ends the job with one line."""
    script = "bash -c 'source slurm/job.sh && rendezvous && echo rendezvous $MASTER_ADDR $MASTER_PORT'"

    def submit(name: str, **extra: str) -> str:  # held until the port is taken
        result = subprocess.run(
            [
                "sbatch",
                "--parsable",
                "--hold",
                "--nodes=2",
                "--ntasks-per-node=1",
                "--cpus-per-task=1",
                f"--output={tmp_path}/{name}.out",
                "--wrap",
                script,
            ],
            cwd=ROOT,
            env={**slurm_nodes, **extra},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout.strip().split(";")[0]

    jobs = {"free": submit("free")}
    busy = 20000 + int(jobs["free"]) % 10000  # the port the first job would take
    jobs["taken"] = submit("taken", MASTER_PORT=str(busy))
    jobs["loopback"] = submit("loopback", MASTER_ADDR="127.0.0.1")
    listener = subprocess.Popen(  # on node1, the jobs' head node; gone after 60 s at the latest
        [
            "bash",
            str(CLUSTER_SH),
            "exec",
            "node1",
            "python3",
            "-c",
            f"import socket, time; s = socket.socket(); s.bind(('0.0.0.0', {busy})); s.listen(); "
            f"print('ok', flush=True); "
            "time.sleep(60)",
        ],
        env=slurm_nodes,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert listener.stdout.readline().strip() == "ok"
        subprocess.run(["scontrol", "release", *jobs.values()], env=slurm_nodes, check=True, timeout=30)
        states = wait_for_jobs(list(jobs.values()), slurm_nodes, timeout=120)
    finally:
        listener.kill()
        listener.wait()
        listener.stdout.close()
    logs = {name: (tmp_path / f"{name}.out").read_text() for name in jobs}
    assert states[jobs["free"]] == "COMPLETED", logs["free"]
    assert logs["free"].split() == ["rendezvous", node_addr(slurm_nodes, "node1"), str(busy + 1)]
    assert states[jobs["taken"]] == states[jobs["loopback"]] == "FAILED"
    assert (
        logs["taken"].strip()
        == f"error: MASTER_PORT={busy} is in use on node1 (another job?); unset it to get a free one"
    )
    assert logs["loopback"].strip().startswith("error: the head node node1 has the loopback address 127.0.0.1")


# --- a sweep across nodes --------------------------------------------------------------------------------------
@pytest.mark.slow
def test_sweep_whose_runs_ask_for_two_nodes(slurm_nodes, micro, tmp_path):
    path = sweep_grid(tmp_path, "nodes", 6, methods=("naive",), nodes=2)
    job = submit_sweep(path, slurm_nodes, fixture_args(micro))
    states = wait_for_jobs([job], slurm_nodes, timeout=600)
    assert states == {f"{job}_0": "COMPLETED", f"{job}_1": "COMPLETED"}, states
    runs = tmp_path / "runs" / "nodes"
    for seed in (0, 1):
        results = json.loads((runs / f"seed{seed}-naive-pos" / "results.json").read_text())
        assert results["run"]["world_size"] == 2 and results["train"]["steps"] == 6
        log = (runs / "slurm" / f"{job}_{seed}.out").read_text()
        assert sorted((r, host) for r, _, host, *_ in rank_lines(log)) == [(0, "node1"), (1, "node2")], log[-2000:]
    report = tmp_path / "report"
    result = subprocess.run(
        ["distgem", "report", str(runs), "--out", str(report)],
        cwd=ROOT,
        env=slurm_nodes,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "| naive | 2 | " in (report / "report.md").read_text()


# --- a killed rank, a lost node, a preemption ----------------------------------------------------------------
@pytest.fixture(scope="module")
def uninterrupted(equivalence_runs):
    """The run the interrupted ones must reproduce bit for bit: two nodes, GEM-both, ZeRO-3, never interrupted."""
    return equivalence_runs["2x1", "gem-both", 3][0]


def test_a_killed_rank_ends_the_job_at_once_and_the_requeued_job_resumes_identically(
    slurm_nodes, micro, tmp_path, uninterrupted
):
    run_dir = tmp_path / "killed"
    job, pids, checkpoint = frozen_two_node_run(slurm_nodes, micro, run_dir)
    killed = time.monotonic()
    os.kill(pids["node2"], signal.SIGKILL)  # node2's rank dies; its node, and the connection's RST, live on
    os.kill(pids["node1"], signal.SIGCONT)
    wait_job(job, slurm_nodes, lambda i: int(i["Restarts"]) >= 1, 60, "requeued")
    requeued = time.monotonic() - killed
    wait_job(job, slurm_nodes, lambda i: i["JobState"] == "COMPLETED", 600, "completed")
    log = Path(f"{run_dir}.out").read_text()
    # the survivor (rank 0, node1) saw its peer's connection close: one line, and no wait
    assert "distgem: error: rank 0: a collective failed, a peer rank died or stopped answering" in log, log[-3000:]
    assert f"after checkpoint {checkpoint}: requeueing to resume from it" in log
    assert "(start 2) on node[1-2]" in log and f"resuming from {checkpoint}" in log
    assert requeued < 30, f"{requeued:.0f} s from the kill to the requeue"
    assert_identical(run_dir, uninterrupted)
    print(f"\nkilled rank: requeued {requeued:.1f} s after the SIGKILL")


def test_a_lost_node_ends_the_job_within_bounds_and_the_job_resumes_identically_once_it_is_back(
    slurm_nodes, micro, tmp_path, uninterrupted
):
    """node2 dies as when it loses power: its link goes first (the survivor sees silence, no closed connection),
    then its slurmd and all its processes. The survivor gives up after the collective timeout; Slurm declares the
    node DOWN after SlurmdTimeout, ends the job (node failure) and requeues it; it runs again once node2 is back."""
    run_dir = tmp_path / "lost"
    job, pids, checkpoint = frozen_two_node_run(slurm_nodes, micro, run_dir)
    lost = time.monotonic()
    down = subprocess.run(
        ["bash", str(CLUSTER_SH), "node-down", "node2"], env=slurm_nodes, capture_output=True, text=True, timeout=60
    )
    assert down.returncode == 0, down.stderr
    os.kill(pids["node1"], signal.SIGCONT)
    try:
        info = wait_job(
            job, slurm_nodes, lambda i: int(i["Restarts"]) >= 1 and i["JobState"] == "PENDING", 90, "requeued"
        )
        requeued = time.monotonic() - lost
        node = node_info(slurm_nodes, "node2")
        assert node["State"].startswith("DOWN"), node["State"]
        time.sleep(2)  # still waiting: it needs two nodes
        assert job_info(job, slurm_nodes)["JobState"] == "PENDING"
    finally:
        up = subprocess.run(
            ["bash", str(CLUSTER_SH), "node-up", "node2"], env=slurm_nodes, capture_output=True, text=True, timeout=120
        )
    assert up.returncode == 0, up.stderr
    wait_job(job, slurm_nodes, lambda i: i["JobState"] == "COMPLETED", 600, "completed")
    log = Path(f"{run_dir}.out").read_text()
    assert "DUE TO NODE FAILURE" in log, log[-3000:]
    survivor = (
        f"distgem: error: rank 0: a collective failed, a peer rank died or stopped answering (timeout {TIMEOUT} s)"
    )
    assert survivor in log, "the survivor did not give up after the collective timeout"
    assert f"resuming from {checkpoint}" in log
    # SlurmdTimeout (15 s) + a ping period + a message timeout (10 s), with room for a loaded machine
    assert requeued < 60, f"{requeued:.0f} s from the loss of the node to the requeue"
    assert_identical(run_dir, uninterrupted)
    print(f"\nlost node: requeued {requeued:.1f} s after the node went down ({info['Reason']})")


@pytest.mark.slow
def test_preemption_reaches_both_nodes_which_checkpoint_the_same_step_and_resume(
    slurm_nodes, micro, tmp_path, uninterrupted
):
    run_dir = tmp_path / "preempted"
    job = sbatch_train(slurm_nodes, micro, run_dir, 2, 1, FAULTY)
    steps = run_dir / "steps.jsonl"
    pids = freeze(
        slurm_nodes, run_dir, lambda: steps.exists() and len(steps.read_text().splitlines()) >= 3, "at step 3"
    )
    # what Slurm does before the time limit with --signal=B:USR1@N: signal the batch shell, which passes it on
    subprocess.run(["scancel", "--signal=USR1", "--batch", job], env=slurm_nodes, check=True, timeout=30)
    log_file = Path(f"{run_dir}.out")
    deadline = time.monotonic() + 60
    while not all(
        f"[node.sh] {node}: SIGUSR1 to rank process(es) {pid}" in log_file.read_text() for node, pid in pids.items()
    ):
        assert time.monotonic() < deadline, (
            f"SIGUSR1 did not reach the ranks on both nodes:\n{log_file.read_text()[-3000:]}"
        )
        time.sleep(0.1)
    for pid in pids.values():
        os.kill(pid, signal.SIGCONT)
    wait_job(job, slurm_nodes, lambda i: int(i["Restarts"]) >= 1, 120, "requeued")
    wait_job(job, slurm_nodes, lambda i: i["JobState"] == "COMPLETED", 600, "completed")
    log = log_file.read_text()
    stopped = re.search(r"\[train\] checkpointed at step (\d+): requeueing", log)
    assert stopped, log[-3000:]
    step = int(stopped.group(1))
    assert 3 <= step < STEPS
    # both ranks wrote their part of that step's checkpoint, and the job resumed from it
    saved = {p.name for p in (run_dir / "checkpoints" / f"step{step}").iterdir()}
    assert {"rank0.safetensors", "rank1.safetensors"} <= saved
    assert {f"zero_pp_rank_{r}_mp_rank_00_optim_states.pt" for r in (0, 1)} <= saved
    assert sorted(p.name for p in (run_dir / "checkpoints").glob("step*")) == [f"step{step}"]
    assert f"resuming from step{step}" in log and not (run_dir / "PREEMPTED").exists()
    assert_identical(run_dir, uninterrupted)


# --- mpirun ------------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_mpirun_across_the_two_nodes_equals_the_deepspeed_launcher(slurm_nodes, micro, tmp_path, uninterrupted):
    """OpenMPI's mpirun inside a two-node allocation (its daemons started on each node by srun), ranks from mpi4py
    and the master address from the ranks' host names: the same run as the deepspeed launcher's, bit for bit."""
    corpus, backbone = micro
    run_dir = tmp_path / "mpirun"
    args = [
        "python",
        "launch/train.py",
        *[a for o in micro_overrides(corpus, backbone, run_dir, **FAULTY) for a in ("--set", o)],
    ]
    command = f"source scripts/setup.sh && exec mpirun -n 2 --map-by ppr:1:node {shlex.join(args)}"
    result = subprocess.run(
        [
            "sbatch",
            "--parsable",
            "--nodes=2",
            "--ntasks-per-node=1",
            "--cpus-per-task=1",
            f"--output={run_dir}.out",
            "--wrap",
            f"bash -c {shlex.quote(command)}",
        ],
        cwd=ROOT,
        env={**slurm_nodes, "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    job = result.stdout.strip().split(";")[0]
    assert wait_for_jobs([job], slurm_nodes, timeout=600) == {job: "COMPLETED"}
    ranks = sorted(rank_lines(Path(f"{run_dir}.out").read_text()))
    head = node_addr(slurm_nodes, "node1")
    assert [(r, host, addr, master) for r, _, host, addr, master, _ in ranks] == [
        (0, "node1", head, head),
        (1, "node2", node_addr(slurm_nodes, "node2"), head),
    ], ranks
    assert_identical(run_dir, uninterrupted)
