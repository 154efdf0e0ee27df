"""The paper's tables from runs, as plain data, then Markdown, CSV and LaTeX.

Table 1 (MLM perplexity per language, XSR P@1/5/10 per pair after fine-tuning on the source task,
backbone row first), Table 2 (zero-shot POS and NER per language and their average without the
source), the MLM(en) vs MLM(all) ablation, the cost of each method, and per task an "over seeds" table
(each method's memory metrics, test scores, steps projected and held-out memory loss on one row, also
written alone as seeds_TASK.md); mean and standard deviation over seeds; Welch t-tests of
every method against every baseline (significance: p < 0.01); Markdown, CSV and LaTeX; PNG plots
(per-language bars; forgetting curves read from the TensorBoard event files).
"""

from __future__ import annotations

import csv
import json
import statistics
from collections import defaultdict
from pathlib import Path

from distgem.report.runs import ALPHA, BASELINES, held_out_losses, mean_std, method_order, welch


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
                cells.append(
                    mean_std(
                        [g["test"]["per_language"][lang]["score"] for g in group if lang in g["test"]["per_language"]]
                    )
                )
            cells.append(mean_std([g["test"]["average"] for g in group]))
            rows.append(cells)
        report["tables"][f"table2_{task}"] = {
            "title": f"Table 2: zero-shot {task.upper()} (test; avg excludes the source)",
            "columns": columns,
            "rows": rows,
        }
        for name in sorted(methods, key=method_order):
            for baseline in BASELINES:
                if baseline == name or baseline not in methods:
                    continue
                a = [g["test"]["average"] for g in methods[name]]
                b = [g["test"]["average"] for g in methods[baseline]]
                t, p = welch(a, b)
                report["ttests"].append(
                    {
                        "task": task,
                        "method": name,
                        "baseline": baseline,
                        "mean": statistics.fmean(a),
                        "baseline_mean": statistics.fmean(b),
                        "t": t,
                        "p": p,
                        "significant": bool(p == p and p < ALPHA and statistics.fmean(a) > statistics.fmean(b)),
                    }
                )
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
    columns = [
        "method",
        "seeds",
        *[f"P@1 {p}" for p in pairs],
        *[f"ppl {lang}" for lang in ppl_langs],
        *[f"{task} {lang}" for lang in langs],
        f"{task} avg",
        "steps projected",
        "held-out memory loss",
    ]

    def stat(values):
        return mean_std(values) if values else None

    rows = []
    for name in sorted(methods, key=method_order):
        group = sorted(methods[name], key=lambda r: r["run"].get("seed", 0))
        done = [r["after"] for r in group if r.get("after")]
        row = [name, f"{len(group)} ({', '.join(str(r['run'].get('seed', '?')) for r in group)})"]
        row += [stat([a["xsr"][p]["p@1"] for a in done if p in (a.get("xsr") or {})]) for p in pairs]
        row += [
            stat([a["mlm_perplexity"][lang] for a in done if lang in (a.get("mlm_perplexity") or {})])
            for lang in ppl_langs
        ]
        row += [
            stat([r["test"]["per_language"][lang]["score"] for r in group if lang in r["test"]["per_language"]])
            for lang in langs
        ]
        row += [
            stat([r["test"]["average"] for r in group]),
            _per_seed(group, _steps_projected),
            _per_seed(group, _held_out),
        ]
        rows.append(row)
    return {
        "title": f"Over seeds, {task.upper()}: memory tasks after fine-tuning, test scores, and per seed the "
        "steps GEM projected and the held-out memory loss (backbone's on the same batch)",
        "columns": columns,
        "rows": rows,
    }


def _per_seed(group: list[dict], cell) -> str:
    cells = [cell(r) for r in group]
    return " / ".join(c or "-" for c in cells) if any(cells) else "-"


def _steps_projected(run: dict) -> str | None:
    train = run.get("train") or {}
    share, steps = train.get("gem_violated_share"), train.get("steps")
    return None if share is None or not steps else str(round(share * steps))


