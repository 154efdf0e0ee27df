"""Per-step GEM statistics of finished runs, from their steps.jsonl (docs/RESULTS.md, "Real model").

    python scripts/step_stats.py runs/real-me5/seed0-*

For each run: steps, the share GEM projected, and per memory constraint the share of steps whose
first-order predicted change <g_i, delta theta> for the step actually taken was positive (by more
than 1% of the median |change| of the steps GEM left alone; less is float32 rounding of rewritten
weights): the constraint held for the gradient, not for the step. Then its mean, the mean excess
over the pre-trained model's memory loss (gem.anchor: pretrained), the held-out memory loss at four
points of its curve (runs with eval.memory_loss_every) and the median projection time.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

ROUNDING = 0.01  # of the median |change| of unprojected steps: float32 rounding of rewritten weights is ~0.1%


def stats(run_dir: Path) -> dict:
    path = run_dir / "steps.jsonl"
    try:
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except (OSError, json.JSONDecodeError) as err:
        print(f"{path}: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    out = {"run": run_dir.name, "steps": len(rows)}
    if any("gem/violated" in r for r in rows):
        out["projected %"] = 100 * statistics.fmean(r.get("gem/violated", 0.0) for r in rows)
    for key in sorted({k for r in rows for k in r if k.startswith("gem/predicted_change/")}):
        name = key.rsplit("/", 1)[1]
        values = [r[key] for r in rows if key in r]
        free = [abs(r[key]) for r in rows if key in r and not r.get("gem/violated")] or [abs(v) for v in values]
        floor = ROUNDING * statistics.median(free)
        out[f"{name}: raised %"] = 100 * sum(v > floor for v in values) / len(values)
        out[f"{name}: mean change"] = statistics.fmean(values)
        excess = [r[f"gem/excess/{name}"] for r in rows if f"gem/excess/{name}" in r]
        if excess:
            out[f"{name}: mean excess"] = statistics.fmean(excess)
    for key in sorted({k for r in rows for k in r if k.startswith("memory_loss/")}):  # eval.memory_loss_every
        curve = [(r["step"], r[key]) for r in rows if key in r]
        marks = [curve[round(i * (len(curve) - 1) / 3)] for i in range(4)] if len(curve) >= 4 else curve
        out[f"held-out {key.split('/', 1)[1]} loss"] = " ".join(f"{v:.3g}@{s}" for s, v in marks)
    times = [r["gem/projection_ms"] for r in rows if "gem/projection_ms" in r]
    if times:
        out["projection ms (median)"] = statistics.median(times)
    return out


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    for run_dir in argv:
        row = stats(Path(run_dir))
        print("  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
