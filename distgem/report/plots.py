"""The report's plots: per-language bars of each Table 2 and forgetting curves from the TensorBoard events."""
from __future__ import annotations

import logging
import statistics
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
    _forgetting_curves(runs, out, plt)


def _forgetting_curves(runs: list[dict], out: Path, plt) -> None:
    """Mean MLM perplexity and XSR P@1 over training, from the TensorBoard events (tensorboard's loader)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    curves: dict[str, dict[str, dict[int, list[float]]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for r in runs:
        events = Path(r["run_dir"]) / "tensorboard"
        if not events.is_dir():
            continue
        accumulator = EventAccumulator(str(events), size_guidance={"scalars": 0})
        # a resumed run wrote its events past the checkpoint twice; the writer's purge_step marks the restart and
        # the loader keeps the later ones, warning of each purge as if unexpected: quiet while loading
        loader_log = logging.getLogger("tensorboard")
        level = loader_log.level
        loader_log.setLevel(logging.ERROR)
        try:
            accumulator.Reload()
        finally:
            loader_log.setLevel(level)
        tags = accumulator.Tags()["scalars"]
        for metric, pattern in (("MLM perplexity (mean over languages)", "/mlm_perplexity/"), ("XSR P@1 (mean over pairs)", "/p@1")):
            series = defaultdict(list)
            for tag in (t for t in tags if t.startswith("memory/") and pattern in t):
                for event in accumulator.Scalars(tag):
                    series[event.step].append(event.value)
            for step, values in series.items():
                curves[metric][r["label"]][step].append(statistics.fmean(values))
    if not curves:
        return
    figure, axes = plt.subplots(1, len(curves), figsize=(5 * len(curves), 3.6))
    axes = [axes] if len(curves) == 1 else axes
    for axis, (metric, methods) in zip(axes, sorted(curves.items())):
        for name in sorted(methods, key=method_order):
            steps = sorted(methods[name])
            axis.plot(steps, [statistics.fmean(methods[name][s]) for s in steps], marker=".", label=name)
        axis.set_xlabel("step")
        axis.set_title(metric, fontsize=9)
        axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(out / "forgetting.png", dpi=120)
    plt.close(figure)
