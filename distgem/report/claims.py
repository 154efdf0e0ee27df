"""The paper's claims, each checked against a set of runs: direction, size and a Welch t-test over seeds.

Every claim is a list of comparisons (method against another, one metric, one task). A claim
"reproduces" when all of its comparisons hold (the paper's direction with p < 0.01, or the size it
states), "partly" when some do, "direction only" when every mean goes the paper's way without
significance, and "does not reproduce" otherwise. Inputs are the runs `distgem report` loads.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

from distgem.report.runs import ALPHA, BASELINES, welch

GEM = ("gem-mlm", "gem-xsr", "gem-both")
FAR = 10.0  # P@1 points: what "far better" retrieval means here


@dataclass
class Comparison:
    task: str
    method: str
    other: str
    metric: str
    mean: float
    other_mean: float
    p: float
    seeds: tuple[int, int]
    direction: bool  # the means go the paper's way
    holds: bool  # ... and the claim's test passes

    def line(self) -> str:
        p = "n/a" if self.p != self.p else f"{self.p:.2g}"
        mark = "holds" if self.holds else ("direction only" if self.direction else "no")
        return (
            f"{self.method} {self.mean:.2f} vs {self.other} {self.other_mean:.2f} ({self.metric}; "
            f"{self.seeds[0]} vs {self.seeds[1]} seeds, p = {p}): {mark}"
        )


@dataclass
class Claim:
    title: str
    comparisons: list[Comparison]
    note: str = ""

    @property
    def verdict(self) -> str:
        if not self.comparisons:
            return "not measured"
        if all(c.holds for c in self.comparisons):
            return "reproduces"
        if any(c.holds for c in self.comparisons):
            return "partly"
        return "direction only" if all(c.direction for c in self.comparisons) else "does not reproduce"


def zero_shot(run: dict) -> float:
    return run["test"]["average"]


def perplexity(run: dict) -> float:
    """Mean MLM perplexity over languages after fine-tuning (lower is better)."""
    return statistics.fmean(run["after"]["mlm_perplexity"].values())


def retrieval(run: dict) -> float:
    """Mean XSR P@1 over pairs after fine-tuning."""
    return statistics.fmean(p["p@1"] for p in run["after"]["xsr"].values())


class Runs:
    """Runs grouped by (task, label), and comparisons between two groups."""

    def __init__(self, runs: list[dict]):
        self.groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
        for r in runs:
            self.groups[r["run"]["task"], r["label"]].append(r)
        self.tasks = sorted({task for task, _ in self.groups})
        self.source = "pos" if "pos" in self.tasks else self.tasks[0]
        self.backbone = [r["backbone"] for r in runs if r["run"]["task"] == self.source and r.get("backbone")]

    def values(self, task: str, label: str, metric: Callable[[dict], float]) -> list[float]:
        out = []
        for r in self.groups.get((task, label), []):
            try:
                out.append(metric(r))
            except (KeyError, TypeError):  # a run without that evaluation (e.g. no memory tasks after NER)
                pass
        return out

    def compare(self, task, method, other, metric, name, lower=False, rule="significant") -> Comparison | None:
        a, b = self.values(task, method, metric), self.values(task, other, metric)
        if not a or not b:
            return None
        _, p = welch(a, b)
        mean_a, mean_b = statistics.fmean(a), statistics.fmean(b)
        direction = mean_a < mean_b if lower else mean_a > mean_b
        significant = p == p and p < ALPHA
        holds = {
            "significant": direction and significant,
            "far": direction and significant and abs(mean_a - mean_b) >= FAR,
            "not higher": not (mean_a > mean_b and significant),
        }[rule]
        return Comparison(
            task, method, other, name, mean_a, mean_b, p, (len(a), len(b)), direction or rule == "not higher", holds
        )


def evaluate(runs: list[dict], gem: str = "") -> list[Claim]:
    """The claims, with GEM's rows those whose label ends in `gem` ("": the paper's equation, margin 0;
    "+gamma0.5": the margin the reference code runs)."""
    data = Runs(runs)
    src = data.source
    variants = tuple(m + gem for m in GEM)

    def claim(title: str, comparisons, note: str = "") -> Claim:
        return Claim(title, [c for c in comparisons if c is not None], note)

    claims = [
        claim(
            "GEM preserves MLM better than naive and frozen (Table 1: perplexity after English POS)",
            [
                data.compare(src, m, b, perplexity, "MLM perplexity", lower=True)
                for m in ("gem-mlm" + gem, "gem-both" + gem)
                for b in ("naive", "frozen")
            ],
        )
    ]
    xsr = claim(
        f"GEM w/ XSR keeps XSR far better than naive (Table 1; far = at least {FAR:g} P@1 points)",
        [data.compare(src, "gem-xsr" + gem, "naive", retrieval, "XSR P@1", rule="far")],
    )
    if xsr.comparisons and data.backbone:
        kept = statistics.fmean(retrieval({"after": b}) for b in data.backbone)
        c = xsr.comparisons[0]
        xsr.note = (
            f"of the backbone's {kept:.1f}, gem-xsr keeps {100 * c.mean / kept:.0f}% and naive "
            f"{100 * c.other_mean / kept:.0f}%"
        )
    claims.append(xsr)
    for task in data.tasks:
        found = [
            c
            for c in (
                data.compare(task, m, b, zero_shot, f"zero-shot {task.upper()} avg")
                for m in variants
                for b in BASELINES
            )
            if c is not None
        ]
        winners = [
            m for m in variants if any(c.method == m for c in found) and all(c.holds for c in found if c.method == m)
        ]
        # the claim is about GEM (some variant) against every baseline: a winner carries it
        best = [c for c in found if c.method in winners] or found
        claims.append(
            Claim(
                f"GEM beats every baseline on zero-shot {task.upper()} (average, p < {ALPHA:g})",
                best,
                f"GEM variants that beat all {len(BASELINES)} baselines: {', '.join(winners) or 'none'}",
            )
        )
    claims.append(
        claim(
            "MTF w/ MLM hurts zero-shot transfer (against naive)",
            [
                data.compare(task, "mtf-mlm", "naive", zero_shot, f"zero-shot {task.upper()} avg", lower=True)
                for task in data.tasks
            ],
        )
    )
    ablation = []
    for m, suffix in (("gem-mlm", gem), ("mtf-mlm", "")):
        ablation.append(data.compare(src, m + suffix, f"{m}(en){suffix}", perplexity, "MLM perplexity", lower=True))
        ablation.append(
            data.compare(
                src,
                m + suffix,
                f"{m}(en){suffix}",
                zero_shot,
                f"zero-shot {src.upper()} avg not higher",
                rule="not higher",
            )
        )
    claims.append(claim("MLM(all) lowers perplexity but does not raise POS (Table 3, against MLM(en))", ablation))
    return claims


def markdown(claims: list[Claim]) -> str:
    lines = []
    for c in claims:
        lines.append(f"- **{c.title}**: {c.verdict}." + (f" {c.note}." if c.note else ""))
        lines += [f"    - {comparison.line()}" for comparison in c.comparisons]
    return "\n".join(lines)
