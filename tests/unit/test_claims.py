"""The paper's claims checked on runs built so that each verdict is known, and the results page regenerated
from the report's runs.jsonl summary."""

from __future__ import annotations

import json
import random

import pytest

from distgem.cli import main
from distgem.report.claims import FAR, evaluate
from distgem.report.runs import label

LANGS = ("en", "es", "fr")
# method -> (zero-shot average, MLM perplexity after, XSR P@1 after); the seeds add small noise
TRUTH = {
    ("naive", ()): (60.0, 30.0, 20.0),
    ("frozen", ()): (58.0, 25.0, 30.0),
    ("mtf", ("mlm",)): (55.0, 12.0, 22.0),
    ("mtf", ("xsr",)): (62.0, 28.0, 70.0),
    ("mtf", ("mlm", "xsr")): (59.0, 13.0, 65.0),
    ("gem", ("mlm",)): (61.0, 15.0, 21.0),
    ("gem", ("xsr",)): (61.5, 29.0, 24.0),  # better than naive, but by less than FAR points
    ("gem", ("mlm", "xsr")): (70.0, 16.0, 40.0),  # beats every baseline
}


def _run(method: str, memory: tuple, seed: int, task: str = "pos", mlm_languages: str = "all") -> dict:
    rng = random.Random(f"{method}{memory}{seed}{task}{mlm_languages}")
    score, ppl, p1 = TRUTH[method, memory]
    if mlm_languages == "en":
        ppl, score = ppl * 1.5, score + 0.1  # MLM(en): higher perplexity, the same zero-shot
    noise = lambda: rng.uniform(-0.3, 0.3)  # noqa: E731
    per = {lang: {"score": score + noise()} for lang in LANGS}
    run = {
        "run": {"task": task, "method": method, "seed": seed, "world_size": 1},
        "test": {"per_language": per, "average": (per["es"]["score"] + per["fr"]["score"]) / 2},
        "backbone": {
            "mlm_perplexity": {lang: 10.0 for lang in LANGS},
            "xsr": {lang: {"p@1": 80.0, "p@5": 90.0, "p@10": 95.0} for lang in ("es", "fr")},
        },
        "after": {
            "mlm_perplexity": {lang: ppl + noise() for lang in LANGS},
            "xsr": {lang: {"p@1": p1 + noise(), "p@5": 90.0, "p@10": 95.0} for lang in ("es", "fr")},
        },
        "train": {"seconds": 10.0},
        "config": {
            "method": {
                "name": method,
                "memory": list(memory),
                "mlm_languages": mlm_languages,
                "memory_batch_size": 16,
                "gem": {"per_language": False, "per_layer": False, "refresh_every": 1, "memory_strength": 0.0},
            },
            "model": {"backbone": "embedded:small"},
            "data": {"root": "embedded:small"},
            "task": {"targets": ["es", "fr"]},
            "train": {"steps": 10, "lr": 1e-4, "batch_size": 16},
            "eval": {"every": 5},
        },
        "versions": {"torch": "x", "deepspeed": "y", "transformers": "z"},
    }
    run["label"] = label(run)
    return run


def _runs(seeds: int = 4) -> list[dict]:
    runs = [_run(m, mem, s) for (m, mem) in TRUTH for s in range(seeds)]
    runs += [_run(m, ("mlm",), s, mlm_languages="en") for m in ("gem", "mtf") for s in range(seeds)]
    return runs


