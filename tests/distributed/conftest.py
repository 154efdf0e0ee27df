"""Helpers to run launch/train.py as 1 process or as N ranks (torchrun, gloo) on the micro fixtures."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import micro_overrides, write_micro_backbone, write_micro_corpus

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def micro(tmp_path_factory):
    """(corpus dir, backbone dir) shared by every distributed test of the session."""
    base = tmp_path_factory.mktemp("micro")
    corpus = write_micro_corpus(base / "corpus")
    return corpus, write_micro_backbone(base / "backbone", corpus)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_command(ranks: int, launcher: str = "torchrun") -> list[str]:
    if ranks == 1:
        return [sys.executable, str(ROOT / "launch" / "train.py")]
    if launcher == "torchrun":
        return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(ranks),
                "--master_port", str(free_port()), str(ROOT / "launch" / "train.py")]
    raise ValueError(launcher)


def run_training(micro, run_dir: Path, ranks: int = 1, extra: dict | None = None, args: tuple = (),
                 timeout: int = 300, check: bool = True, **popen) -> subprocess.CompletedProcess:
    corpus, backbone = micro
    overrides = micro_overrides(corpus, backbone, run_dir, **(extra or {}))
    command = train_command(ranks) + [a for o in overrides for a in ("--set", o)] + list(args)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu",
           "TORCH_EXTENSIONS_DIR": os.environ.get("TORCH_EXTENSIONS_DIR", str(ROOT / ".cache" / "torch_extensions"))}
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT, **popen)
    if check and result.returncode != 0:
        raise AssertionError(f"training failed (rc={result.returncode}):\n{result.stderr[-4000:]}")
    return result


def read_steps(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "steps.jsonl").read_text().splitlines()]


def read_weights(run_dir: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(run_dir / "final.safetensors"))
