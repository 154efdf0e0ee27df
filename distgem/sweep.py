"""Sweep grids (`configs/sweep*.yaml`): the product of axes, one run per Slurm array element.

A grid names the config files every run reads (`base`), the axes (each entry a config file, or a
mapping with `name`, `config` files and `set` overrides), overrides for every run, the Slurm
resources per element and the output directory. `distgem sweep list|size|resolve|sbatch-args`
serve `slurm/sweep.sh`; nothing here writes sbatch files.
"""

from __future__ import annotations

import argparse
import itertools
import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from distgem.config.loader import build
from distgem.errors import ConfigError


@dataclass
class Resources:
    """Per array element. GPU defaults suit one mBERT run; on a CPU-only cluster set gpus_per_node: 0."""

    nodes: int = 1
    gpus_per_node: int = 1
    ranks_per_node: int = 0
    """Training ranks per node: 0 = one per GPU (one on CPU)."""
    cpus_per_task: int = 8
    mem: str = "32G"
    time: str = "04:00:00"
    signal_seconds: int = 300
    """SIGUSR1 this long before the time limit: checkpoint and requeue."""


@dataclass
class Grid:
    name: str
    axes: dict[str, list] = field(default_factory=dict)
    """Axis name -> entries; an entry is a config path or {name, config: [paths], set: {key: value}}."""
    base: list[str] = field(default_factory=list)
    set: dict[str, Any] = field(default_factory=dict)
    out: str = "runs"
    resources: Resources = field(default_factory=Resources)


@dataclass(frozen=True)
class Run:
    index: int
    run_id: str
    configs: tuple[str, ...]
    overrides: tuple[str, ...]
    run_dir: str


def load_grid(path: str | Path) -> Grid:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such sweep grid") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: invalid YAML ({err})") from None
    grid = build(Grid, raw, {key: str(path) for key in _keys(raw)})
    for axis, entries in grid.axes.items():
        if not isinstance(entries, list) or not entries:
            raise ConfigError(f"{path}: axes.{axis} must be a non-empty list")
        for i, entry in enumerate(entries):
            if not isinstance(entry, (str, dict, int)) or isinstance(entry, dict) and "name" not in entry:
                raise ConfigError(f"{path}: axes.{axis}[{i}] must be a config path, a number or a mapping with `name`")
    return grid


def expand(grid: Grid, root: Path = Path(".")) -> list[Run]:
    """Every run of the grid in a fixed order (the array index), with its run id and arguments."""
    runs = []
    axes = list(grid.axes.items())
    for index, combination in enumerate(itertools.product(*[entries for _, entries in axes])):
        configs, overrides, names = list(grid.base), [f"{k}={v}" for k, v in grid.set.items()], []
        for (axis, _), entry in zip(axes, combination):
            if isinstance(entry, dict):
                names.append(str(entry["name"]))
                configs += list(entry.get("config", []))
                overrides += [f"{k}={v}" for k, v in entry.get("set", {}).items()]
            elif axis == "seed" or isinstance(entry, int):
                names.append(f"seed{entry}")
                overrides.append(f"train.seed={entry}")
            else:
                names.append(Path(entry).stem)
                configs.append(entry)
        run_id = "-".join(names)
        run_dir = str(Path(grid.out) / grid.name / run_id)
        for config in configs:
            if not (root / config).is_file() and not Path(config).is_file():
                raise ConfigError(f"sweep {grid.name}: run {run_id}: no such config file {config}")
        runs.append(Run(index, run_id, tuple(configs), tuple(overrides + [f"output.run_dir={run_dir}"]), run_dir))
    if len({r.run_id for r in runs}) != len(runs):
        raise ConfigError(f"sweep {grid.name}: two runs share a run id; give axis entries distinct names")
    return runs


def train_arguments(run: Run) -> list[str]:
    return [a for c in run.configs for a in ("--config", c)] + [a for o in run.overrides for a in ("--set", o)]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(
        dest="sweep_command", required=True, metavar="SUBCOMMAND", help="list, todo, size, resolve or sbatch-args"
    )
    for name, help_text in (
        ("list", "print every run of the grid (index, id, finished?)"),
        ("todo", "print the array indices still to run (neither finished nor kept), as 3,7-9"),
        ("size", "print the number of runs"),
        ("logs", "print the directory for the array's Slurm logs"),
        ("sbatch-args", "print sbatch options for the array from the grid's resources"),
    ):
        command = sub.add_parser(name, help=help_text)
        command.add_argument("grid", help="a sweep grid (configs/sweep*.yaml)")
        command.add_argument("--json", action="store_true", help="one JSON object instead of text")
        if name in ("list", "todo"):
            command.add_argument(
                "--summary",
                nargs="+",
                default=[],
                metavar="RUNS_JSONL",
                help="report summaries (distgem report's runs.jsonl): a run kept there counts as "
                "done though its directory is gone",
            )
    resolve = sub.add_parser("resolve", help="print shell assignments for one array element")
    resolve.add_argument("grid", help="a sweep grid (configs/sweep*.yaml)")
    resolve.add_argument("index", type=int, help="the array element (SLURM_ARRAY_TASK_ID)")