def test_each_claims_verdict_follows_the_runs():
    claims = {c.title.split(" (")[0]: c for c in evaluate(_runs())}
    assert claims["GEM preserves MLM better than naive and frozen"].verdict == "reproduces"
    xsr = claims["GEM w/ XSR keeps XSR far better than naive"]
    assert xsr.verdict == "direction only" and xsr.comparisons[0].p < 0.01  # significant, but not FAR points
    assert 0 < xsr.comparisons[0].mean - xsr.comparisons[0].other_mean < FAR
    beats = claims["GEM beats every baseline on zero-shot POS"]
    assert beats.verdict == "reproduces" and "gem-both" in beats.note and "gem-mlm" not in beats.note
    assert {c.other for c in beats.comparisons} == {"naive", "frozen", "mtf-mlm", "mtf-xsr", "mtf-both"}
    assert claims["MTF w/ MLM hurts zero-shot transfer"].verdict == "reproduces"
    assert claims["MLM(all) lowers perplexity but does not raise POS"].verdict == "reproduces"


def test_a_claim_the_runs_contradict_does_not_reproduce():
    runs = [r for r in _runs() if r["label"] != "gem-both"]  # without its winner, GEM beats no baseline set
    for r in runs:
        if r["label"] == "gem-mlm":
            r["after"]["mlm_perplexity"] = {lang: 40.0 + r["run"]["seed"] for lang in LANGS}  # worse than naive
    claims = {c.title.split(" (")[0]: c for c in evaluate(runs)}
    assert claims["GEM preserves MLM better than naive and frozen"].verdict == "does not reproduce"
    assert claims["GEM beats every baseline on zero-shot POS"].verdict in ("partly", "does not reproduce")
    assert "none" in claims["GEM beats every baseline on zero-shot POS"].note


def test_results_page_regenerates_from_the_summary(tmp_path):
    root = tmp_path / "runs"
    for i, run in enumerate(_runs(seeds=3)):
        directory = root / f"run{i}"
        directory.mkdir(parents=True)
        (directory / "results.json").write_text(json.dumps({k: v for k, v in run.items() if k != "label"}))
    assert main(["report", str(root), "--out", str(tmp_path / "a"), "--no-plots"]) == 0
    summary = tmp_path / "a" / "runs.jsonl"
    assert len(summary.read_text().splitlines()) == 30
    discussion = tmp_path / "discussion.md"
    discussion.write_text("## Discussion\n\nHand-written.\n")
    page = tmp_path / "docs" / "RESULTS.md"
    page.parent.mkdir()
    assert (
        main(
            [
                "report",
                str(summary),
                "--out",
                str(tmp_path / "b"),
                "--no-plots",
                "--results-md",
                str(page),
                "--discussion",
                str(discussion),
            ]
        )
        == 0
    )
    first, again = (json.loads((tmp_path / d / "report.json").read_text()) for d in ("a", "b"))
    assert first == again  # the summary carries everything the tables need
    text = page.read_text()
    assert "GEM beats every baseline on zero-shot POS (average, p < 0.01)**: reproduces" in text
    assert "Hand-written." in text and "../b/table1.csv" in text and "30 runs" in text


def test_a_discussion_includes_a_generated_table_and_a_missing_one_is_a_one_line_error(tmp_path, capsys):
    runs = tmp_path / "runs"
    for i, run in enumerate(_runs(seeds=3)):
        (runs / f"run{i}").mkdir(parents=True)
        (runs / f"run{i}" / "results.json").write_text(json.dumps({k: v for k, v in run.items() if k != "label"}))
    assert main(["report", str(runs), "--out", str(tmp_path / "out"), "--no-plots"]) == 0
    discussion = tmp_path / "discussion.md"
    discussion.write_text("## Discussion\n\nOver seeds:\n\n<!-- include: out/seeds_pos.md -->\n\nAfter.\n")
    page = tmp_path / "RESULTS.md"
    command = ["report", str(runs), "--out", str(tmp_path / "out"), "--no-plots"]
    command += ["--results-md", str(page), "--discussion", str(discussion)]
    assert main(command) == 0
    text = page.read_text()
    table = (tmp_path / "out" / "seeds_pos.md").read_text().rstrip()
    assert "<!-- include: out/seeds_pos.md -->\n" + table + "\n\nAfter." in text
    assert text.count("| gem-both | 3 (0, 1, 2) |") == 1  # included once, not also among the page's own tables
    discussion.write_text("Hand-written.\n<!-- include: gone/seeds_pos.md -->\n")
    assert main(command) == 2
    error = capsys.readouterr().err.strip()
    assert f"{discussion}:2: include {tmp_path / 'gone' / 'seeds_pos.md'}: no such file" in error
    assert len(error.splitlines()) == 1


