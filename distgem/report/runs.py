"""Runs as the report reads them: results.json directories and runs.jsonl summaries, labels, order, statistics.

The vocabulary every part of the report shares (tables, plots, claims, compare): one run per run id,
each with its table label (`gem-xsr+gamma0.1`), the methods' order, and Welch's t-test over seeds.
"""

from __future__ import annotations

import json
import statistics
import warnings
from pathlib import Path

from distgem.errors import UserError

BASELINES = ("naive", "frozen", "mtf-mlm", "mtf-xsr", "mtf-both")
ORDER = ("naive", "frozen", "mtf-mlm", "mtf-xsr", "mtf-both", "gem-mlm", "gem-xsr", "gem-both")
ALPHA = 0.01


SUMMARY_KEYS = ("status", "nonfinite", "run", "test", "backbone", "after", "train", "config", "versions")


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


def problem(run: dict) -> str | None:
    """Why a run's numbers must not be reported (None for a sound run): it diverged, or some of its metrics
    were computed from non-finite numbers (results.json lists them under "nonfinite", written as null)."""
    if (run.get("status") or "ok") != "ok":
        return f"{run.get('status')} at step {(run.get('train') or {}).get('steps')}"
    bad = [key for key in run.get("nonfinite") or [] if key.startswith(("test.", "after."))]
    return f"non-finite {', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''}" if bad else None


def split_sound(runs: list[dict]) -> tuple[list[dict], list[str]]:
    """(the runs whose numbers can be reported, a line for each one left out and why)."""
    sound, left_out = [], []
    for run in runs:
        why = problem(run)
        if why:
            left_out.append(f"{Path(run['run_dir']).name}: {why}")
        else:
            sound.append(run)
    return sound, left_out


def _labelled(data, where: str) -> dict:
    """The run with its table label; a run without the fields the tables read is the user's error."""
    try:
        data["label"] = label(data)
        required = (
            (("run", "task"),)
            if (data.get("status") or "ok") != "ok"
            else (("run", "task"), ("test", "per_language"), ("test", "average"))
        )
        for section, key in required:
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
    if config["name"] == "l2sp" and config.get("l2sp_strength", 0.1) != 0.1:  # each strength is its own setting
        name += f"+alpha{config['l2sp_strength']:g}"
    if config["name"] == "lora" and config.get("lora_rank", 8) != 8:
        name += f"+r{config['lora_rank']}"
    gem = config["gem"]
    if config["name"] == "gem":
        name += "".join(
            s
            for s, on in (
                ("+per-language", gem["per_language"]),
                ("+per-layer", gem["per_layer"]),
                (f"+R{gem['refresh_every']}", gem["refresh_every"] > 1),
                (f"+gamma{gem['memory_strength']:g}", gem["memory_strength"] > 0),
            )
            if on
        )
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


def held_out_losses(run: dict) -> list[tuple[str, float, float | None]]:
    """(constraint, its held-out memory loss at the last dev evaluation, the backbone's on the same held-out
    batch or None where the run did not log it): runs on different batches compare only by the latter."""
    held = summary(run).get("memory_loss") or {}
    backbone = held.get("backbone") or {}
    return [(key, loss, backbone.get(key)) for key, loss in (held.get("final") or {}).items()]
