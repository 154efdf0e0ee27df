"""The report's plots: per-language bars of each Table 2 and forgetting curves from the TensorBoard events."""

from __future__ import annotations

import logging
import statistics
import sys
from collections import defaultdict
from pathlib import Path

from distgem.report.runs import method_order


def plot(report: dict, runs: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for key, table in report["tables"].items():
        if not key.startswith("table2_"):
            continue
        langs = table["columns"][2:]
        figure, axis = plt.subplots(figsize=(1.2 + 0.9 * len(langs), 3.6))
        width = 0.8 / max(len(table["rows"]), 1)
        for i, row in enumerate(table["rows"]):
            means = [c[0] for c in row[2:]]
            stds = [c[1] for c in row[2:]]
            axis.bar([x + i * width for x in range(len(langs))], means, width, yerr=stds, label=row[0])
        axis.set_xticks([x + 0.4 - width / 2 for x in range(len(langs))], langs)
        axis.set_ylabel("score")
        axis.set_title(table["title"], fontsize=9)
        axis.legend(fontsize=7, ncol=2)
        figure.tight_layout()
        figure.savefig(out / f"{key}.png", dpi=120)
        plt.close(figure)
    redrawn = _forgetting_curves(runs, out, plt)
    note = forgetting_coverage(runs, out, redrawn)
    if note:
        print(f"distgem report: {note}", file=sys.stderr)


CURVES = {
    "MLM perplexity (mean over languages)": lambda parts: parts[:2] == ["memory", "mlm_perplexity"] and len(parts) == 3,
    "XSR P@1 (mean over pairs)": lambda parts: parts[:2] == ["memory", "xsr"] and parts[3:] == ["p@1"],
}
"""Each curve's TensorBoard tags, matched by their exact parts (`memory/xsr/es/p@1`, never `p@10`)."""


def forgetting_series(run_dir: Path) -> dict[str, dict[int, float]]:
    """Per curve, the mean over languages at every evaluated step, from one run's TensorBoard events.

    The curve is what was measured during training at each step. A run written before the tested
    checkpoint had tags of its own logged its scores again at the last step, over the curve: the first
    value at a step is the curve's, later ones are ignored."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    # a resumed run wrote its events past the checkpoint twice; the writer's purge_step marks the restart and
    # the loader keeps the later ones, warning of each purge as if unexpected: quiet while loading
    loader_log = logging.getLogger("tensorboard")
    level = loader_log.level
    loader_log.setLevel(logging.ERROR)
    try:
        accumulator.Reload()
    finally:
        loader_log.setLevel(level)
    out = {}
    for metric, matches in CURVES.items():
        by_step: dict[int, list[float]] = defaultdict(list)
        for tag in (t for t in accumulator.Tags()["scalars"] if matches(t.split("/"))):
            first: dict[int, float] = {}
            for event in accumulator.Scalars(tag):
                first.setdefault(event.step, event.value)
            for step, value in first.items():
                by_step[step].append(value)
        if by_step:
            out[metric] = {step: statistics.fmean(values) for step, values in sorted(by_step.items())}
    return out


def tested_point(run: dict) -> tuple[int, dict[str, float]] | None:
    """(the tested checkpoint's step, its score per curve): what results.json measured after training."""
    after = run.get("after") or {}
    step = (run.get("dev") or {}).get("best_step") or (run.get("train") or {}).get("steps")
    values = {}
    if after.get("mlm_perplexity"):
        values["MLM perplexity (mean over languages)"] = statistics.fmean(after["mlm_perplexity"].values())
    if after.get("xsr"):
        values["XSR P@1 (mean over pairs)"] = statistics.fmean(p["p@1"] for p in after["xsr"].values())
    return (step, values) if step and values else None


def has_step_logs(run: dict) -> bool:
    """Whether the run's TensorBoard events are here (a run kept only as a summary has none)."""
    return (Path(run["run_dir"]) / "tensorboard").is_dir()


def forgetting_coverage(runs: list[dict], out: Path, redrawn: bool) -> str | None:
    """What the forgetting figure stands on when some runs are summaries only (their step logs are not here): the
    tables count every run, the curves only those with TensorBoard events, so the report says so. `redrawn`: the
    figure was drawn this time."""
    figure, logged = out / "forgetting.png", sum(map(has_step_logs, runs))
    if logged == len(runs):
        return None
    if redrawn:
        return f"{figure} drawn from the {logged} of {len(runs)} runs whose step logs are here"
    if not figure.exists():
        return None
    if logged:
        return f"{figure} left as it was: the {logged} of {len(runs)} runs with step logs here have no memory curves"
    return f"{figure} left as it was: none of the {len(runs)} runs has its step logs here"


def forgetting_curves(runs: list[dict]) -> tuple[dict, dict]:
    """(curves, tested): per metric and method, the values at each step over seeds, and the tested checkpoints'
    (step, value) pairs. Runs of different tasks evaluate different languages (the POS and NER targets), so
    their curves are never averaged together: with more than one task each task has panels of its own."""
    curves: dict[str, dict[str, dict[int, list[float]]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    tested: dict[str, dict[str, list[tuple[int, float]]]] = defaultdict(lambda: defaultdict(list))
    drawn = [r for r in runs if has_step_logs(r)]
    several_tasks = len({r["run"]["task"] for r in drawn}) > 1
    for r in drawn:
        task = f", {r['run']['task']}" if several_tasks else ""
        for metric, series in forgetting_series(Path(r["run_dir"])).items():
            for step, value in series.items():
                curves[metric + task][r["label"]][step].append(value)
        point = tested_point(r)
        if point:
            for metric, value in point[1].items():
                tested[metric + task][r["label"]].append((point[0], value))
    return curves, tested


def _forgetting_curves(runs: list[dict], out: Path, plt) -> bool:
    """Per method, the memory metrics over training (lines, mean over seeds) and the tested checkpoint (a star
    at its step, mean over seeds): what was forgotten by the end and what the selected model kept."""
    curves, tested = forgetting_curves(runs)
    if not curves:
        return False
    columns = min(len(curves), 2)  # two metrics side by side; a row per metric when the tasks double the panels
    rows = -(-len(curves) // columns)
    figure, grid = plt.subplots(rows, columns, figsize=(5.5 * columns, 3.8 * rows), squeeze=False)
    axes = [axis for row in grid for axis in row]
    for axis, (metric, methods) in zip(axes, sorted(curves.items())):
        for name in sorted(methods, key=method_order):
            steps = sorted(methods[name])
            seeds = max(map(len, methods[name].values()))
            (line,) = axis.plot(
                steps, [statistics.fmean(methods[name][s]) for s in steps], marker=".", label=f"{name} (n = {seeds})"
            )
            points = tested[metric].get(name)
            if points:
                axis.plot(
                    statistics.fmean(p[0] for p in points),
                    statistics.fmean(p[1] for p in points),
                    marker="*",
                    markersize=11,
                    color=line.get_color(),
                    linestyle="none",
                )
        axis.plot([], [], marker="*", color="grey", linestyle="none", label="tested checkpoint")
        axis.set_xlabel("step")
        axis.set_title(metric + ": over training (lines), tested checkpoint (stars)", fontsize=8)
        axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(out / "forgetting.png", dpi=120)
    plt.close(figure)
    return True
