"""Rank-0 observers: steps.jsonl, TensorBoard scalars, an hparams summary and a progress bar. They never touch
training state."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from distgem.train.results import strict_json

if TYPE_CHECKING:
    from distgem.config.sections import RunConfig


class RunLog:
    """steps.jsonl, TensorBoard and tqdm on rank 0; silent elsewhere."""

    def __init__(self, run_dir: Path, enabled: bool, tensorboard: bool, total_steps: int, initial_step: int = 0):
        self.enabled = enabled
        self.writer = None
        self.bar = None
        self.steps_path = run_dir / "steps.jsonl"
        if not enabled:
            return
        _trim_steps(self.steps_path, initial_step)
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"), purge_step=initial_step or None)
        from tqdm import tqdm

        self.bar = tqdm(
            total=total_steps,
            initial=initial_step,
            desc="train",
            unit="step",
            file=sys.stderr,
            dynamic_ncols=True,
            disable=None,
        )

    def scalars(self, step: int, values: dict[str, float]) -> None:
        if self.writer is not None:
            for tag, value in values.items():
                self.writer.add_scalar(tag, value, step)

    def step(self, step: int, stats: dict[str, float]) -> None:
        """One training step's statistics: TensorBoard scalars and a line of steps.jsonl."""
        self.scalars(step, stats)
        if not self.enabled:
            return
        with self.steps_path.open("a") as handle:
            handle.write(strict_json({"step": step, **stats}) + "\n")

    def progress(self, steps: int = 1, **postfix) -> None:
        if self.bar is not None:
            self.bar.update(steps)
            if postfix:
                self.bar.set_postfix(
                    {k: f"{v:.4g}" if isinstance(v, float) else v for k, v in postfix.items()}, refresh=False
                )

    def message(self, text: str) -> None:
        if self.enabled:
            (self.bar.write if self.bar is not None else print)(text, file=sys.stderr)

    def hparams(self, hparams: dict, metrics: dict[str, float]) -> None:
        """Write an hparams summary into the run's own event file (runs compare side by side)."""
        if self.writer is None:
            return
        from torch.utils.tensorboard.summary import hparams as summary

        clean = {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in hparams.items()}
        experiment, session_start, session_end = summary(clean, metrics)
        file_writer = self.writer._get_file_writer()
        for event in (experiment, session_start, session_end):
            file_writer.add_summary(event)
        for tag, value in metrics.items():
            self.writer.add_scalar(tag, value)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.writer is not None:
            self.writer.close()


def _trim_steps(path: Path, initial_step: int) -> None:
    """Keep the lines of steps.jsonl up to the step the run starts from (a resumed run drops what its checkpoint
    had not reached; a fresh run starts an empty file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = path.read_text().splitlines() if path.exists() else []
    path.write_text("".join(line + "\n" for line in lines if json.loads(line)["step"] <= initial_step))


def flatten(prefix: str, tree, out=None) -> dict[str, float]:
    """A nested dict of numbers as TensorBoard tags (`prefix/key/subkey`); non-finite, non-numeric leaves left out."""
    out = {} if out is None else out
    if isinstance(tree, dict):
        for key, value in tree.items():
            flatten(f"{prefix}/{key}", value, out)
    elif isinstance(tree, (int, float)) and math.isfinite(tree):
        out[prefix] = float(tree)
    return out


def hparams_of(config: RunConfig) -> dict:
    """What the TensorBoard hparams view compares runs by."""
    m = config.method
    return {
        "backbone": config.model.backbone,
        "task": config.task.name,
        "method": m.name,
        "memory": "+".join(m.memory) or "none",
        "mlm_languages": m.mlm_languages,
        "seed": config.train.seed,
        "lr": config.train.lr,
        "zero_stage": config.train.zero_stage,
        "per_language": m.gem.per_language,
        "per_layer": m.gem.per_layer,
        "refresh_every": m.gem.refresh_every,
        "memory_strength": m.gem.memory_strength,
    }
