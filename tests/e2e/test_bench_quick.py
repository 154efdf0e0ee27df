"""Every benchmark's --quick mode runs to the end and prints its tables, so that bench/ cannot rot.

The numbers are not asserted (machines here are noisy and shared): only that each benchmark finishes,
prints a markdown table with a row per measured configuration, and that those cells are numbers.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from tests.support import ROOT, micro_overrides

NUMBER = re.compile(r"^-?[\d.]+(e[+-]?\d+)?[kMG%x]?$")


def bench(script: str, *args: str, timeout: int = 300) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=ROOT,
    )
    assert done.returncode == 0, f"bench/{script} failed (rc={done.returncode}):\n{done.stderr[-3000:]}"
    return done.stdout


def rows(output: str) -> list[list[str]]:
    """The body rows of every markdown table in the output (header and |---| lines dropped)."""
    lines = [line for line in output.splitlines() if line.startswith("|")]
    body = [
        line
        for i, line in enumerate(lines)
        if not set(line) <= set("|-: ") and not (i + 1 < len(lines) and set(lines[i + 1]) <= set("|-: "))
    ]
    return [[c.strip() for c in line.strip("|").split("|")] for line in body]


def numeric(cell: str) -> bool:
    return bool(NUMBER.match(cell.replace(",", "")))


def sets(micro, tmp_path) -> list[str]:
    corpus, backbone = micro
    out = []
    for o in micro_overrides(corpus, backbone, tmp_path / "run", **{"eval.every": 100}):
        if not o.startswith("output.run_dir="):  # the benchmarks place their own runs
            out += ["--set", o]
    return out


def test_step_quick(micro, tmp_path):
    table = rows(bench("step.py", "--quick", *sets(micro, tmp_path)))
    methods = [r[0] for r in table]
    assert "naive" in methods and "gem-both" in methods, table
    gem = next(r for r in table if r[0] == "gem-both")
    assert sum(numeric(c) for c in gem) >= 4, gem  # step time, ratio, overhead terms


def test_floor_quick(tmp_path):
    saved, image, again = tmp_path / "rows.json", tmp_path / "growth.png", tmp_path / "again.png"
    table = rows(bench("floor.py", "--quick", "--json", str(saved), "--plot", str(image)))
    assert len(table) == 4, table  # tiny x N in {1, 8} x k in {1, 2}
    assert all(sum(numeric(c) for c in r) >= 8 for r in table), table
    kept = json.loads(saved.read_text())["rows"]
    assert [(r["N"], r["k"]) for r in kept] == [(1, 1), (1, 2), (8, 1), (8, 2)]
    assert all(r["overhead"] == pytest.approx(r["capture"] + r["gram"] + r["qp"] + r["update"]) for r in kept)
    assert image.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bench("floor.py", "--from-json", str(saved), "--plot", str(again))  # redraws without measuring
    assert again.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved.write_text("{}")
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "floor.py"), "--from-json", str(saved), "--plot", str(again)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 2 and done.stderr.strip().startswith(f"{saved}: not rows written by --json")


def test_projection_quick():
    table = rows(bench("projection.py", "--quick"))
    assert len(table) >= 6 and all(sum(numeric(c) for c in r) >= 4 for r in table), table


@pytest.mark.slow  # ~25-55 s; CI runs the other benchmarks' quick modes (.ci/run: -m "not slow")
def test_comm_quick(micro, tmp_path):
    output = bench("comm.py", "--quick", *sets(micro, tmp_path))
    assert "gem-both" in output and "all_reduce" in output, output[-2000:]


@pytest.mark.parametrize("mode", ["prepare", pytest.param("rss", marks=pytest.mark.slow)])
def test_data_quick(mode, tmp_path):
    output = bench("data.py", "--workdir", str(tmp_path), mode, "--quick")
    assert rows(output), output[-2000:]


def test_hf_trainer_quick(micro, tmp_path):
    table = rows(bench("hf_trainer.py", "--quick", *sets(micro, tmp_path)))
    assert len(table) == 1 and table[0][:2] == ["1", "2"] and all(numeric(c) for c in table[0]), table


@pytest.mark.slow
def test_memory_quick(micro, tmp_path):
    table = rows(bench("memory.py", "--quick", *sets(micro, tmp_path)))
    assert len(table) == 1 and table[0][0] == "2", table
    assert all(numeric(c.lstrip("+")) for c in table[0][2:]), table
