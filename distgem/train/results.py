"""results.json: every metric per language, averages without the source language, config, seed, versions."""

from __future__ import annotations

import json
import math
import os
import platform
from pathlib import Path
from typing import TYPE_CHECKING

from distgem.config.loader import to_dict
from distgem.tasks.metrics import average_over_targets

if TYPE_CHECKING:
    import torch


def build_results(
    config,
    world_size: int,
    state: dict,
    test: dict | None,
    after: dict | None,
    train_seconds: float,
    peak_rss_mb: list[float] | None = None,
    status: str = "ok",
) -> dict:
    """What a run measured; `status` "diverged" (non-finite training, no test scores) or "ok"."""
    source = config.task.source
    gem = state["gem"]
    test = test or {}
    scores = {lang: m["score"] for lang, m in test.items()}
    return {
        "status": status,
        "run": {
            "task": config.task.name,
            "method": config.method.name,
            "memory": list(config.method.memory),
            "mlm_languages": config.method.mlm_languages,
            "backbone": config.model.backbone,
            "seed": config.train.seed,
            "world_size": world_size,
            "zero_stage": config.train.zero_stage,
        },
        "test": {
            "per_language": test,
            "average": average_over_targets(scores, source) if any(lang != source for lang in scores) else None,
            "source": test[source]["score"] if source in test else None,
        },
        "dev": {"best_average": state["best"], "best_step": state["best_step"], "history": state["history"]},
        "backbone": state["backbone"],
        "after": after,
        "train": {
            "steps": state["step"],
            "seconds": train_seconds,
            "gem_violated_share": gem["violated_steps"] / gem["steps"] if gem["steps"] else None,
            "gem_mean_dual": {name: total / gem["steps"] for name, total in gem.get("dual_sum", {}).items()}
            if gem["steps"]
            else None,
            "gem_solver_fallbacks": gem.get("fallbacks", 0),
            "nonfinite_steps": state.get("nonfinite", {}).get("steps", 0),
            "peak_rss_mb": peak_rss_mb,
        },
        "config": to_dict(config),
        "versions": versions(),
    }


def peak_rss_mb() -> float:
    """This process's peak resident set so far (Linux reports KiB), memory-mapped pages it touched included."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def memory_mb(device: torch.device | None = None) -> dict[str, float]:
    """This process's memory now, for the per-step log: resident set, the peak so far (the step where it rises
    is the step that needed it; an evaluation's shows on the step after it), and on CUDA the most allocated
    since the last call (the peak counter restarts, so each step shows its own)."""
    out = {"system/peak_rss_mb": round(peak_rss_mb(), 1)}
    try:
        with open("/proc/self/statm") as handle:  # Linux: pages; cheap enough for every step
            out["system/rss_mb"] = round(int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20, 1)
    except (OSError, ValueError, IndexError):
        pass
    if device is not None and device.type == "cuda":
        import torch

        out["system/gpu_peak_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
        torch.cuda.reset_peak_memory_stats(device)
    return out


def versions() -> dict:
    from importlib.metadata import version

    import torch
    import transformers

    import distgem

    return {
        "distgem": distgem.__version__,
        "torch": torch.__version__,
        "deepspeed": version("deepspeed"),
        "transformers": transformers.__version__,
        "python": platform.python_version(),
    }


def strict(data, prefix: str = "") -> tuple[object, list[str]]:
    """`data` with every non-finite float replaced by None (strict JSON has no NaN), and the dotted keys of
    those numbers: a result computed from non-finite numbers is flagged, never written as a score."""
    if isinstance(data, dict):
        out, bad = {}, []
        for key, value in data.items():
            out[key], sub = strict(value, f"{prefix}{key}.")
            bad += sub
        return out, bad
    if isinstance(data, (list, tuple)):
        out, bad = [], []
        for i, value in enumerate(data):
            clean, sub = strict(value, f"{prefix}{i}.")
            out.append(clean)
            bad += sub
        return out, bad
    if isinstance(data, float) and not math.isfinite(data):
        return None, [prefix.rstrip(".")]
    return data, []


def strict_json(data: dict, **dumps) -> str:
    """JSON without NaN or Infinity: those numbers become null and their keys are listed under "nonfinite"."""
    clean, bad = strict(data)
    if bad:
        clean["nonfinite"] = bad
    return json.dumps(clean, allow_nan=False, **dumps)


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(strict_json(data, indent=2, ensure_ascii=False))
    os.replace(tmp, path)
