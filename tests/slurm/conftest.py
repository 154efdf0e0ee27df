"""A real Slurm for tests: the session fixtures `slurm_cluster` (one node) and `slurm_nodes` (two nodes),
and `wait_for_jobs`.

`slurm_cluster` runs slurm/local/cluster.sh up (installing Slurm with apt if needed; skipped when not
root or when apt cannot install it), yields the environment for Slurm clients, and always runs
cluster.sh down at the end; `slurm_nodes` does the same with `up --nodes 2` under a root of its own
(skipped too where network namespaces cannot be made). Pass that environment to every
sbatch/srun/scontrol call:

    def test_x(slurm_cluster, tmp_path):
        out = subprocess.run(["sbatch", "--parsable", ...], env=slurm_cluster, ...)
        states = wait_for_jobs([job_id], slurm_cluster, timeout=30)
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CLUSTER_SH = REPO / "slurm" / "local" / "cluster.sh"
SKIP_RC = 77  # cluster.sh: not root, or Slurm missing and apt cannot install it
# Job states after which a job never runs again without outside intervention (scontrol requeue).
FINAL_STATES = frozenset(
    {
        "COMPLETED",
        "FAILED",
        "CANCELLED",
        "TIMEOUT",
        "NODE_FAIL",
        "PREEMPTED",
        "BOOT_FAIL",
        "DEADLINE",
        "OUT_OF_MEMORY",
        "REVOKED",
    }
)
# Variables from an enclosing Slurm job (tests run inside an allocation) would make srun/sbatch
# target that job or cluster; the client environment drops them.
_INHERITED = re.compile(r"^(SLURM_|SBATCH_|SALLOC_|SRUN_|SQUEUE_|SINFO_|SCONTROL_)")


def _cluster(command: str, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(CLUSTER_SH), *command.split()],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def _tail(text: str, lines: int = 30) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def _start(nodes: int, root: str | None = None):
    """cluster.sh up [--nodes N] (under `root` when given), yield the clients' environment, always cluster.sh down."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        pytest.skip("the local Slurm cluster runs its daemons as root; not root")
    if shutil.which("bash") is None:
        pytest.skip("the local Slurm cluster needs bash")
    base = dict(os.environ)
    path = base.get("PATH", "")
    for extra in ("/usr/bin", "/usr/sbin"):
        if extra not in path.split(os.pathsep):
            path = f"{path}{os.pathsep}{extra}" if path else extra
    base["PATH"] = path
    if root is not None:
        base["DISTGEM_SLURM_ROOT"] = root
    up_args = f"up --nodes {nodes}"
    try:
        try:
            up = _cluster(up_args, base, timeout=600)  # first run installs packages (~10 s)
        except subprocess.TimeoutExpired as exc:
            pytest.fail(f"cluster.sh {up_args} did not finish in {exc.timeout:.0f} s")
        if up.returncode == SKIP_RC:
            pytest.skip(f"no local Slurm: {_tail(up.stderr, 3)}")
        if up.returncode != 0:
            pytest.fail(f"cluster.sh {up_args} failed (rc={up.returncode}):\n{_tail(up.stdout + up.stderr, 80)}")
        env = {k: v for k, v in base.items() if not _INHERITED.match(k)}
        printed = subprocess.run(
            ["bash", str(CLUSTER_SH), "env"], env=base, capture_output=True, text=True, timeout=30, check=True
        ).stdout
        for line in printed.splitlines():
            words = shlex.split(line)
            if len(words) == 2 and words[0] == "export" and "=" in words[1]:
                key, value = words[1].split("=", 1)
                env[key] = value
        assert "SLURM_CONF" in env, printed
        yield env
    finally:
        down = _cluster("down", base, timeout=120)
        if down.returncode != 0:
            pytest.fail(f"cluster.sh down failed (rc={down.returncode}):\n{_tail(down.stdout + down.stderr)}")


@pytest.fixture(scope="session")
def slurm_cluster():
    """Environment variables (a full copy of os.environ plus SLURM_CONF, DISTGEM_SLURM_ROOT, PATH
    with the Slurm binaries) for clients of a freshly started one-node cluster."""
    yield from _start(1)


