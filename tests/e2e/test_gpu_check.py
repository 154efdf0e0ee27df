"""scripts/gpu_check.sh, the one GPU command, cannot rot: its CPU rehearsal runs every stage here.

The rehearsal is the device command with small sizes on the CPU (`--rehearse`): the same stages, budgets,
files and report. What the GPU machine would print last is the summary table; what it would bring back is at
most 8 files, the JSON among them holding every figure. A second test shows that a stage which outruns its
budget is stopped and reported, and that the stages after it still run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from tests.support import ROOT

SCRIPT = ROOT / "scripts" / "gpu_check.sh"


def rehearse(out, timeout: int = 900, **env) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHON": sys.executable, "OUT": str(out), "WHEELS": str(out / "no-wheels"), **env}
    return subprocess.run(
        ["bash", str(SCRIPT), "--rehearse"], capture_output=True, text=True, timeout=timeout, env=environment, cwd=ROOT
    )


def test_the_rehearsal_runs_every_stage_and_writes_its_files(tmp_path):
    started = time.perf_counter()
    done = rehearse(tmp_path)
    seconds = time.perf_counter() - started
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["floor.log", "gpu_check.json", "gpu_check.md", "projection.log", "step.log", "tests.log"], files
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    status = {s["stage"]: s["status"] for s in report["stages"]}
    assert status == {
        "install": "skipped",
        "tests": "ok",
        "floor": "ok",
        "projection": "ok",
        "step-zero0": "ok",
        "step-zero2": "ok",
    }, status
    tests = report["tests"]["counts"]
    assert tests["passed"] >= 10 and tests["failed"] == tests["error"] == 0
    assert any("min_cosine_after" in m for m in report["tests"]["measured"]), "the tests' measurements are kept"
    floor = report["floor"]["rows"]
    assert floor and all(r["overhead"] > 0 and r["floor"] > 0 and r["bandwidth"] > 0 for r in floor)
    projection = report["projection"]["rows"]
    assert projection and all(r["reference_ms"] > 0 and r["engine_ms"] > 0 for r in projection)
    assert all(r["reference_rel_diff"] < 1e-5 and r["engine_rel_diff"] < 1e-5 for r in projection)
    for zero in ("zero0", "zero2"):
        rows = report["step"][zero]["tables"][0]["rows"]
        assert set(rows) == {"naive", "mtf-both", "gem-both"}
        assert rows["gem-both"]["k"] == 2 and rows["gem-both"]["floor"] > 0 and rows["naive"]["step"] > 0
        assert any(o == f"train.zero_stage={zero[-1]}" for o in report["step"][zero]["overrides"])
    section = (tmp_path / "gpu_check.md").read_text()
    for heading in (
        "### GPU check: no GPU (a CPU rehearsal)",
        "#### Correctness",
        "#### GEM's overhead against its floor",
        "#### Projection against the original GEM path",
        "#### Step cost, ZeRO 0",
        "#### Step cost, ZeRO 2",
    ):
        assert heading in section, heading
    last = done.stdout.strip().splitlines()[-7:]
    assert last[0].startswith("stage") and [line.split()[0] for line in last[2:]] == [
        "install",
        "tests",
        "floor",
        "projection",
        "step",
    ], last
    print(f"rehearsal: {seconds:.0f} s")


def test_a_stage_over_its_budget_is_stopped_and_the_others_still_run(tmp_path):
    """A Python that hangs on every stage: each is stopped at its budget, reported as such, and the report
    (written by the real Python) still comes out, with a failing exit status."""
    hanging = tmp_path / "python"
    hanging.write_text(f"""#!/usr/bin/env bash
case "$1" in
    scripts/gpu/report.py) exec {sys.executable} "$@" ;;
    -c) exit 1 ;;
    *) sleep 60 ;;
esac
""")
    hanging.chmod(0o755)
    out = tmp_path / "out"
    started = time.perf_counter()
    done = rehearse(
        out,
        timeout=120,
        PYTHON=str(hanging),
        BUDGET_TESTS="6",
        BUDGET_FLOOR="6",
        BUDGET_PROJECTION="6",
        BUDGET_STEP="6",
    )
    assert time.perf_counter() - started < 90
    assert done.returncode == 1, done.stderr[-2000:]
    report = json.loads((out / "gpu_check.json").read_text())
    assert [(s["stage"], s["status"]) for s in report["stages"][1:]] == [
        ("tests", "timeout"),
        ("floor", "timeout"),
        ("projection", "timeout"),
        ("step-zero0", "timeout"),
        ("step-zero2", "timeout"),
    ]
    assert "| tests | timeout |" in (out / "gpu_check.md").read_text()


@pytest.mark.parametrize("argument", ["--gpu", "rehearse"])
def test_an_unknown_argument_is_one_line_and_exit_2(argument):
    done = subprocess.run(["bash", str(SCRIPT), argument], capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert done.returncode == 2 and done.stderr.strip() == f"gpu_check.sh: unknown argument '{argument}' (see --help)"


def test_the_report_drops_into_the_performance_page(tmp_path):
    doc = tmp_path / "PERFORMANCE.md"
    doc.write_text("# P\n\n## GPU\n\n<!-- gpu-check:begin -->\nNot run yet.\n<!-- gpu-check:end -->\n\n## Next\n")
    section = tmp_path / "gpu_check.md"
    section.write_text("### GPU check: NVIDIA H100, 2027-01-01\n\n| a | b |\n")
    command = [sys.executable, str(ROOT / "scripts" / "gpu" / "report.py"), "--into", str(doc), "--from", str(section)]
    assert subprocess.run(command, capture_output=True, timeout=60).returncode == 0
    text = doc.read_text()
    assert "Not run yet." not in text and "### GPU check: NVIDIA H100" in text and text.endswith("## Next\n")
    assert "gpu-check:begin" in (ROOT / "docs" / "PERFORMANCE.md").read_text(), "the page keeps the GPU block"
