"""`distgem compare RUNS... --between A B`: two methods of a report side by side on every metric, over seeds.

The report tests every method against the baselines on the zero-shot average; a question such as "does one
constraint per language keep more Spanish retrieval than the pooled margin?" needs two arbitrary methods
compared on each number the runs measured: zero-shot and source-language scores per language, XSR P@1 per
pair and MLM perplexity per language after fine-tuning, the held-out memory losses at the last evaluation
(one row per held-out sample, named by the backbone's loss on it), and the share of steps GEM projected.
Each row: mean ± std (seeds) of A and of B, A - B, Welch's t and p (n/a with fewer than two seeds on a
side). Labels are the report's (`distgem report` prints them).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from distgem.errors import UserError
from distgem.report.runs import held_out_losses, load_runs, mean_std, split_sound, welch
from distgem.report.tables import format_cell, format_stat


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="+", help="directories of runs or runs.jsonl summaries, as for `distgem report`")
    parser.add_argument("--between", nargs=2, required=True, metavar=("A", "B"), help="the two methods' report labels")
    parser.add_argument("--json", action="store_true", help="one JSON object per metric instead of a Markdown table")


def metrics(run: dict) -> dict[str, float]:
    """Every number one run measured, by metric name (the rows of the comparison)."""
    out = {}
    source = run["config"].get("task", {}).get("source", "en")
    for lang, score in run["test"]["per_language"].items():
        out[f"{'source' if lang == source else 'zero-shot'} {lang}"] = score["score"]
    out["zero-shot avg"] = run["test"]["average"]
    after = run.get("after") or {}
    for pair, scores in (after.get("xsr") or {}).items():
        out[f"XSR P@1 {pair}"] = scores["p@1"]
    for lang, ppl in (after.get("mlm_perplexity") or {}).items():
        out[f"MLM ppl {lang}"] = ppl
    for key, loss, backbone in held_out_losses(run):
        # runs on different held-out samples are not comparable: the backbone's loss names the sample
        out[f"held-out loss {key}" + (f" (backbone {backbone:.2f})" if backbone is not None else "")] = loss
    share = (run.get("train") or {}).get("gem_violated_share")
    if share is not None:
        out["steps projected %"] = 100 * share
    return out


def compare(runs: list[dict], a: str, b: str) -> list[dict]:
    by_label: dict[str, list[dict]] = {}
    for run in runs:
        by_label.setdefault(run["label"], []).append(metrics(run))
    for name in (a, b):
        if name not in by_label:
            raise UserError(f"--between: no runs labelled {name!r}; the labels are: {', '.join(sorted(by_label))}")
    rows = []
    names = list(dict.fromkeys(key for m in by_label[a] for key in m))
    for metric in names:
        xs = [m[metric] for m in by_label[a] if metric in m]
        ys = [m[metric] for m in by_label[b] if metric in m]
        if not ys:
            continue  # measured by one side only (e.g. steps projected against naive)
        (a_mean, a_std, a_n), (b_mean, b_std, b_n) = mean_std(xs), mean_std(ys)
        t, p = welch(xs, ys)
        rows.append(
            {
                "metric": metric,
                "a_mean": a_mean,
                "a_std": a_std,
                "a_n": a_n,
                "b_mean": b_mean,
                "b_std": b_std,
                "b_n": b_n,
                "diff": a_mean - b_mean,
                "t": t,
                "p": p,
            }
        )
    return rows


def _cell(row: dict, side: str) -> str:
    cell = (row[f"{side}_mean"], row[f"{side}_std"], row[f"{side}_n"])
    return f"{format_cell(cell)} ({cell[2]})"


def run(args: argparse.Namespace) -> int:
    a, b = args.between
    runs = load_runs(*(Path(source) for source in args.runs))
    _, left_out = split_sound([run for run in runs if run["label"] in (a, b)])
    if left_out:  # a t-test over a diverged seed would compare nothing meaningful
        raise UserError(f"--between {a} {b}: runs whose numbers cannot be compared: {'; '.join(left_out)}")
    rows = compare(runs, a, b)
    if args.json:
        print("\n".join(json.dumps(row) for row in rows))
        return 0
    print(f"| metric | {a} | {b} | A - B | t | p |\n|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['metric']} | {_cell(r, 'a')} | {_cell(r, 'b')} | {r['diff']:+.2f} | {format_stat(r['t'], '.2f')} "
            f"| {format_stat(r['p'], '.2g')} |"
        )
    print("\nmean ± std (seeds); Welch's t-test, two-sided; n/a: fewer than two seeds on a side or no spread")
    return 0