@pytest.fixture(scope="session")
def slurm_nodes():
    """The same for a two-node cluster (node1, node2: each a network, UTS and mount namespace of this machine),
    under its own root (DISTGEM_SLURM_ROOT + "-2nodes"), so that it can run beside the one-node cluster."""
    yield from _start(2, os.environ.get("DISTGEM_SLURM_ROOT", "/tmp/distgem-slurm").rstrip("/") + "-2nodes")


def _field(record: str, key: str) -> str | None:
    if key in ("StdOut", "StdErr"):  # paths may hold spaces: up to the next " Key="
        match = re.search(rf"(?:^| ){key}=(.*?)(?= [A-Za-z][\w:/]*=|\s*$)", record)
    else:
        match = re.search(rf"(?:^| ){key}=(\S*)", record)
    return match.group(1) if match else None


def _records(job_id: str, env: dict[str, str]) -> tuple[list[dict[str, str | None]], str | None]:
    """The records of `scontrol show job -o ID` (one per array element, plus one for elements not yet
    started whose ArrayTaskId is a range), or ([], error message)."""
    try:
        proc = subprocess.run(
            ["scontrol", "show", "job", "-o", job_id],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        return [], "scontrol timed out"
    if proc.returncode != 0:
        return [], (proc.stderr or proc.stdout).strip()
    records = []
    for line in proc.stdout.splitlines():
        if not line.strip() or "JobId=" not in line:
            continue
        record = {
            key: _field(line, key)
            for key in ("JobId", "ArrayJobId", "ArrayTaskId", "JobState", "Reason", "ExitCode", "StdOut")
        }
        if record["ArrayJobId"] and record["ArrayTaskId"]:
            record["key"] = f"{record['ArrayJobId']}_{record['ArrayTaskId']}"
        else:
            record["key"] = record["JobId"]
        records.append(record)
    return records, None


def _final(record: dict[str, str | None]) -> bool:
    task = record["ArrayTaskId"]
    # An ArrayTaskId like "2-3" or "1,3%2" stands for elements that have not started yet.
    return record["JobState"] in FINAL_STATES and (task is None or task.isdigit())


def _output_tail(path: str | None, lines: int = 20) -> str:
    if not path or not os.path.isfile(path):
        return f"(no output file {path})"
    with open(path, errors="replace") as handle:
        return _tail(handle.read(), lines) or "(empty)"


def wait_for_jobs(job_ids, env: dict[str, str], timeout: float = 60.0, poll: float = 0.2) -> dict[str, str]:
    """Poll `scontrol show job -o` until every job (every element of array jobs) is in a final state.

    job_ids: ids as sbatch --parsable prints them ("12" or "12;cluster"), or "12_3" for one array
    element. Returns {key: JobState}, key "12" for a plain job and "12_3" for array element 3.
    Fails the test on timeout (with each unfinished job's state, reason and output tail) or when
    scontrol does not know a job. Needs no accounting: scontrol keeps finished jobs for MinJobAge
    (600 s here); sbatch --wait is not used (it can return 0 for cancelled jobs, or hang).
    """
    ids = [str(j).split(";", 1)[0].strip() for j in job_ids]
    deadline = time.monotonic() + timeout
    errors: dict[str, str] = {}
    while True:
        done: dict[str, str] = {}
        pending: list[dict[str, str | None]] = []
        errors.clear()
        for job_id in ids:
            records, error = _records(job_id, env)
            if error is not None:
                if "Invalid job id" in error:
                    pytest.fail(f"scontrol does not know job {job_id}: {error}")
                errors[job_id] = error
                continue
            for record in records:
                if _final(record):
                    done[record["key"]] = record["JobState"]
                else:
                    pending.append(record)
        if not pending and not errors:
            return done
        if time.monotonic() >= deadline:
            break
        time.sleep(poll)
    lines = [f"jobs not finished after {timeout:.0f} s ({len(done)} finished: {done})"]
    for job_id, error in errors.items():
        lines.append(f"- job {job_id}: scontrol failed: {error}")
    for record in pending:
        lines.append(
            f"- job {record['key']}: {record['JobState']} (reason {record['Reason']}, "
            f"exit {record['ExitCode']}), output {record['StdOut']}:"
        )
        lines.append(_output_tail(record["StdOut"]))
    pytest.fail("\n".join(lines))
