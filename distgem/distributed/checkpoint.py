"""Atomic, resumable checkpoints that never unpickle arbitrary objects.

Layout of `checkpoints/<tag>/`: DeepSpeed's own files (model and every rank's ZeRO partitions,
optimizer and scheduler state; read back with `weights_only=True` and an explicit allowlist),
`state.json` (step, early stopping, data positions), `rank<r>.safetensors` + `rank<r>.json` (this
rank's RNG states and memory gradients). A checkpoint is written under `<tag>.tmp` and renamed
once every rank has finished; `latest` names the newest resumable tag.
"""
from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from distgem.distributed import world as dist

LATEST = "latest"


class Checkpointer:
    def __init__(self, directory: Path, engine, rank: int):
        self.directory, self.engine, self.rank = Path(directory), engine, rank

    def save(self, tag: str, client: dict) -> Path:
        """Write checkpoint `tag` (all ranks call this); `best` is kept aside, other tags become `latest`."""
        tmp = self.directory / f"{tag}.tmp"
        if self.rank == 0 and tmp.exists():
            shutil.rmtree(tmp)
        dist.barrier()
        dist.save_engine(self.engine, self.directory, tmp.name)
        tensors = {"torch_rng": torch.get_rng_state()}
        if client.get("memory") is not None:
            tensors["memory"] = client["memory"].detach().cpu().contiguous()
        save_file(tensors, str(tmp / f"rank{self.rank}.safetensors"))
        py_state = random.getstate()
        np_state = np.random.get_state()
        _write_json(tmp / f"rank{self.rank}.json", {
            "python_rng": [py_state[0], list(py_state[1]), py_state[2]],
            "numpy_rng": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        })
        if self.rank == 0:
            _write_json(tmp / "state.json", {"state": client["state"], "streams": client["streams"]})
        dist.barrier()
        final = self.directory / tag
        if self.rank == 0:
            old = self.directory / f"{tag}.old"
            if final.exists():
                final.rename(old)
            tmp.rename(final)
            shutil.rmtree(old, ignore_errors=True)
            if tag != "best":
                _write_text_atomic(self.directory / LATEST, tag)
        dist.barrier()
        return final

    def latest(self) -> str | None:
        path = self.directory / LATEST
        return path.read_text().strip() if path.is_file() else None

    def load(self, tag: str, module_only: bool = False) -> dict:
        """Restore checkpoint `tag` into the engine (weights only with module_only) and return the client state."""
        path = self.directory / tag
        if not path.is_dir():
            raise FileNotFoundError(f"{path}: no such checkpoint")
        dist.load_engine(self.engine, self.directory, tag, module_only)
        if module_only:
            return {}
        tensors = load_file(str(path / f"rank{self.rank}.safetensors"))
        torch.set_rng_state(tensors["torch_rng"])
        rng = json.loads((path / f"rank{self.rank}.json").read_text())
        random.setstate((rng["python_rng"][0], tuple(rng["python_rng"][1]), rng["python_rng"][2]))
        np_state = rng["numpy_rng"]
        np.random.set_state((np_state[0], np.array(np_state[1], dtype=np.uint32), *np_state[2:]))
        client = json.loads((path / "state.json").read_text())
        client["memory"] = tensors.get("memory")
        return client


def _write_json(path: Path, data) -> None:
    _write_text_atomic(path, json.dumps(data))


def _write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
