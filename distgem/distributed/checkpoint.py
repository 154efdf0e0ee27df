"""Atomic, verified, resumable checkpoints that never unpickle arbitrary objects.

Layout of `checkpoints/<tag>/`: DeepSpeed's own files (model and every rank's ZeRO partitions,
optimizer and scheduler state; read back with `weights_only=True` and an explicit allowlist),
`state.json` (step, early stopping, data positions), `config.yaml` (the resolved run config),
`rank<r>.safetensors` + `rank<r>.json` (each rank's RNG states and memory gradients), and
`manifest.json`, written last: the size and xxh3 digest of every other file.

A checkpoint is written under `<tag>.tmp` and renamed once every rank has finished and the manifest
is written, so a crash leaves either the previous checkpoint or the new one, whole. Resuming verifies
the manifest and falls back to the newest intact checkpoint (saying which file was damaged); the
newest `keep` step checkpoints are kept, older ones deleted only once a newer one is complete; `best`
is kept aside and never pruned.
"""

from __future__ import annotations

import errno
import json
import os
import random
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from distgem.errors import UserError

LATEST = "latest"
MANIFEST = "manifest.json"
STEP_TAG = re.compile(r"^step(\d+)$")


class Checkpointer:
    def __init__(self, directory: Path, engine, world, keep: int = 2):
        self.directory, self.engine, self.world, self.keep = Path(directory), engine, world, keep
        self.rank = world.rank

    def save(self, tag: str, client: dict, config: str = "") -> Path:
        """Write checkpoint `tag` (all ranks call this); `best` is kept aside, other tags become `latest`.
        `config`: the resolved run config as YAML, kept with the checkpoint (`--resume` compares it)."""
        tmp = self.directory / f"{tag}.tmp"
        if self.world.is_main and tmp.exists():
            shutil.rmtree(tmp)
        self.world.barrier()
        try:
            self._write(tmp, client, config)
        except (OSError, RuntimeError) as error:  # torch.save reports a full disk as "unexpected pos"
            free = _free_bytes(tmp.parent)
            full = getattr(error, "errno", None) == errno.ENOSPC or free < 256 * 2**20  # torch's zip writer: no errno
            if isinstance(error, RuntimeError) and not full:
                raise  # a crash of the writer, not the disk: its traceback
            message = _unwritable(tmp, tag, error, full, free)
            shutil.rmtree(tmp, ignore_errors=True)  # the partial files; `latest` still names a complete one
            raise UserError(message) from None
        self.world.barrier()  # every rank's files are complete: the manifest can describe them
        final = self.directory / tag
        if self.world.is_main:
            _write_json(tmp / MANIFEST, {"files": _describe(tmp)})
            old = self.directory / f"{tag}.old"
            if final.exists():
                final.rename(old)
            tmp.rename(final)
            shutil.rmtree(old, ignore_errors=True)
            if tag != "best":
                _write_text_atomic(self.directory / LATEST, tag)
                self._prune()
        self.world.barrier()
        return final

    def _write(self, tmp: Path, client: dict, config: str) -> None:
        _save_engine(self.engine, self.directory, tmp.name)
        tensors = {"torch_rng": torch.get_rng_state()}
        if self.engine.device.type == "cuda":  # dropout on the GPU draws from the GPU's own generator
            tensors["cuda_rng"] = torch.cuda.get_rng_state(self.engine.device)
        if client.get("memory") is not None:
            tensors["memory"] = client["memory"].detach().cpu().contiguous()
        tensors.update(
            {f"method.{name}": t.detach().cpu().contiguous() for name, t in client.get("tensors", {}).items()}
        )
        save_file(tensors, str(tmp / f"rank{self.rank}.safetensors"))
        py_state = random.getstate()
        np_state = np.random.get_state()
        _write_json(
            tmp / f"rank{self.rank}.json",
            {
                "python_rng": [py_state[0], list(py_state[1]), py_state[2]],
                "numpy_rng": [
                    np_state[0],
                    np_state[1].tolist(),
                    int(np_state[2]),
                    int(np_state[3]),
                    float(np_state[4]),
                ],
            },
        )
        if self.world.is_main:
            _write_json(tmp / "state.json", {"state": client["state"], "streams": client["streams"]})
            (tmp / "config.yaml").write_text(config, encoding="utf-8")

    def _prune(self) -> None:
        """Delete step checkpoints beyond the newest `keep` (only called once the newest is complete)."""
        steps = sorted(self.step_tags(), key=lambda t: int(STEP_TAG.match(t).group(1)), reverse=True)
        for tag in steps[self.keep :]:
            shutil.rmtree(self.directory / tag, ignore_errors=True)

    def step_tags(self) -> list[str]:
        return (
            [p.name for p in self.directory.iterdir() if p.is_dir() and STEP_TAG.match(p.name)]
            if self.directory.is_dir()
            else []
        )

    def latest(self) -> str | None:
        path = self.directory / LATEST
        return path.read_text().strip() if path.is_file() else None

    def resumable(self) -> tuple[str | None, list[str]]:
        """(the newest intact step checkpoint or None, a line for each newer one that is damaged), decided by the
        main process and handed to every rank, so that all resume from the same step."""
        choice: tuple[str | None, list[str]] = (None, [])
        if self.world.is_main:
            damaged = []
            hint = self.latest()
            candidates = sorted(
                self.step_tags(), key=lambda t: (t == hint, int(STEP_TAG.match(t).group(1))), reverse=True
            )
            for tag in candidates:
                problem = verify(self.directory / tag)
                if problem is None:
                    choice = (tag, damaged)
                    break
                damaged.append(f"{tag}: {problem}")
            else:
                choice = (None, damaged)
        return self.world.gather(choice)[0]

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
        if "cuda_rng" in tensors and self.engine.device.type == "cuda":
            torch.cuda.set_rng_state(tensors["cuda_rng"], self.engine.device)
        rng = json.loads((path / f"rank{self.rank}.json").read_text())
        random.setstate((rng["python_rng"][0], tuple(rng["python_rng"][1]), rng["python_rng"][2]))
        np_state = rng["numpy_rng"]
        np.random.set_state((np_state[0], np.array(np_state[1], dtype=np.uint32), *np_state[2:]))
        client = json.loads((path / "state.json").read_text())
        client["memory"] = tensors.get("memory")
        client["tensors"] = {name[len("method.") :]: t for name, t in tensors.items() if name.startswith("method.")}
        config = path / "config.yaml"
        client["config"] = config.read_text(encoding="utf-8") if config.is_file() else None
        return client


