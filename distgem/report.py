"""`distgem report RUNS_DIR --out DIR`: the paper's tables from whatever runs exist.

Table 1 (MLM perplexity per language, XSR P@1/5/10 per pair after fine-tuning on the source task,
backbone row first), Table 2 (zero-shot POS and NER per language and their average without the
source), the MLM(en) vs MLM(all) ablation, the cost of each method, and per task an "over seeds" table
(each method's memory metrics, test scores, steps projected and held-out memory loss on one row, also
written alone as seeds_TASK.md); mean and standard deviation over seeds; Welch t-tests of
every method against every baseline (significance: p < 0.01); Markdown, CSV and LaTeX; PNG plots
(per-language bars; forgetting curves read from the TensorBoard event files).
"""
from __future__ import annotations

import argparse
import csv
import json
import statistics
import warnings
from collections import defaultdict
from pathlib import Path

from distgem.errors import UserError

BASELINES = ("naive", "frozen", "mtf-mlm", "mtf-xsr", "mtf-both")
ORDER = ("naive", "frozen", "mtf-mlm", "mtf-xsr", "mtf-both", "gem-mlm", "gem-xsr", "gem-both")
ALPHA = 0.01


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="+", help="directories searched (recursively) for results.json, or runs.jsonl "
                        "summaries; a run id found again in a later one replaces the earlier")
    parser.add_argument("--out", required=True, help="where the tables and plots go")
    parser.add_argument("--no-plots", action="store_true")
    parser.add_argument("--results-md", help="also write a results page (set-up, the paper's claims, tables, plots)")
    parser.add_argument("--discussion", help="hand-written Markdown appended to the results page")


def run(args: argparse.Namespace) -> int:
    sources = [Path(source) for source in args.runs]
    runs = load_runs(*sources)
    report = build_report(runs)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_outputs(report, out)
    if not all(source.is_file() for source in sources):
        # the summary that regenerates every table without the run directories
        (out / "runs.jsonl").write_text("".join(json.dumps(summary(r)) + "\n" for r in runs))
    if not args.no_plots:
        from distgem.report_plots import plot

        plot(report, runs, out)
    if args.results_md:
        from distgem.results_doc import write_results

        command = f"distgem report {' '.join(args.runs)} --out {args.out} --results-md {args.results_md}"
        command += f" --discussion {args.discussion}" if args.discussion else ""
        write_results(report, runs, Path(args.results_md), out, command,
                      Path(args.discussion) if args.discussion else None)
    print(f"{len(runs)} runs -> {out}/report.md" + (f", {args.results_md}" if args.results_md else ""))
    return 0


SUMMARY_KEYS = ("run", "test", "backbone", "after", "train", "config", "versions")


def summary(run: dict) -> dict:
    """What the tables need of one run (no dev history), keyed by its directory name; plus the held-out
    memory losses of the backbone and of the last dev evaluation, where the run measured them."""
    out = {"run_id": Path(run["run_dir"]).name, **{k: run.get(k) for k in SUMMARY_KEYS}}
    history = (run.get("dev") or {}).get("history") or [{}]
    held = {"backbone": (run.get("backbone") or {}).get("memory_loss"), "final": history[-1].get("memory_loss")}
    if run.get("memory_loss") or any(held.values()):
        out["memory_loss"] = run.get("memory_loss") or held  # a summary read back keeps its own
    return out


def load_runs(*sources: Path) -> list[dict]:
    """Every run of the sources (directories of run directories, runs.jsonl summaries), one per run id: a
    later source's run replaces an earlier one of the same id (new runs over a committed summary)."""
    by_id = {}
    for source in sources:
        for run in _load_summary(source) if source.is_file() else _load_directory(source):
            by_id[Path(run["run_dir"]).name] = run
    return _mark_varied(list(by_id.values()))


def _load_directory(root: Path) -> list[dict]:
    if not root.is_dir():
        raise UserError(f"{root}: no such directory or runs.jsonl")
    runs = []
    for path in sorted(root.rglob("results.json")):
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise UserError(f"{path}:{err.lineno}: not valid JSON ({err.msg})") from None
        data["run_dir"] = str(path.parent)
        runs.append(_labelled(data, f"{path}: not a distgem results.json"))
    if not runs:
        raise UserError(f"{root}: no results.json found")
    return runs


def _load_summary(path: Path) -> list[dict]:
    runs = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        try:
            data = json.loads(line)
        except json.JSONDecodeError as err:
            raise UserError(f"{path}:{number}: not valid JSON ({err.msg})") from None
        data["run_dir"] = str(path.parent / (data.get("run_id") or f"run{number}") if isinstance(data, dict) else path)
        runs.append(_labelled(data, f"{path}:{number}: not a run summary"))
    if not runs:
        raise UserError(f"{path}: no runs")
    return runs


