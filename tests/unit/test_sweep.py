"""Sweep grids: the product of axes, stable indices, shell-safe resolution, strict errors."""

from __future__ import annotations

import subprocess

import pytest

from distgem.config.sections import load_run_config
from distgem.errors import ConfigError
from distgem.sweep import expand, load_grid
from distgem.train.command import split_args
from tests.support import ROOT


def test_ci_grid_expands_to_the_product(monkeypatch):
    monkeypatch.chdir(ROOT)
    runs = expand(load_grid("configs/sweep_ci.yaml"))
    assert [r.run_id for r in runs] == [
        "seed0-naive-pos",
        "seed0-gem-both-pos",
        "seed1-naive-pos",
        "seed1-gem-both-pos",
    ]
    assert len(expand(load_grid("configs/sweep.yaml"))) == 5 * 2 * 8 * 2


def test_resolve_is_shell_safe_and_round_trips_to_the_run_config(monkeypatch):
    monkeypatch.chdir(ROOT)
    script = (
        'eval "$(python -m distgem.cli sweep resolve configs/sweep_ci.yaml 3)"; '
        'printf "%s\\n" "$RUN_ID" "$RUN_DIR" "$RANKS_PER_NODE" "${RUN_ARGS[@]}"'
    )
    lines = subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout.splitlines()
    assert lines[:3] == ["seed1-gem-both-pos", "runs/ci/seed1-gem-both-pos", "1"]
    configs, overrides = split_args(lines[3:])
    config = load_run_config(configs, overrides)
    assert (config.train.seed, config.method.name, config.method.memory) == (1, "gem", ["mlm", "xsr"])
    assert config.output.run_dir == "runs/ci/seed1-gem-both-pos" and config.train.steps == 40


def test_grid_errors_name_the_problem(write, monkeypatch):
    monkeypatch.chdir(ROOT)
    with pytest.raises(ConfigError, match="unknown key 'axis'"):
        load_grid(write("g.yaml", "name: x\naxis: {seed: [0]}\n"))
    with pytest.raises(ConfigError, match="no such config file configs/methods/nope.yaml"):
        expand(load_grid(write("h.yaml", "name: x\naxes:\n  method: [configs/methods/nope.yaml]\n")))
    with pytest.raises(ConfigError, match="share a run id"):
        expand(load_grid(write("i.yaml", "name: x\naxes:\n  a: [configs/tiny.yaml, configs/tiny.yaml]\n")))
    with pytest.raises(ConfigError, match=r"resources.gpus_per_node' must be int"):
        load_grid(write("j.yaml", "name: x\nresources: {gpus_per_node: many}\n"))


def test_list_counts_runs_kept_in_a_summary_as_kept_not_todo(monkeypatch, tmp_path, capsys):
    """After `distgem report` has merged runs into runs.jsonl and their directories are gone, `sweep list
    --summary` tells them from the runs still to do; a broken summary line is a one-line error."""
    from distgem.cli import main

    monkeypatch.chdir(ROOT)
    summary = tmp_path / "runs.jsonl"
    summary.write_text('{"run_id": "seed0-gem-both-pos"}\n{"run_id": "seed1-naive-pos", "test": {}}\n')
    assert main(["sweep", "list", "configs/sweep_ci.yaml", "--summary", str(summary)]) == 0
    lines = capsys.readouterr().out.splitlines()
    states = {line.split()[2]: line.split()[1] for line in lines[:-1]}
    kept = {"seed0-gem-both-pos", "seed1-naive-pos"}
    for run_id in ("seed0-naive-pos", "seed0-gem-both-pos", "seed1-naive-pos", "seed1-gem-both-pos"):
        done_here = (ROOT / "runs" / "ci" / run_id / "results.json").is_file()  # a local CI run wins
        assert states[run_id] == ("done" if done_here else "kept" if run_id in kept else "todo"), run_id
    assert f"more kept in {summary} (directory gone)" in lines[-1]
    summary.write_text('{"run_id": "seed0-gem-both-pos"}\n{"run": 1}\n')
    assert main(["sweep", "list", "configs/sweep_ci.yaml", "--summary", str(summary)]) == 2
    error = capsys.readouterr().err.strip()
    assert error.endswith(f"{summary}:2: not a run summary (a JSON object with a run_id)")
    assert len(error.splitlines()) == 1


def test_todo_lists_the_runs_neither_finished_nor_kept_as_an_sbatch_array(tmp_path, capsys):
    """`DISTGEM_SUMMARY=runs.jsonl sbatch slurm/sweep.sh GRID` submits only these (new rows of a kept grid)."""
    from distgem.cli import main
    from distgem.sweep import index_ranges

    assert index_ranges([0, 1, 2, 5, 7, 8]) == "0-2,5,7-8" and index_ranges([3]) == "3" and index_ranges([]) == ""
    grid = tmp_path / "grid.yaml"
    grid.write_text(f"name: g\nout: {tmp_path / 'runs'}\naxes:\n  seed: [0, 1, 2, 3, 4]\n")
    summary = tmp_path / "runs.jsonl"
    summary.write_text('{"run_id": "seed1"}\n{"run_id": "seed2"}\n')
    (tmp_path / "runs" / "g" / "seed4").mkdir(parents=True)
    (tmp_path / "runs" / "g" / "seed4" / "results.json").write_text("{}")
    assert main(["sweep", "todo", str(grid), "--summary", str(summary)]) == 0
    assert capsys.readouterr().out.strip() == "0,3"