def _held_out(run: dict) -> str | None:
    """Every constraint's held-out memory loss, the backbone's on the same batch in brackets, named where the run
    has more than one: `0.06 (1.56)`, `mlm 2.10 (2.05), xsr 0.50 (0.48)`, `xsr.fr 0.06 (1.56), ...`."""
    losses = held_out_losses(run)
    named = len(losses) > 1
    return (
        ", ".join(
            f"{key + ' ' if named else ''}{loss:.2f}" + (f" ({backbone:.2f})" if backbone is not None else "")
            for key, loss, backbone in losses
        )
        or None
    )


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
            rows.append(
                [
                    task,
                    name,
                    len(train),
                    mean_std([t["seconds"] / t["steps"] for t in train]),
                    mean_std(shares) if shares else None,
                    mean_std(rss) if rss else None,
                ]
            )
    return {
        "title": "Cost: wall seconds per step (dev evaluations included), steps projected (%), peak RSS (MB)",
        "columns": ["task", "method", "seeds", "s/step", "projected %", "peak RSS MB"],
        "rows": rows,
    }


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
    columns = [
        "model",
        "seeds",
        *[f"ppl {lang}" for lang in langs],
        *[f"{p}-en P@{k}" for p in pairs for k in (1, 5, 10)],
    ]

    def cells(name, memories):
        row = [name, len(memories)]
        row += [mean_std([m["mlm_perplexity"][lang] for m in memories]) for lang in langs]
        row += [mean_std([m["xsr"][p][f"p@{k}"] for m in memories]) for p in pairs for k in (1, 5, 10)]
        return row

    # one row per retrieval layer (the backbone's P@1 is a property of the layer), and one evaluation per distinct
    # result: every run of a backbone evaluates the same model, so its runs are not seeds
    backbones: dict[str, dict[str, dict]] = defaultdict(dict)
    for g in (g for group in methods.values() for g in group if g.get("backbone")):
        scores = {key: g["backbone"][key] for key in ("mlm_perplexity", "xsr")}
        backbones[g.get("backbone_label", "backbone")][json.dumps(scores, sort_keys=True)] = scores
    rows = [cells(name, list(backbones[name].values())) for name in sorted(backbones)]
    for name in sorted(methods, key=method_order):
        after = [g["after"] for g in methods[name] if g.get("after")]
        if after:
            rows.append(cells(name, after))
    return {
        "title": f"Table 1: memory tasks after fine-tuning on {task.upper()} (backbone first)",
        "columns": columns,
        "rows": rows,
    }


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
            any_group = next(
                (g for g in groups.values() if any(r.get("after") for r in g)), next(iter(groups.values()))
            )
            ppl = [statistics.fmean(g["after"]["mlm_perplexity"].values()) for g in any_group if g.get("after")]
            row = [base, f"MLM({which})", len(any_group), mean_std(ppl) if ppl else None]
            row += [
                mean_std([g["test"]["average"] for g in groups[task]]) if task in groups else None
                for task in sorted(by_task)
            ]
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
        latex += [
            f"% {table['title']}",
            "\\begin{tabular}{" + "l" * len(table["columns"]) + "}",
            "\\hline",
            " & ".join(table["columns"]).replace("_", "\\_").replace("@", "@") + " \\\\",
            "\\hline",
        ]
        latex += [" & ".join(format_cell(c, latex=True) for c in row) + " \\\\" for row in table["rows"]]
        latex += ["\\hline", "\\end{tabular}", ""]
    if beats_all:
        markdown += ["† better than every baseline (Welch t-test over seeds, p < 0.01).", ""]
    if report.get("left_out"):
        markdown += ["Left out (their numbers are not reported): " + "; ".join(report["left_out"]) + ".", ""]
    markdown += [
        "## t-tests (test average over target languages)",
        "",
        "| task | method | baseline | mean | baseline mean | t | p | significant |",
        "|---|---|---|---|---|---|---|---|",
    ]
    markdown += [
        f"| {t['task']} | {t['method']} | {t['baseline']} | {t['mean']:.2f} | {t['baseline_mean']:.2f} | "
        f"{format_stat(t['t'], '.2f')} | {format_stat(t['p'], '.2g')} | {'yes' if t['significant'] else 'no'} |"
        for t in report["ttests"]
    ]
    if any(t["p"] != t["p"] for t in report["ttests"]):
        markdown += ["", "n/a: not testable, a side has fewer than two seeds or no spread between its seeds."]
    with (out / "ttests.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(
            handle, fieldnames=["task", "method", "baseline", "mean", "baseline_mean", "t", "p", "significant"]
        )
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
