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


LATEST = "latest"


class Checkpointer:
    def __init__(self, directory: Path, engine, world):
        self.directory, self.engine, self.world = Path(directory), engine, world
        self.rank = world.rank

    def save(self, tag: str, client: dict) -> Path:
        """Write checkpoint `tag` (all ranks call this); `best` is kept aside, other tags become `latest`."""
        tmp = self.directory / f"{tag}.tmp"
        if self.world.is_main and tmp.exists():
            shutil.rmtree(tmp)
        self.world.barrier()
        _save_engine(self.engine, self.directory, tmp.name)
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
        if self.world.is_main:
            _write_json(tmp / "state.json", {"state": client["state"], "streams": client["streams"]})
        self.world.barrier()
        final = self.directory / tag
        if self.world.is_main:
            old = self.directory / f"{tag}.old"
            if final.exists():
                final.rename(old)
            tmp.rename(final)
            shutil.rmtree(old, ignore_errors=True)
            if tag != "best":
                _write_text_atomic(self.directory / LATEST, tag)
        self.world.barrier()
        return final

    def latest(self) -> str | None:
        path = self.directory / LATEST
        return path.read_text().strip() if path.is_file() else None

    def load(self, tag: str, module_only: bool = False) -> dict:
        """Restore checkpoint `tag` into the engine (weights only with module_only) and return the client state."""
        path = self.directory / tag
        if not path.is_dir():
            raise FileNotFoundError(f"{path}: no such checkpoint")
        _load_engine(self.engine, self.directory, tag, module_only)
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


# --- DeepSpeed's files, read back without unpickling arbitrary objects ------------------------------

def _save_engine(engine, directory, tag: str) -> None:
    """DeepSpeed's checkpoint of model, optimizer partitions and scheduler (all ranks call it)."""
    engine.save_checkpoint(str(directory), tag=tag, save_latest=False)


def _load_engine(engine, directory, tag: str, module_only: bool) -> None:
    """Load a DeepSpeed checkpoint with weights_only unpickling (an allowlist, never arbitrary objects)."""
    engine.checkpoint_engine = _safe_checkpoint_engine(engine.checkpoint_engine)
    # Always the full state: DeepSpeed's module-only path under ZeRO-3 bypasses the checkpoint engine
    # (zero_to_fp32 with its own unpickling and the `latest` file); weights alone are restored all the same.
    load_path, _ = engine.load_checkpoint(str(directory), tag=tag, load_module_only=module_only)
    if load_path is None:
        raise FileNotFoundError(f"{directory}/{tag}: DeepSpeed found no checkpoint")


def _safe_checkpoint_engine(current):
    """Wrap DeepSpeed's torch checkpoint engine so that every torch.load is weights_only."""
    if getattr(current, "_distgem_safe", False):
        return current

    class SafeLoad:
        _distgem_safe = True

        def __getattr__(self, name):
            return getattr(current, name)

        def load(self, path, map_location=None):
            with safe_torch_load():
                return torch.load(path, map_location=map_location)

    return SafeLoad()


class safe_torch_load:
    """Context in which every torch.load (DeepSpeed's included) is weights_only, with our allowlist."""

    def __enter__(self):
        self.original = torch.load
        self.globals = torch.serialization.safe_globals(_allowed_globals())
        self.globals.__enter__()
        original = self.original

        def load(*args, **kwargs):
            kwargs["weights_only"] = True
            return original(*args, **kwargs)

        torch.load = load
        return self

    def __exit__(self, *exc):
        torch.load = self.original
        self.globals.__exit__(*exc)
        return False


def consolidated_weights(checkpoint_root, tag: str) -> dict[str, torch.Tensor]:
    """Full fp32 weights of a checkpoint of any ZeRO stage, in one process (DeepSpeed's zero_to_fp32)."""
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    directory = Path(checkpoint_root) / tag
    with safe_torch_load():
        if list(directory.glob("*optim_states.pt")) and any("zero" in p.name for p in directory.glob("*optim_states.pt")):
            return get_fp32_state_dict_from_zero_checkpoint(str(checkpoint_root), tag=tag)
        states = torch.load(directory / "mp_rank_00_model_states.pt", map_location="cpu")
    return {name: tensor.float() for name, tensor in states["module"].items()}


def _allowed_globals() -> list:
    """The non-tensor types DeepSpeed's checkpoints contain (checked by tests/distributed)."""
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    allowed = [ZeroStageEnum, fragment_address]
    try:
        from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler

        allowed += [LossScaler, DynamicLossScaler]
    except ImportError:
        pass
    return allowed
