"""Shared test helpers: paths, markers and a writer for small corpus files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.support import write_micro_backbone, write_micro_corpus

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT.parent / "shared" / "data" / "real"


def pytest_collection_modifyitems(config, items):
    """GPU tests run only where CUDA is; real-data tests only where ../shared/data/real exists."""
    import torch

    for item in items:
        # the marker, not the keyword: every test under tests/gpu/ has "gpu" among its keywords (the package)
        if item.get_closest_marker("gpu") is not None and not torch.cuda.is_available():
            item.add_marker(pytest.mark.skip(reason="needs a CUDA device"))
        if "real_data" in item.keywords and not REAL.is_dir():
            item.add_marker(pytest.mark.skip(reason=f"real corpora not found at {REAL}"))


@pytest.fixture
def write(tmp_path):
    """write(name, text_or_bytes) -> path of a new file under tmp_path."""

    def _write(name: str, content: str | bytes) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
        return path

    return _write


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def micro(tmp_path_factory):
    """(corpus dir, backbone dir): the micro fixtures shared by every engine test of the session."""
    base = tmp_path_factory.mktemp("micro")
    corpus = write_micro_corpus(base / "corpus")
    return corpus, write_micro_backbone(base / "backbone", corpus)


_WORKER = False
"""True inside a pytest-xdist worker: the controller records the outcomes (it receives every report)."""


def pytest_configure(config):
    global _WORKER
    _WORKER = hasattr(config, "workerinput")


def pytest_runtest_logreport(report):
    """With DISTGEM_GPU_RECORD set (scripts/gpu_check.sh), each test's outcome as soon as it is known, so that
    the GPU check's report has them even when its time budget stops pytest before the end."""
    path = os.environ.get("DISTGEM_GPU_RECORD")
    if not path or _WORKER or (report.when != "call" and report.passed):
        return
    outcome = report.outcome if report.when == "call" or report.skipped else "error"
    errors = [line[1:].strip() for line in report.longreprtext.splitlines() if line.startswith("E ")]
    with open(path, "a") as handle:
        handle.write(
            json.dumps(
                {
                    "test": report.nodeid,
                    "outcome": outcome,
                    "seconds": round(report.duration, 2),
                    "message": " ".join(errors[:3])[:500],
                }
            )
            + "\n"
        )
