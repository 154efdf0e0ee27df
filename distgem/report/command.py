"""`distgem report RUNS... --out DIR`: tables, plots and (optionally) the results page from whatever runs exist."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from distgem.errors import UserError
from distgem.report import tradeoff
from distgem.report.runs import load_runs, split_sound, summary
from distgem.report.tables import build_report, write_outputs


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "runs",
        nargs="+",
        help="directories searched (recursively) for results.json, or runs.jsonl "
        "summaries; a run id found again in a later one replaces the earlier",
    )
    parser.add_argument("--out", required=True, help="where the tables and plots go")
    parser.add_argument("--no-plots", action="store_true", help="tables only (no matplotlib, no event files read)")
    parser.add_argument("--results-md", help="also write a results page (set-up, the paper's claims, tables, plots)")
    parser.add_argument("--discussion", help="hand-written Markdown appended to the results page")


def run(args: argparse.Namespace) -> int:
    sources = [Path(source) for source in args.runs]
    runs = load_runs(*sources)
    sound, left_out = split_sound(runs)  # a diverged run, or one with non-finite scores, is never averaged in
    for line in left_out:
        print(f"distgem report: left out {line}", file=sys.stderr)
    if not sound:
        raise UserError(f"no run to report: every one is left out ({'; '.join(left_out)})")
    report = build_report(sound)
    report["left_out"] = left_out
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_outputs(report, out)
    tradeoff.write(sound, out, plots=not args.no_plots)  # where the runs sweep a family's knob
    if not all(source.is_file() for source in sources):
        # the summary that regenerates every table without the run directories
        (out / "runs.jsonl").write_text("".join(json.dumps(summary(r)) + "\n" for r in runs))
    if not args.no_plots:
        from distgem.report.plots import plot

        plot(report, sound, out)
    if args.results_md:
        from distgem.report.page import write_results

        command = f"distgem report {' '.join(args.runs)} --out {args.out} --results-md {args.results_md}"
        command += f" --discussion {args.discussion}" if args.discussion else ""
        write_results(
            report, sound, Path(args.results_md), out, command, Path(args.discussion) if args.discussion else None
        )
    print(f"{len(runs)} runs -> {out}/report.md" + (f", {args.results_md}" if args.results_md else ""))
    return 0
