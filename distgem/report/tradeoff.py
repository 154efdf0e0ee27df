"""The trade-off between what fine-tuning gains and what it forgets, per method family, as curves.

Each method setting is a point: English (source) score against XSR P@1 (mean over target languages), and
XSR P@1 against the zero-shot average, each with its spread over seeds. A family is one knob swept: GEM's
margin (memory_strength), MTF's memory-loss weight, the per-language constraints' margin, L2-SP's strength,
LoRA's rank. At matched English accuracy (each GEM margin against the MTF weight closest to it in English
score), Welch t-tests say whether GEM keeps more retrieval or zero-shot accuracy than MTF; the dose (GEM's
mean dual variable per step, against MTF's constant weight) says how much memory gradient each added.
"""

from __future__ import annotations

import csv
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from distgem.report.runs import mean_std, welch

FAMILIES = (
    "naive",
    "GEM, margin",
    "GEM per language, margin",
    "GEM margin 0.5, refreshed every R",
    "MTF, weight",
    "L2-SP, strength",
    "LoRA, rank",
)


@dataclass
class Point:
    label: str
    family: str
    knob: float
    source: list[float] = field(default_factory=list)
    retrieval: list[float] = field(default_factory=list)
    zero_shot: list[float] = field(default_factory=list)
    dose: list[float] = field(default_factory=list)
    projected: list[float] = field(default_factory=list)


def family(run: dict) -> tuple[str, float] | None:
    """(family, knob) of a run on the trade-off plots; None for the knobs those plots do not sweep."""
    method = run["config"]["method"]
    name, memory = method["name"], method.get("memory") or []
    gem = method.get("gem") or {}
    usual = "+batch" not in run["label"] and "+layer" not in run["label"]  # the sweep's usual memory batch and layer
    if name == "naive" and usual:
        return "naive", 0.0
    if name == "l2sp":
        return "L2-SP, strength", method.get("l2sp_strength", 0.1)
    if name == "lora":
        return "LoRA, rank", method.get("lora_rank", 8)
    if name == "mtf" and memory == ["xsr"] and usual:
        return "MTF, weight", (method.get("mtf_weights") or {}).get("xsr", 1.0)
    if (
        name != "gem"
        or memory != ["xsr"]
        or not usual
        or gem.get("per_layer")
        or gem.get("target", "gradient") != "gradient"
        or gem.get("anchor", "previous") != "previous"
    ):
        return None
    strength = gem.get("memory_strength", 0.0)
    if gem.get("refresh_every", 1) > 1:
        return ("GEM margin 0.5, refreshed every R", gem["refresh_every"]) if strength == 0.5 else None
    return ("GEM per language, margin" if gem.get("per_language") else "GEM, margin"), strength


def points(runs: list[dict]) -> list[Point]:
    """One point per method setting that has a source score and XSR P@1 after training, seeds pooled."""
    by_label: dict[str, Point] = {}
    for run in runs:
        placed = family(run)
        after = (run.get("after") or {}).get("xsr")
        source = run["test"].get("source")
        if placed is None or not after or source is None:
            continue
        point = by_label.setdefault(run["label"], Point(run["label"], *placed))
        point.source.append(source)
        point.retrieval.append(statistics.fmean(p["p@1"] for p in after.values()))
        point.zero_shot.append(run["test"]["average"])
        train = run.get("train") or {}
        if placed[0] == "MTF, weight":
            point.dose.append(placed[1])
        elif train.get("gem_mean_dual"):
            point.dose.append(sum(train["gem_mean_dual"].values()))
        if train.get("gem_violated_share") is not None:
            point.projected.append(100 * train["gem_violated_share"])
    return sorted(by_label.values(), key=lambda p: (FAMILIES.index(p.family), p.knob))


def matched(all_points: list[Point]) -> list[dict]:
    """Each GEM margin > 0 against the MTF weight with the closest English score: Welch t-tests (GEM - MTF)."""
    gem = [p for p in all_points if p.family == "GEM, margin" and p.knob > 0]
    mtf = [p for p in all_points if p.family == "MTF, weight"]
    rows = []
    for g in gem:
        if not mtf:
            break
        m = min(mtf, key=lambda p: abs(statistics.fmean(p.source) - statistics.fmean(g.source)))
        row = {
            "gem": g.label,
            "mtf": m.label,
            "english_gem": statistics.fmean(g.source),
            "english_mtf": statistics.fmean(m.source),
        }
        for key, attr in (("retrieval", "retrieval"), ("zero_shot", "zero_shot"), ("english", "source")):
            a, b = getattr(g, attr), getattr(m, attr)
            row[f"{key}_diff"] = statistics.fmean(a) - statistics.fmean(b)
            row[f"{key}_p"] = welch(a, b)[1]
        row["dose_gem"] = statistics.fmean(g.dose) if g.dose else None
        row["dose_mtf"] = m.knob
        rows.append(row)
    return rows


