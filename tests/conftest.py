"""Shared test helpers: paths, markers and a writer for small corpus files."""
from __future__ import annotations

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
        if "gpu" in item.keywords and not torch.cuda.is_available():
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