def verify(directory: Path) -> str | None:
    """Why a checkpoint cannot be trusted (a missing, truncated or altered file), or None when it is whole."""
    try:
        files = json.loads((directory / MANIFEST).read_text())["files"]
    except FileNotFoundError:
        return f"no {MANIFEST} (written by an older distgem, or never finished)"
    except (OSError, ValueError, KeyError, TypeError):
        return f"{MANIFEST} is unreadable"
    for name, record in files.items():
        path = directory / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != record["size"]:
            return f"{name} has {path.stat().st_size} bytes, the manifest says {record['size']}"
        if _digest(path) != record["xxh3"]:
            return f"{name} does not match its digest"
    return None


def _describe(directory: Path) -> dict[str, dict]:
    return {
        str(path.relative_to(directory)): {"size": path.stat().st_size, "xxh3": _digest(path)}
        for path in sorted(directory.rglob("*"))
        if path.is_file() and path.name != MANIFEST
    }


def _digest(path: Path) -> str:
    from distgem.data.cache import file_digest  # xxh3, read in chunks

    return file_digest(path)


def config_changes(saved: dict, current: dict, prefix: str = "") -> list[str]:
    """`key: saved -> current` for every setting that differs between two resolved configs. A setting the saved
    config does not have (added to distgem after the checkpoint was written) is not a change: the run had none."""
    changes = []
    for key in sorted(saved):
        if key not in current:
            changes.append(f"{prefix}{key}: {saved[key]!r} -> (no such setting)")
            continue
        a, b = saved[key], current[key]
        if isinstance(a, dict) and isinstance(b, dict):
            changes += config_changes(a, b, f"{prefix}{key}.")
        elif a != b:
            changes.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return changes


def note(message: str) -> None:
    print(f"distgem: {message}", file=sys.stderr, flush=True)


def _write_json(path: Path, data) -> None:
    _write_text_atomic(path, json.dumps(data))


def _write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _free_bytes(directory: Path) -> int:
    return shutil.disk_usage(directory if directory.exists() else ".").free


def _unwritable(tmp: Path, tag: str, error: Exception, full: bool, free: int) -> str:
    """One line for a checkpoint that could not be written: why, and how much room (`free` bytes) its disk has."""
    why = os.strerror(errno.ENOSPC) if full else (str(error).strip().splitlines() or [type(error).__name__])[0]
    return (
        f"{tmp.parent}: checkpoint {tag} could not be written ({why}; {free / 2**20:.0f} MiB free there): make room "
        f"(output.keep_checkpoints, output.checkpoint_every), then --resume continues from the last complete one"
    )


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
        if list(directory.glob("*optim_states.pt")) and any(
            "zero" in p.name for p in directory.glob("*optim_states.pt")
        ):
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
