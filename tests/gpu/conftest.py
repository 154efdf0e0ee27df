"""The GPU check's tests: every one takes `device`, a CPU case and a CUDA case.

The CUDA case carries the `gpu` marker: `pytest -m gpu` selects it on the device (scripts/gpu_check.sh), and
without CUDA it is skipped (tests/conftest.py). The CPU case runs in CI, so that the code the device runs
once in a while is exercised on every change. Training runs are cached per session and shared between
pytest-xdist workers (one lock per run): the CPU reference of a method is trained once, however many
CUDA runs are compared with it.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from tests.support import run_training, write_micro_backbone, write_micro_corpus

RECORD_ENV = "DISTGEM_GPU_RECORD"
"""scripts/gpu_check.sh points this at a JSON-lines file: what each test measured (worst differences) goes
into the report next to the tolerance it was held to."""


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def device(request) -> torch.device:
    return torch.device(request.param)


@pytest.fixture(scope="session")
def shared_dir(tmp_path_factory, worker_id) -> Path:
    """A directory every xdist worker of this session sees (the plain session's own when not distributed)."""
    base = tmp_path_factory.getbasetemp()
    return (base.parent if worker_id != "master" else base) / "gpu-shared"


@pytest.fixture(scope="session")
def worker_id(request) -> str:
    """pytest-xdist's worker name, "master" without xdist (its own fixture only exists with the plugin)."""
    workerinput = getattr(request.config, "workerinput", None)
    return workerinput["workerid"] if workerinput else "master"


@contextmanager
def locked(path: Path):
    """An exclusive lock held while the block runs (other processes wait for it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(str(path) + ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@pytest.fixture(scope="session")
def micro_shared(shared_dir):
    """(corpus dir, backbone dir), built once for all workers (same content as tests/conftest.py's `micro`)."""
    base = shared_dir / "micro"
    with locked(base):
        if not (base / "backbone" / "config.json").exists():
            corpus = write_micro_corpus(base / "corpus")
            write_micro_backbone(base / "backbone", corpus)
    return base / "corpus", base / "backbone"


def device_env(device: str, run_dir: Path) -> dict:
    """The environment of a training process on `device`: DeepSpeed's accelerator named, and on CUDA a
    private extensions directory, so that a test can see whether DeepSpeed compiled an op (it must not)."""
    if device == "cuda":
        return {"DS_ACCELERATOR": "cuda", "TORCH_EXTENSIONS_DIR": str(run_dir / "torch_extensions")}
    return {"DS_ACCELERATOR": "cpu", "CUDA_VISIBLE_DEVICES": ""}


@pytest.fixture(scope="session")
def train(micro_shared, shared_dir):
    """train(device, settings, args=(), tag=None) -> run dir: one process, cached by device and settings."""

    def run(device: str, settings: dict, args: tuple = (), tag: str | None = None) -> Path:
        """`tag` names the run directory (default: the settings); the same tag with other settings or args
        continues in that directory (a resume)."""
        what = json.dumps([sorted(settings.items()), list(args)])
        key = tag or hashlib.sha1(what.encode()).hexdigest()[:12]
        run_dir = shared_dir / "runs" / device / key
        with locked(run_dir):
            done = run_dir / f"DONE-{hashlib.sha1(what.encode()).hexdigest()[:12]}"
            if not done.exists():
                run_training(
                    micro_shared, run_dir, 1, settings, args=args, timeout=600, env=device_env(device, run_dir)
                )
                done.write_text("ok\n")
        return run_dir

    return run


@pytest.fixture
def record(request):
    """record(**values): keep what this test measured for the GPU check's report (no-op elsewhere)."""

    def write(**values) -> None:
        path = os.environ.get(RECORD_ENV)
        if path:
            with open(path, "a") as handle:
                handle.write(json.dumps({"test": request.node.nodeid, **values}) + "\n")

    return write