def run(args: argparse.Namespace) -> int:
    grid = load_grid(args.grid)
    runs = expand(grid)
    if args.sweep_command == "size":
        print(len(runs))
    elif args.sweep_command == "logs":
        print(Path(grid.out) / grid.name / "slurm")
    elif args.sweep_command == "list":
        kept = summarised(args.summary)
        rows = [
            {
                "index": r.index,
                "run_id": r.run_id,
                "run_dir": r.run_dir,
                "finished": finished(r.run_dir),
                "in_summary": r.run_id in kept,
                "command": "launch/train.py " + shlex.join(train_arguments(r)),
            }
            for r in runs
        ]
        if args.json:
            print(json.dumps(rows, indent=1))
        else:
            for row in rows:
                state = "done" if row["finished"] else "kept" if row["in_summary"] else "todo"
                print(f"{row['index']:4d}  {state}  {row['run_id']}")
            only_kept = sum(r["in_summary"] and not r["finished"] for r in rows)
            print(
                f"{len(rows)} runs, {sum(r['finished'] for r in rows)} finished"
                + (f", {only_kept} more kept in {' '.join(args.summary)} (directory gone)" if args.summary else "")
                + f"; output under {grid.out}/{grid.name}"
            )
    elif args.sweep_command == "todo":
        kept = summarised(args.summary)
        print(index_ranges([r.index for r in runs if not finished(r.run_dir) and r.run_id not in kept]))
    elif args.sweep_command == "sbatch-args":
        r = grid.resources
        options = [
            f"--job-name=distgem-{grid.name}",
            f"--nodes={r.nodes}",
            "--ntasks-per-node=1",
            f"--cpus-per-task={r.cpus_per_task}",
            f"--mem={r.mem}",
            f"--time={r.time}",
            f"--signal=B:USR1@{r.signal_seconds}",
            "--requeue",
            "--open-mode=append",
        ]
        if r.gpus_per_node:
            options.append(f"--gpus-per-node={r.gpus_per_node}")
        print(" ".join(options))
    else:
        if not 0 <= args.index < len(runs):
            raise ConfigError(f"{args.grid}: array index {args.index} is outside the grid's {len(runs)} runs")
        chosen = runs[args.index]
        ranks = grid.resources.ranks_per_node or max(grid.resources.gpus_per_node, 1)
        print(f"RUN_ID={shlex.quote(chosen.run_id)}")
        print(f"RUN_DIR={shlex.quote(chosen.run_dir)}")
        print(f"RANKS_PER_NODE={ranks}")
        print(f"RUN_ARGS=({shlex.join(train_arguments(chosen))})")
    return 0


def index_ranges(indices: list[int]) -> str:
    """Sorted indices as sbatch's --array list: [0, 1, 2, 5, 7, 8] -> "0-2,5,7-8" ("" for none)."""
    parts, start = [], None
    for i, index in enumerate(indices):
        if start is None:
            start = index
        if i + 1 == len(indices) or indices[i + 1] != index + 1:
            parts.append(f"{start}-{index}" if index > start else str(start))
            start = None
    return ",".join(parts)


def summarised(paths: list[str]) -> set[str]:
    """Run ids kept in report summaries (one JSON object per line, its `run_id` the run's directory name)."""
    ids = set()
    for path in map(Path, paths):
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError as err:
            raise ConfigError(f"{path}: cannot read ({err.strerror})") from None
        for number, line in enumerate(lines, 1):
            try:
                ids.add(json.loads(line)["run_id"])
            except (json.JSONDecodeError, KeyError, TypeError):
                raise ConfigError(f"{path}:{number}: not a run summary (a JSON object with a run_id)") from None
    return ids


def finished(run_dir: str | Path) -> bool:
    """A run is finished once its results.json exists (written last, atomically)."""
    return (Path(run_dir) / "results.json").is_file()


def _keys(raw: dict, prefix: str = "") -> list[str]:
    keys = []
    for key, value in raw.items():
        keys.append(prefix + str(key))
        if isinstance(value, dict) and key != "axes":
            keys += _keys(value, f"{prefix}{key}.")
    return keys