# (key, suffix, whether it changes what every run measures): the retrieval layer is the layer every run's XSR P@1
# is read from (naive's too); the memory batch only exists where there is a memory
VARIED = (("memory_batch_size", "+batch{}", False), ("xsr_layer", "+layer{}", True))


def _mark_varied(runs: list[dict]) -> list[dict]:
    """Knobs without a label of their own (memory batch, retrieval layer) join the label of the runs whose
    value differs from the most common one (a knob sweep), not otherwise. A run read at another layer also
    gets its own backbone row (`backbone_label`): the backbone's P@1 differs by layer."""
    for key, suffix, everywhere in VARIED:
        marked = [r for r in runs if everywhere or r["config"]["method"]["memory"]]
        values = [r["config"]["method"].get(key) for r in marked]
        if len(set(values)) < 2:
            continue
        usual = max(set(values), key=values.count)
        for run in marked:
            value = run["config"]["method"].get(key)
            if value != usual:
                run["label"] += suffix.format(value)
                if everywhere:
                    run["backbone_label"] = run.get("backbone_label", "backbone") + suffix.format(value)
    return runs


def _labelled(data, where: str) -> dict:
    """The run with its table label; a run without the fields the tables read is the user's error."""
    try:
        data["label"] = label(data)
        for section, key in (("run", "task"), ("test", "per_language"), ("test", "average")):
            data[section][key]  # noqa: B018 (the tables read these)
    except (KeyError, TypeError) as err:
        raise UserError(f"{where} (missing {err})") from None
    return data


def label(results: dict) -> str:
    """Method name as the tables show it: naive, frozen, mtf-both, gem-xsr, gem-both+per-language, ..."""
    config = results["config"]["method"]
    name = config["name"]
    memory = config["memory"]
    if memory:
        name += "-" + ("both" if set(memory) == {"mlm", "xsr"} else memory[0])
        if "mlm" in memory and config["mlm_languages"] == "en":
            name += "(en)"
    weights = config.get("mtf_weights") or {}
    if config["name"] == "mtf" and any(weights.get(task, 1.0) != 1.0 for task in memory):
        name += "+w" + "/".join(f"{weights.get(task, 1.0):g}" for task in memory)  # the memory losses' weights
    gem = config["gem"]
    if config["name"] == "gem":
        name += "".join(s for s, on in (("+per-language", gem["per_language"]), ("+per-layer", gem["per_layer"]),
                                         (f"+R{gem['refresh_every']}", gem["refresh_every"] > 1),
                                         (f"+gamma{gem['memory_strength']:g}", gem["memory_strength"] > 0)) if on)
        if gem.get("target", "gradient") != "gradient":
            name += f"+{gem['target']}"
        if gem.get("anchor", "previous") != "previous":
            name += f"+anchor-{gem['anchor']}"
    return name


def method_order(name: str) -> tuple:
    """Sort key for method labels: the order of ORDER (backbone, naive, GEM, ...), then by name."""
    base = name.split("+")[0].replace("(en)", "")
    return (ORDER.index(base) if base in ORDER else len(ORDER), name)


def mean_std(values: list[float]) -> tuple[float, float, int]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0, len(values)


def welch(a: list[float], b: list[float]) -> tuple[float, float]:
    """Welch's t statistic and two-sided p-value (nan when either side has fewer than two seeds)."""
    from scipy import stats

    if len(a) < 2 or len(b) < 2 or statistics.variance(a) + statistics.variance(b) == 0:
        return float("nan"), float("nan")  # no spread to test against (e.g. identical seeds)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # near-identical seeds: scipy warns, the numbers stand
        result = stats.ttest_ind(a, b, equal_var=False)
    return float(result.statistic), float(result.pvalue)


