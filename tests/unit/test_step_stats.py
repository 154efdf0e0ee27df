"""scripts/step_stats.py: the per-step GEM statistics that docs/RESULTS.md quotes, from a steps.jsonl."""

from __future__ import annotations

import importlib.util
import json

import pytest

from tests.support import ROOT


def _module():
    spec = importlib.util.spec_from_file_location("step_stats", ROOT / "scripts" / "step_stats.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write(run_dir, rows):
    run_dir.mkdir()
    (run_dir / "steps.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return run_dir


def test_shares_means_and_the_held_out_curve(tmp_path):
    rows = []
    for step in range(1, 101):
        projected = step % 4 == 0
        # unprojected steps change the loss by +-1; a projected one by +0.001 (rounding) or +0.5 (raised)
        change = (0.5 if step % 8 == 0 else 0.001) if projected else (1.0 if step % 2 else -1.0)
        row = {"step": step, "gem/violated": float(projected), "gem/predicted_change/xsr": change}
        if step % 25 == 0:
            row["memory_loss/xsr"] = step / 100
        rows.append(row)
    out = _module().stats(_write(tmp_path / "run", rows))
    assert out["steps"] == 100 and out["projected %"] == pytest.approx(25.0)
    # raised: the 50 odd unprojected steps (+1) and the 12 projected ones at +0.5; +0.001 is under 1% of 1
    assert out["xsr: raised %"] == pytest.approx(62.0)
    assert out["xsr: mean change"] == pytest.approx(sum(r["gem/predicted_change/xsr"] for r in rows) / 100)
    assert out["held-out xsr loss"] == "0.25@25 0.5@50 0.75@75 1@100"


def test_a_damaged_steps_file_is_a_one_line_error(tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "steps.jsonl").write_text('{"step": 1}\n{"step": 2, \n')
    with pytest.raises(SystemExit) as stop:
        _module().stats(run_dir)
    assert stop.value.code == 2
    assert capsys.readouterr().err.strip().startswith(str(run_dir / "steps.jsonl"))
