"""A checkpoint that cannot be written (a full disk) is one line naming the directory and the room left, and
leaves the last complete checkpoint as `latest`, with no partial files."""

from __future__ import annotations

import errno
import shutil
from collections import namedtuple
from types import SimpleNamespace

import pytest
import torch

from distgem.distributed import checkpoint
from distgem.distributed.checkpoint import LATEST, Checkpointer
from distgem.errors import UserError

Usage = namedtuple("Usage", "total used free")


class Engine:
    """DeepSpeed's engine as Checkpointer sees it; `fail` is raised from inside save_checkpoint."""

    device = torch.device("cpu")

    def __init__(self):
        self.fail = None

    def save_checkpoint(self, directory, tag, save_latest):
        (checkpoint.Path(directory) / tag).mkdir(parents=True, exist_ok=True)
        (checkpoint.Path(directory) / tag / "mp_rank_00_model_states.pt").write_bytes(b"x" * 1000)
        if self.fail is not None:
            raise self.fail


WORLD = SimpleNamespace(rank=0, is_main=True, barrier=lambda: None)
CLIENT = {"state": {"step": 1}, "streams": {}}


@pytest.mark.parametrize(
    "error,free,why",
    [
        # what torch.save raises when the disk fills under it: no errno, only the zip writer's positions
        (
            RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 470758656 vs 470758548"),
            2**20,
            "No space left on device",
        ),
        (OSError(errno.ENOSPC, "No space left on device"), 10 * 2**30, "No space left on device"),
        (PermissionError(errno.EACCES, "Permission denied"), 10 * 2**30, "Permission denied"),
    ],
)
def test_an_unwritable_checkpoint_is_one_line_and_latest_stays_complete(tmp_path, monkeypatch, error, free, why):
    engine = Engine()
    saver = Checkpointer(tmp_path, engine, WORLD)
    saver.save("step1", CLIENT, "config: 1\n")
    assert (tmp_path / LATEST).read_text() == "step1"
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(100 * 2**30, 0, free))
    engine.fail = error
    with pytest.raises(UserError) as raised:
        saver.save("step2", {**CLIENT, "state": {"step": 2}}, "config: 1\n")
    message = str(raised.value)
    assert "\n" not in message and message.startswith(f"{tmp_path}: checkpoint step2 could not be written")
    assert why in message and f"{free / 2**20:.0f} MiB free" in message
    assert (tmp_path / LATEST).read_text() == "step1"
    assert sorted(p.name for p in tmp_path.iterdir()) == [LATEST, "step1"]  # no step2.tmp left behind
    assert checkpoint.verify(tmp_path / "step1") is None  # the complete one is untouched


def test_a_writer_crash_with_room_on_the_disk_stays_a_crash(tmp_path, monkeypatch):
    """Only a full disk turns torch's RuntimeError into the one-line error; any other is a bug to see whole."""
    engine = Engine()
    saver = Checkpointer(tmp_path, engine, WORLD)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(100 * 2**30, 0, 10 * 2**30))
    engine.fail = RuntimeError("a bug in the writer")
    with pytest.raises(RuntimeError, match="a bug in the writer"):
        saver.save("step1", CLIENT, "config: 1\n")