def build_report(runs: list[dict]) -> dict:
    """All tables as plain data: {table: {"columns": [...], "rows": [[...]]}} plus t-tests."""
    by_task: dict[str, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for r in runs:
        by_task[r["run"]["task"]][r["label"]].append(r)
    report = {"tables": {}, "ttests": []}
    for task, methods in sorted(by_task.items()):
        first = next(iter(methods.values()))[0]
        langs = _in_task_order(first, first["test"]["per_language"])
        columns = ["method", "seeds", *langs, "avg"]
        rows = []
        for name in sorted(methods, key=method_order):
            group = methods[name]
            cells = [name, len(group)]
            for lang in langs:
                cells.append(mean_std([g["test"]["per_language"][lang]["score"] for g in group if lang in g["test"]["per_language"]]))
            cells.append(mean_std([g["test"]["average"] for g in group]))
            rows.append(cells)
        report["tables"][f"table2_{task}"] = {"title": f"Table 2: zero-shot {task.upper()} (test; avg excludes the source)",
                                              "columns": columns, "rows": rows}
        for name in sorted(methods, key=method_order):
            for baseline in BASELINES:
                if baseline == name or baseline not in methods:
                    continue
                a = [g["test"]["average"] for g in methods[name]]
                b = [g["test"]["average"] for g in methods[baseline]]
                t, p = welch(a, b)
                report["ttests"].append({"task": task, "method": name, "baseline": baseline, "mean": statistics.fmean(a),
                                         "baseline_mean": statistics.fmean(b), "t": t, "p": p,
                                         "significant": bool(p == p and p < ALPHA and statistics.fmean(a) > statistics.fmean(b))})
    for task, methods in sorted(by_task.items()):
        report["tables"][f"seeds_{task}"] = _over_seeds(task, methods)
    source_task = "pos" if "pos" in by_task else next(iter(by_task))
    report["tables"]["table1"] = _table1(by_task[source_task], source_task)
    for key, table in (("ablation", _ablation(by_task)), ("cost", _cost(by_task))):
        if table["rows"]:  # no MLM runs (an encoder without an MLM head): no ablation
            report["tables"][key] = table
    return report


def _over_seeds(task: str, methods: dict[str, list[dict]]) -> dict:
    """Each method on one row, every number its seeds measured: memory tasks after fine-tuning (XSR P@1 per
    pair, MLM perplexity per language), test score per language (source first) and the average, then per
    seed the steps GEM projected and the last dev evaluation's held-out memory loss, with the backbone's loss
    on the same held-out batch in brackets where the run logged it (runs on different batches differ there)."""
    runs = [g for group in methods.values() for g in group]
    first = runs[0]
    after = [r["after"] for r in runs if r.get("after")]
    pairs = _in_task_order(first, dict.fromkeys(p for a in after for p in a.get("xsr") or {}))
    ppl_langs = _in_task_order(first, dict.fromkeys(lang for a in after for lang in a.get("mlm_perplexity") or {}))
    langs = _in_task_order(first, dict.fromkeys(lang for r in runs for lang in r["test"]["per_language"]))
    columns = ["method", "seeds", *[f"P@1 {p}" for p in pairs], *[f"ppl {lang}" for lang in ppl_langs],
               *[f"{task} {lang}" for lang in langs], f"{task} avg", "steps projected", "held-out memory loss"]

    def stat(values):
        return mean_std(values) if values else None

    rows = []
    for name in sorted(methods, key=method_order):
        group = sorted(methods[name], key=lambda r: r["run"].get("seed", 0))
        done = [r["after"] for r in group if r.get("after")]
        row = [name, f"{len(group)} ({', '.join(str(r['run'].get('seed', '?')) for r in group)})"]
        row += [stat([a["xsr"][p]["p@1"] for a in done if p in (a.get("xsr") or {})]) for p in pairs]
        row += [stat([a["mlm_perplexity"][lang] for a in done if lang in (a.get("mlm_perplexity") or {})])
                for lang in ppl_langs]
        row += [stat([r["test"]["per_language"][lang]["score"] for r in group if lang in r["test"]["per_language"]])
                for lang in langs]
        row += [stat([r["test"]["average"] for r in group]), _per_seed(group, _steps_projected),
                _per_seed(group, _held_out)]
        rows.append(row)
    return {"title": f"Over seeds, {task.upper()}: memory tasks after fine-tuning, test scores, and per seed the "
                     "steps GEM projected and the held-out memory loss (backbone's on the same batch)",
            "columns": columns, "rows": rows}


def _per_seed(group: list[dict], cell) -> str:
    cells = [cell(r) for r in group]
    return " / ".join(c or "-" for c in cells) if any(cells) else "-"


def _steps_projected(run: dict) -> str | None:
    train = run.get("train") or {}
    share, steps = train.get("gem_violated_share"), train.get("steps")
    return None if share is None or not steps else str(round(share * steps))


def held_out_losses(run: dict) -> list[tuple[str, float, float | None]]:
    """(constraint, its held-out memory loss at the last dev evaluation, the backbone's on the same held-out
    batch or None where the run did not log it): runs on different batches compare only by the latter."""
    held = summary(run).get("memory_loss") or {}
    backbone = held.get("backbone") or {}
    return [(key, loss, backbone.get(key)) for key, loss in (held.get("final") or {}).items()]


def _held_out(run: dict) -> str | None:
    """The first held-out memory loss of the run (a per-language run names its language), the backbone's
    on the same batch in brackets: `fr 0.06 (1.56)`."""
    losses = held_out_losses(run)
    if not losses:
        return None
    key, loss, backbone = losses[0]
    named = key.split(".", 1)[1] + " " if "." in key else ""
    return f"{named}{loss:.2f}" + (f" ({backbone:.2f})" if backbone is not None else "")


def _cost(by_task) -> dict:
    """What each method cost: wall seconds per step (evaluations included), share of steps GEM projected,
    peak RSS of the largest rank."""
    rows = []
    for task, methods in sorted(by_task.items()):
        for name in sorted(methods, key=method_order):
            train = [g["train"] for g in methods[name] if g.get("train") and g["train"].get("steps")]
            if not train:
                continue
            shares = [100 * t["gem_violated_share"] for t in train if t.get("gem_violated_share") is not None]
            rss = [max(t["peak_rss_mb"]) for t in train if t.get("peak_rss_mb")]
            rows.append([task, name, len(train), mean_std([t["seconds"] / t["steps"] for t in train]),
                         mean_std(shares) if shares else None, mean_std(rss) if rss else None])
    return {"title": "Cost: wall seconds per step (dev evaluations included), steps projected (%), peak RSS (MB)",
            "columns": ["task", "method", "seeds", "s/step", "projected %", "peak RSS MB"], "rows": rows}


def _in_task_order(run: dict, languages) -> list[str]:
    """The languages as the run's task lists them (source, then targets), others after in their own order: a
    summary read back from runs.jsonl may have had its keys sorted."""
    task = run["config"].get("task", {})
    order = [task.get("source"), *task.get("targets", [])]
    return sorted(languages, key=lambda lang: order.index(lang) if lang in order else len(order))


def _table1(methods: dict[str, list[dict]], task: str) -> dict:
    first = next(g for group in methods.values() for g in group)
    langs = _in_task_order(first, first["backbone"]["mlm_perplexity"]) if first.get("backbone") else []
    pairs = _in_task_order(first, first["backbone"]["xsr"]) if first.get("backbone") else []
    columns = ["model", "seeds", *[f"ppl {lang}" for lang in langs], *[f"{p}-en P@{k}" for p in pairs for k in (1, 5, 10)]]

    def cells(name, memories):
        row = [name, len(memories)]
        row += [mean_std([m["mlm_perplexity"][lang] for m in memories]) for lang in langs]
        row += [mean_std([m["xsr"][p][f"p@{k}"] for m in memories]) for p in pairs for k in (1, 5, 10)]
        return row

    backbones = defaultdict(list)  # one row per retrieval layer: the backbone's P@1 is a property of the layer
    for g in (g for group in methods.values() for g in group if g.get("backbone")):
        backbones[g.get("backbone_label", "backbone")].append(g["backbone"])
    rows = [cells(name, backbones[name]) for name in sorted(backbones)]
    for name in sorted(methods, key=method_order):
        after = [g["after"] for g in methods[name] if g.get("after")]
        if after:
            rows.append(cells(name, after))
    return {"title": f"Table 1: memory tasks after fine-tuning on {task.upper()} (backbone first)",
            "columns": columns, "rows": rows}


def _ablation(by_task) -> dict:
    columns = ["method", "MLM", "seeds", "mean ppl", *[f"{task} avg" for task in sorted(by_task)]]
    rows = []
    pairs = defaultdict(dict)
    for task, methods in by_task.items():
        for name, group in methods.items():
            if "mlm" in group[0]["config"]["method"]["memory"]:
                pairs[name.replace("(en)", "")][(task, group[0]["config"]["method"]["mlm_languages"])] = group
    for base in sorted(pairs, key=method_order):
        for which in ("en", "all"):
            groups = {task: g for (task, lang), g in pairs[base].items() if lang == which}
            if not groups:
                continue
            # perplexity from the task whose runs measured it (NER sweeps often skip the memory metrics)
            any_group = next((g for g in groups.values() if any(r.get("after") for r in g)), next(iter(groups.values())))
            ppl = [statistics.fmean(g["after"]["mlm_perplexity"].values()) for g in any_group if g.get("after")]
            row = [base, f"MLM({which})", len(any_group), mean_std(ppl) if ppl else None]
            row += [mean_std([g["test"]["average"] for g in groups[task]]) if task in groups else None for task in sorted(by_task)]
            rows.append(row)
    return {"title": "Ablation: MLM(en) vs MLM(all)", "columns": columns, "rows": rows}


def format_cell(cell, latex: bool = False) -> str:
    if cell is None:
        return "-"
    if isinstance(cell, tuple):
        mean, std, n = cell
        if n < 2:  # one seed has no spread to show
            return f"{mean:.2f}"
        return f"{mean:.2f} $\\pm$ {std:.2f}" if latex else f"{mean:.2f} ± {std:.2f}"
    return str(cell)


def write_outputs(report: dict, out: Path) -> None:
    beats_all = beating_every_baseline(report)
    markdown, latex = ["# distgem report", ""], []
    for key, table in report["tables"].items():
        markdown += [f"## {table['title']}", "", *table_markdown(key, table, beats_all), ""]
        _write_csv(out / f"{key}.csv", table)
        if key.startswith("seeds_"):  # on its own too, for a results page's discussion to include
            (out / f"{key}.md").write_text("\n".join(table_markdown(key, table, beats_all)) + "\n")
        latex += [f"% {table['title']}", "\\begin{tabular}{" + "l" * len(table["columns"]) + "}", "\\hline",
                  " & ".join(table["columns"]).replace("_", "\\_").replace("@", "@") + " \\\\", "\\hline"]
        latex += [" & ".join(format_cell(c, latex=True) for c in row) + " \\\\" for row in table["rows"]]
        latex += ["\\hline", "\\end{tabular}", ""]
    markdown += ["† better than every baseline (Welch t-test over seeds, p < 0.01).", "",
                 "## t-tests (test average over target languages)", "",
                 "| task | method | baseline | mean | baseline mean | t | p | significant |", "|---|---|---|---|---|---|---|---|"]
    markdown += [f"| {t['task']} | {t['method']} | {t['baseline']} | {t['mean']:.2f} | {t['baseline_mean']:.2f} | "
                 f"{format_stat(t['t'], '.2f')} | {format_stat(t['p'], '.2g')} | {'yes' if t['significant'] else 'no'} |"
                 for t in report["ttests"]]
    if any(t["p"] != t["p"] for t in report["ttests"]):
        markdown += ["", "n/a: not testable, a side has fewer than two seeds or no spread between its seeds."]
    with (out / "ttests.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["task", "method", "baseline", "mean", "baseline_mean", "t", "p", "significant"])
        writer.writeheader()
        writer.writerows(report["ttests"])
    (out / "report.md").write_text("\n".join(markdown) + "\n")
    (out / "tables.tex").write_text("\n".join(latex))
    (out / "report.json").write_text(json.dumps(report, indent=1, default=list))


def format_stat(value: float, spec: str) -> str:
    return "n/a" if value != value else format(value, spec)  # nan: too few seeds to test


def beating_every_baseline(report: dict) -> set[tuple[str, str]]:
    """(task, method) pairs better than every baseline they were tested against (p < ALPHA)."""
    marks = {(t["task"], t["method"]) for t in report["ttests"]}
    return {key for key in marks if all(t["significant"] for t in report["ttests"] if (t["task"], t["method"]) == key)}


def table_markdown(key: str, table: dict, beats_all: set, keep=lambda column: True) -> list[str]:
    """A table as Markdown lines; a Table 2 row better than every baseline gets a dagger on its average."""
    task = key.split("_", 1)[1] if key.startswith("table2_") else None
    kept = [i for i, column in enumerate(table["columns"]) if keep(column)]
    lines = ["| " + " | ".join(table["columns"][i] for i in kept) + " |", "|" + "---|" * len(kept)]
    for row in table["rows"]:
        cells = [format_cell(c) for c in row]
        if task and (task, row[0]) in beats_all:
            cells[-1] += " †"
        lines.append("| " + " | ".join(cells[i] for i in kept) + " |")
    return lines


def _write_csv(path: Path, table: dict) -> None:
    """One column per plain cell, a _mean and a _std column per statistic."""
    stat = [any(isinstance(row[i], tuple) for row in table["rows"]) for i in range(len(table["columns"]))]
    header = []
    for name, is_stat in zip(table["columns"], stat):
        header += [f"{name}_mean", f"{name}_std"] if is_stat else [name]
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for row in table["rows"]:
            cells = []
            for cell, is_stat in zip(row, stat):
                cells += ([cell[0], cell[1]] if isinstance(cell, tuple) else ["", ""]) if is_stat else [cell]
            writer.writerow(cells)