def test_a_broken_summary_line_is_a_one_line_error(tmp_path, capsys):
    good = {k: v for k, v in _run("naive", (), 0).items() if k != "label"}
    bad = tmp_path / "runs.jsonl"
    bad.write_text(json.dumps(good) + '\n{"run": {"task": "pos"}, "test": {}, "config": {}}\n')
    assert main(["report", str(bad), "--out", str(tmp_path / "o")]) == 2
    error = capsys.readouterr().err
    assert f"{bad}:2: not a run summary (missing 'method')" in error and len(error.strip().splitlines()) == 1


def test_ablation_takes_perplexity_from_the_task_that_measured_it():
    """A NER sweep without memory metrics listed first must not blank the ablation's perplexity."""
    from distgem.report.tables import _ablation

    by_task = {"ner": {}, "pos": {}}
    for task in ("ner", "pos"):
        for lang in ("en", "all"):
            group = [_run("gem", ("mlm",), s, task=task, mlm_languages=lang) for s in range(3)]
            if task == "ner":
                for r in group:
                    r["after"] = None
            by_task[task][group[0]["label"]] = group
    rows = {(r[0], r[1]): r for r in _ablation(by_task)["rows"]}
    ppl_en, ppl_all = rows["gem-mlm", "MLM(en)"][3], rows["gem-mlm", "MLM(all)"][3]
    assert ppl_en is not None and ppl_all is not None
    assert ppl_en[0] == pytest.approx(1.5 * ppl_all[0], rel=0.05)  # TRUTH: MLM(en) has 1.5x the perplexity


def test_claims_are_judged_for_each_gem_setting_side_by_side():
    """GEM's rows at memory_strength 0.5 (label suffix +gamma0.5) are judged on their own: here gem-xsr at 0.5 keeps
    retrieval far better than naive while gem-xsr at 0 is better by less than FAR points, and the page shows both."""
    from distgem.report.page import claims_side_by_side

    runs = _runs()
    for seed in range(4):
        for memory, p1 in ((("xsr",), 75.0), (("mlm", "xsr"), 74.0), (("mlm",), 21.0)):
            run = _run("gem", memory, seed)
            run["config"]["method"]["gem"]["memory_strength"] = 0.5
            run["after"]["xsr"] = {lang: {"p@1": p1 + seed / 10, "p@5": 90.0, "p@10": 95.0} for lang in ("es", "fr")}
            run["label"] = label(run)
            runs.append(run)
        run = _run("gem", ("mlm",), seed, mlm_languages="en")
        run["config"]["method"]["gem"]["memory_strength"] = 0.5
        run["label"] = label(run)
        runs.append(run)
    retrieval_claim = lambda claims: next(c for c in claims if c.title.startswith("GEM w/ XSR keeps XSR"))  # noqa: E731
    assert retrieval_claim(evaluate(runs)).verdict == "direction only"  # better, by less than FAR points
    at_half = retrieval_claim(evaluate(runs, "+gamma0.5"))
    assert at_half.verdict == "reproduces" and at_half.comparisons[0].method == "gem-xsr+gamma0.5"
    ablation = evaluate(runs, "+gamma0.5")[-1]
    assert {c.other for c in ablation.comparisons} == {"gem-mlm(en)+gamma0.5", "mtf-mlm(en)"}
    lines = claims_side_by_side(runs)
    header = lines[0]
    assert "the equation as printed (memory_strength 0)" in header and "as the reference code runs it" in header
    row = next(line for line in lines if line.startswith("| GEM w/ XSR keeps XSR"))
    assert row.endswith("| direction only | reproduces |")