def write(runs: list[dict], out: Path, plots: bool = True) -> Path | None:
    """tradeoff.md / tradeoff.csv (and the two figures) where the runs sweep at least two settings of a family."""
    all_points = points(runs)
    if len({p.family for p in all_points}) < 2 or len(all_points) < 3:
        return None
    cell = lambda values: f"{mean_std(values)[0]:.1f} ± {mean_std(values)[1]:.1f}" if values else "-"  # noqa: E731
    lines = [
        "| family | knob | seeds | English | XSR P@1 (targets) | zero-shot avg | dose (mean v or w) "
        "| steps projected % |",
        "|---|---|---|---|---|---|---|---|",
    ]
    with (out / "tradeoff.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            [
                "label",
                "family",
                "knob",
                "seeds",
                "english_mean",
                "english_std",
                "xsr_p1_mean",
                "xsr_p1_std",
                "zero_shot_mean",
                "zero_shot_std",
                "dose_mean",
                "projected_mean",
            ]
        )
        for p in all_points:
            dose = f"{statistics.fmean(p.dose):.3g}" if p.dose else "-"
            projected = f"{statistics.fmean(p.projected):.0f}" if p.projected else "-"
            lines.append(
                f"| {p.family} | {p.knob:g} | {len(p.source)} | {cell(p.source)} | {cell(p.retrieval)} | "
                f"{cell(p.zero_shot)} | {dose} | {projected} |"
            )
            writer.writerow(
                [
                    p.label,
                    p.family,
                    p.knob,
                    len(p.source),
                    *mean_std(p.source)[:2],
                    *mean_std(p.retrieval)[:2],
                    *mean_std(p.zero_shot)[:2],
                    statistics.fmean(p.dose) if p.dose else "",
                    statistics.fmean(p.projected) if p.projected else "",
                ]
            )
    backbone = [
        statistics.fmean(p["p@1"] for p in r["backbone"]["xsr"].values())
        for r in runs
        if (r.get("backbone") or {}).get("xsr") and family(r)
    ]
    if backbone:
        lines += ["", f"The backbone's XSR P@1 before fine-tuning: {statistics.fmean(backbone):.1f}."]
    pairs = matched(all_points)
    if pairs:
        lines += [
            "",
            "At matched English accuracy (each GEM margin against the MTF weight closest to it in English "
            "score; GEM - MTF, Welch t-test over seeds):",
            "",
            "| GEM | MTF | English GEM / MTF | XSR P@1 diff (p) | zero-shot diff (p) | dose GEM / MTF |",
            "|---|---|---|---|---|---|",
        ]
        for r in pairs:
            dose = f"{r['dose_gem']:.3g} / {r['dose_mtf']:g}" if r["dose_gem"] is not None else f"- / {r['dose_mtf']:g}"
            lines.append(
                f"| {r['gem']} | {r['mtf']} | {r['english_gem']:.1f} / {r['english_mtf']:.1f} | "
                f"{r['retrieval_diff']:+.1f} ({_p(r['retrieval_p'])}) | {r['zero_shot_diff']:+.2f} "
                f"({_p(r['zero_shot_p'])}) | {dose} |"
            )
    path = out / "tradeoff.md"
    path.write_text("\n".join(lines) + "\n")
    if plots:
        _plot(all_points, out, statistics.fmean(backbone) if backbone else None)
    return path


def _p(value: float) -> str:
    return "n/a" if value != value else f"p = {value:.2g}"


def _plot(all_points: list[Point], out: Path, backbone: float | None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_family: dict[str, list[Point]] = defaultdict(list)
    for p in all_points:
        by_family[p.family].append(p)
    for name, (x_attr, x_label), (y_attr, y_label) in (
        (
            "tradeoff_retrieval_english.png",
            ("source", "English POS accuracy (test)"),
            ("retrieval", "XSR P@1, mean over target languages"),
        ),
        (
            "tradeoff_zero_shot_retrieval.png",
            ("retrieval", "XSR P@1, mean over target languages"),
            ("zero_shot", "zero-shot POS, average over targets"),
        ),
    ):
        figure, axis = plt.subplots(figsize=(6.4, 4.6))
        for fam in FAMILIES:
            group = by_family.get(fam)
            if not group:
                continue
            xs = [mean_std(getattr(p, x_attr)) for p in group]
            ys = [mean_std(getattr(p, y_attr)) for p in group]
            axis.errorbar(
                [x[0] for x in xs],
                [y[0] for y in ys],
                xerr=[x[1] for x in xs],
                yerr=[y[1] for y in ys],
                marker="o",
                capsize=2,
                linestyle="-" if len(group) > 1 else "none",
                label=fam,
            )
            for p, x, y in zip(group, xs, ys):
                if fam != "naive":
                    axis.annotate(f"{p.knob:g}", (x[0], y[0]), textcoords="offset points", xytext=(4, 3), fontsize=6)
        if backbone is not None:  # what keeping everything would mean
            (axis.axhline if y_attr == "retrieval" else axis.axvline)(
                backbone, color="grey", linestyle=":", label="backbone (before fine-tuning)"
            )
        axis.set_xlabel(x_label)
        axis.set_ylabel(y_label)
        axis.set_title("each point: mean ± std over seeds; numbers: the family's knob", fontsize=8)
        axis.legend(fontsize=7)
        figure.tight_layout()
        figure.savefig(out / name, dpi=120)
        plt.close(figure)
