"""The report's numbers against the runs they come from, and its t-tests against an independent Welch test."""

from __future__ import annotations

import csv
import json
import math
import shutil
import statistics

import pytest

from distgem.cli import main

LANGS = ["en", "es", "fr"]


def _results(method: str, memory: list[str], seed: int, scores: dict, mlm_languages: str = "all") -> dict:
    targets = [scores[lang] for lang in LANGS if lang != "en"]
    memory_eval = {
        "mlm_perplexity": {lang: 10.0 + seed + len(method) for lang in LANGS},
        "xsr": {lang: {"p@1": 50.0 + seed, "p@5": 70.0, "p@10": 80.0} for lang in ("es", "fr")},
    }
    return {
        "run": {"task": "pos", "method": method, "seed": seed},
        "test": {
            "per_language": {lang: {"score": s} for lang, s in scores.items()},
            "average": statistics.fmean(targets),
        },
        "backbone": {
            "mlm_perplexity": {lang: 9.0 for lang in LANGS},
            "xsr": {lang: {"p@1": 90.0, "p@5": 95.0, "p@10": 99.0} for lang in ("es", "fr")},
        },
        "after": memory_eval,
        "config": {
            "method": {
                "name": method,
                "memory": memory,
                "mlm_languages": mlm_languages,
                "gem": {"per_language": False, "per_layer": False, "refresh_every": 1, "memory_strength": 0.0},
            }
        },
    }


SEEDS = {
    ("naive", ()): [
        {"en": 95, "es": 70, "fr": 72},
        {"en": 95.5, "es": 71, "fr": 71},
        {"en": 94, "es": 70.5, "fr": 72.5},
    ],
    ("gem", ("mlm", "xsr")): [
        {"en": 95, "es": 76, "fr": 77},
        {"en": 95, "es": 75.5, "fr": 77.5},
        {"en": 96, "es": 76.2, "fr": 76.8},
    ],
    ("mtf", ("mlm",)): [{"en": 94, "es": 65, "fr": 66}, {"en": 94, "es": 67, "fr": 64}],
}


@pytest.fixture
def runs(tmp_path):
    for (method, memory), seeds in SEEDS.items():
        for seed, scores in enumerate(seeds):
            run_dir = tmp_path / "runs" / f"{method}-{'-'.join(memory)}-seed{seed}"
            run_dir.mkdir(parents=True)
            (run_dir / "results.json").write_text(json.dumps(_results(method, list(memory), seed, scores)))
    return tmp_path / "runs"


def _csv(path):
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _welch(a, b):
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    t = (statistics.fmean(a) - statistics.fmean(b)) / math.sqrt(va + vb)
    dof = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    return t, dof


def test_report_tables_match_results_and_ttests_match_welch(runs, tmp_path):
    from scipy import stats

    out = tmp_path / "report"
    assert main(["report", str(runs), "--out", str(out), "--no-plots"]) == 0
    rows = {r["method"]: r for r in _csv(out / "table2_pos.csv")}
    assert set(rows) == {"naive", "gem-both", "mtf-mlm"}
    for (method, memory), seeds in SEEDS.items():
        name = method + ("-both" if len(memory) == 2 else f"-{memory[0]}" if memory else "")
        for lang in LANGS:
            assert float(rows[name][f"{lang}_mean"]) == pytest.approx(statistics.fmean(s[lang] for s in seeds))
            assert float(rows[name][f"{lang}_std"]) == pytest.approx(statistics.stdev(s[lang] for s in seeds))
        averages = [statistics.fmean([s["es"], s["fr"]]) for s in seeds]  # the source language is excluded
        assert float(rows[name]["avg_mean"]) == pytest.approx(statistics.fmean(averages))
    tests = {(t["method"], t["baseline"]): t for t in _csv(out / "ttests.csv")}
    gem = [statistics.fmean([s["es"], s["fr"]]) for s in SEEDS["gem", ("mlm", "xsr")]]
    naive = [statistics.fmean([s["es"], s["fr"]]) for s in SEEDS["naive", ()]]
    t, dof = _welch(gem, naive)
    assert float(tests["gem-both", "naive"]["t"]) == pytest.approx(t)
    assert float(tests["gem-both", "naive"]["p"]) == pytest.approx(2 * stats.t.sf(abs(t), dof))
    assert tests["gem-both", "naive"]["significant"] == "True"  # ~5 points apart with small spread
    assert tests["mtf-mlm", "naive"]["significant"] == "False"  # worse is never marked
    markdown = (out / "report.md").read_text()
    assert "| gem-both | 3 |" in markdown and "†" in markdown.split("## Table 2")[1].split("##")[0]
    table1 = _csv(out / "table1.csv")
    assert table1[0]["model"] == "backbone" and float(table1[0]["ppl en_mean"]) == 9.0
    assert "\\begin{tabular}" in (out / "tables.tex").read_text()


def test_report_marks_untestable_ttests(runs, tmp_path):
    # one seed of a method: its t-tests cannot be computed and say so instead of printing nan
    single = tmp_path / "single"
    shutil.copytree(runs, single)
    for extra in sorted(single.glob("*mtf-mlm*"))[1:]:
        shutil.rmtree(extra)
    out = tmp_path / "report"
    assert main(["report", str(single), "--out", str(out), "--no-plots"]) == 0
    lines = (out / "report.md").read_text().splitlines()
    untestable = [line for line in lines if line.startswith("| pos | mtf-mlm | naive |")]
    assert len(untestable) == 1 and untestable[0].endswith("| n/a | n/a | no |")
    assert "nan" not in "\n".join(lines) and any(line.startswith("n/a: not testable") for line in lines)
    tested = next(line for line in lines if line.startswith("| pos | gem-both | naive |"))
    assert "n/a" not in tested


def test_report_separates_runs_read_at_another_layer(runs, tmp_path):
    # naive and GEM read at layer 6: their own rows (naive's too, it has no memory), and their own backbone row,
    # not pooled with the last layer's runs
    for name in ("naive--seed0", "gem-mlm-xsr-seed0"):
        results = json.loads((runs / name / "results.json").read_text())
        results["config"]["method"]["xsr_layer"] = 6
        results["backbone"]["xsr"] = {lang: {"p@1": 60.0, "p@5": 80.0, "p@10": 90.0} for lang in ("es", "fr")}
        (runs / f"{name}-layer6").mkdir()
        (runs / f"{name}-layer6" / "results.json").write_text(json.dumps(results))
    out = tmp_path / "report"
    assert main(["report", str(runs), "--out", str(out), "--no-plots"]) == 0
    table1 = {r["model"]: r for r in _csv(out / "table1.csv")}
    assert set(table1) == {
        "backbone",
        "backbone+layer6",
        "naive",
        "naive+layer6",
        "gem-both",
        "gem-both+layer6",
        "mtf-mlm",
    }
    assert float(table1["backbone"]["es-en P@1_mean"]) == 90.0 and float(table1["backbone"]["es-en P@1_std"]) == 0.0
    assert table1["backbone"]["seeds"] == "1"  # six runs evaluated one backbone
    # two runs read at layer 6 evaluated the same backbone once each: one evaluation, not two seeds
    assert float(table1["backbone+layer6"]["es-en P@1_mean"]) == 60.0 and table1["backbone+layer6"]["seeds"] == "1"
    assert table1["naive"]["seeds"] == "3" and table1["naive+layer6"]["seeds"] == "1"


def test_compare_two_methods_on_every_metric(runs, capsys):
    from scipy import stats

    assert main(["compare", str(runs), "--between", "gem-both", "naive", "--json"]) == 0
    rows = {r["metric"]: r for r in map(json.loads, capsys.readouterr().out.splitlines())}
    assert {"source en", "zero-shot es", "zero-shot fr", "zero-shot avg", "XSR P@1 es", "MLM ppl en"} <= set(rows)
    gem, naive = SEEDS["gem", ("mlm", "xsr")], SEEDS["naive", ()]
    es = rows["zero-shot es"]
    assert es["a_mean"] == pytest.approx(statistics.fmean(s["es"] for s in gem))
    assert es["diff"] == pytest.approx(
        statistics.fmean(s["es"] for s in gem) - statistics.fmean(s["es"] for s in naive)
    )
    t, dof = _welch([s["es"] for s in gem], [s["es"] for s in naive])
    assert es["t"] == pytest.approx(t) and es["p"] == pytest.approx(2 * stats.t.sf(abs(t), dof))
    assert rows["source en"]["b_mean"] == pytest.approx(statistics.fmean(s["en"] for s in naive))
    # the fixture's P@1 is 50 + seed for every method: no difference, p = 1
    assert rows["XSR P@1 es"]["diff"] == 0 and rows["XSR P@1 es"]["p"] == pytest.approx(1.0)
    # held-out losses pool only runs measured on the same held-out sample (the backbone's loss names it)
    for run_dir, backbone, final in (
        ("gem-mlm-xsr-seed0", 1.56, 2.0),
        ("gem-mlm-xsr-seed1", 1.56, 2.2),
        ("gem-mlm-xsr-seed2", 1.75, 9.0),
        ("mtf-mlm-seed0", 1.56, 0.1),
        ("mtf-mlm-seed1", 1.56, 0.3),
    ):
        results = json.loads((runs / run_dir / "results.json").read_text())
        results["memory_loss"] = {"backbone": {"xsr": backbone}, "final": {"xsr": final}}
        (runs / run_dir / "results.json").write_text(json.dumps(results))
    assert main(["compare", str(runs), "--between", "gem-both", "mtf-mlm", "--json"]) == 0
    rows = {r["metric"]: r for r in map(json.loads, capsys.readouterr().out.splitlines())}
    held = [name for name in rows if name.startswith("held-out")]
    assert held == ["held-out loss xsr (backbone 1.56)"]
    assert rows[held[0]]["a_mean"] == pytest.approx(2.1) and rows[held[0]]["b_mean"] == pytest.approx(0.2)
    assert main(["compare", str(runs), "--between", "gem-both", "mtf-mlm"]) == 0
    assert "| zero-shot avg | " in capsys.readouterr().out
    assert main(["compare", str(runs), "--between", "gem-xsr", "naive"]) == 2
    assert "no runs labelled 'gem-xsr'; the labels are: gem-both, mtf-mlm, naive" in capsys.readouterr().err


def test_a_diverged_run_is_left_out_of_the_report_and_refused_by_compare(runs, tmp_path, capsys):
    bad = runs / "gem-mlm-xsr-seed1"
    data = json.loads((bad / "results.json").read_text())
    data.update(status="diverged", train={"steps": 5})
    data["test"]["average"] = None
    (bad / "results.json").write_text(json.dumps(data))
    assert main(["report", str(runs), "--out", str(tmp_path / "out"), "--no-plots"]) == 0
    assert "left out gem-mlm-xsr-seed1: diverged at step 5" in capsys.readouterr().err
    report = (tmp_path / "out" / "report.md").read_text()
    assert "gem-mlm-xsr-seed1: diverged at step 5" in report
    gem = [row for row in _csv(tmp_path / "out" / "table2_pos.csv") if row["method"].startswith("gem")]
    assert gem and all(row["seeds"] == "2" for row in gem)  # averaged over the two sound seeds only
    assert main(["compare", str(runs), "--between", "gem-both", "naive"]) == 2
    assert "gem-mlm-xsr-seed1: diverged" in capsys.readouterr().err
    # a sound run with a metric computed from non-finite numbers (written as null) is left out too
    data.update(status="ok", nonfinite=["after.xsr.es.p@1"])
    data["test"]["average"] = 70.0
    (bad / "results.json").write_text(json.dumps(data))
    assert main(["report", str(runs), "--out", str(tmp_path / "out2"), "--no-plots"]) == 0
    assert "non-finite after.xsr.es.p@1" in capsys.readouterr().err


def test_report_plots(runs, tmp_path):
    out = tmp_path / "report"
    assert main(["report", str(runs), "--out", str(out)]) == 0
    png = (out / "table2_pos.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_report_errors_are_user_errors(tmp_path, capsys):
    assert main(["report", str(tmp_path / "none"), "--out", str(tmp_path / "o")]) == 2
    (tmp_path / "r").mkdir()
    assert main(["report", str(tmp_path / "r"), "--out", str(tmp_path / "o")]) == 2
    bad = tmp_path / "b" / "x"
    bad.mkdir(parents=True)
    (bad / "results.json").write_text("{not json")
    assert main(["report", str(tmp_path / "b"), "--out", str(tmp_path / "o")]) == 2
    assert "results.json:1: not valid JSON" in capsys.readouterr().err


def test_knob_sweep_labels_name_each_knob_and_leave_the_usual_value_unmarked(tmp_path):
    from distgem.report.runs import load_runs

    knobs = {
        "plain": {},
        "gamma": {"gem.memory_strength": 0.5},
        "update": {"gem.target": "update"},
        "anchor": {"gem.target": "update", "gem.anchor": "pretrained"},
        "batch": {"memory_batch_size": 64},
        "layer": {"xsr_layer": 6},
    }
    for name, knob in knobs.items():
        data = _results("gem", ["xsr"], 0, {"en": 90, "es": 80, "fr": 81})
        method = data["config"]["method"]
        method.update(memory_batch_size=16, xsr_layer=-1)
        for key, value in knob.items():
            section, _, field = key.rpartition(".")
            (method[section] if section else method)[field] = value
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps(data))
    labels = {r["run_dir"].rsplit("/", 1)[-1]: r["label"] for r in load_runs(tmp_path)}
    assert labels == {
        "plain": "gem-xsr",
        "gamma": "gem-xsr+gamma0.5",
        "update": "gem-xsr+update",
        "anchor": "gem-xsr+update+anchor-pretrained",
        "batch": "gem-xsr+batch64",
        "layer": "gem-xsr+layer6",
    }


def test_mtf_runs_with_other_weights_than_one_get_their_own_label():
    from distgem.report.runs import label

    def mtf(memory, weights):
        data = _results("mtf", memory, 0, {"en": 90, "es": 80, "fr": 81})
        if weights is not None:
            data["config"]["method"]["mtf_weights"] = weights
        return label(data)

    assert mtf(["xsr"], None) == mtf(["xsr"], {"mlm": 1.0, "xsr": 1.0}) == "mtf-xsr"
    assert mtf(["xsr"], {"mlm": 0.3, "xsr": 1.0}) == "mtf-xsr"  # a weight of a loss the run does not add
    assert mtf(["xsr"], {"mlm": 1.0, "xsr": 0.1}) == "mtf-xsr+w0.1"
    assert mtf(["mlm", "xsr"], {"mlm": 1.0, "xsr": 0.5}) == "mtf-both+w1/0.5"


def test_l2sp_strengths_and_lora_ranks_are_settings_of_their_own():
    """Two L2-SP strengths (or LoRA ranks) are two points of the trade-off, never pooled as seeds of one."""
    from distgem.report.runs import label

    def run(method, **knobs):
        data = _results(method, [], 0, {"en": 90, "es": 80, "fr": 81})
        data["config"]["method"].update(knobs)
        return label(data)

    assert run("l2sp") == run("l2sp", l2sp_strength=0.1) == "l2sp"
    assert run("l2sp", l2sp_strength=0.01) == "l2sp+alpha0.01"
    assert run("lora", lora_rank=8) == "lora" and run("lora", lora_rank=16, lora_alpha=32) == "lora+r16"


def test_new_run_directories_join_a_committed_summary_and_replace_its_runs_of_the_same_id(runs, tmp_path):
    first = tmp_path / "first"
    assert main(["report", str(runs), "--out", str(first), "--no-plots"]) == 0
    # a later session: the run directories are gone, one run is redone with another score, one is new
    redone = tmp_path / "new" / "naive--seed0"
    redone.mkdir(parents=True)
    (redone / "results.json").write_text(json.dumps(_results("naive", [], 0, {"en": 90, "es": 60, "fr": 62})))
    extra = tmp_path / "new" / "mtf-mlm-seed2"
    extra.mkdir()
    (extra / "results.json").write_text(json.dumps(_results("mtf", ["mlm"], 2, {"en": 93, "es": 66, "fr": 65})))
    merged = tmp_path / "merged"
    assert main(["report", str(first / "runs.jsonl"), str(tmp_path / "new"), "--out", str(merged), "--no-plots"]) == 0
    rows = {r["method"]: r for r in _csv(merged / "table2_pos.csv")}
    naive = [{"en": 90, "es": 60, "fr": 62}] + SEEDS["naive", ()][1:]
    assert float(rows["naive"]["es_mean"]) == pytest.approx(statistics.fmean(s["es"] for s in naive))
    mtf = SEEDS["mtf", ("mlm",)] + [{"en": 93, "es": 66, "fr": 65}]
    assert float(rows["mtf-mlm"]["fr_mean"]) == pytest.approx(statistics.fmean(s["fr"] for s in mtf))
    ids = [json.loads(line)["run_id"] for line in (merged / "runs.jsonl").read_text().splitlines()]
    assert len(ids) == len(set(ids)) == 9  # 8 summarised, one replaced, one added


def test_a_single_seed_shows_its_value_without_a_spread(runs, tmp_path):
    single = runs / "gem-xsr-seed0"
    single.mkdir()
    (single / "results.json").write_text(json.dumps(_results("gem", ["xsr"], 0, {"en": 93, "es": 74, "fr": 75})))
    out = tmp_path / "report"
    assert main(["report", str(runs), "--out", str(out), "--no-plots"]) == 0
    table2 = (out / "report.md").read_text().split("## Table 2")[1].split("##")[0]
    row = next(line for line in table2.splitlines() if line.startswith("| gem-xsr |"))
    assert row == "| gem-xsr | 1 | 93.00 | 74.00 | 75.00 | 74.50 |", row
    naive = next(line for line in table2.splitlines() if line.startswith("| naive |"))
    assert "±" in naive  # three seeds keep their standard deviation


def test_language_columns_follow_the_task_source_first_also_from_a_sorted_summary(tmp_path):
    runs = tmp_path / "runs"
    for seed in (0, 1):
        data = _results("naive", [], seed, {"fr": 70.0 + seed, "en": 95.0, "es": 72.0})
        data["config"]["task"] = {"name": "pos", "source": "en", "targets": ["fr", "es"]}
        (runs / f"naive-seed{seed}").mkdir(parents=True)
        (runs / f"naive-seed{seed}" / "results.json").write_text(json.dumps(data, sort_keys=True))  # keys: en, es, fr
    first, again = tmp_path / "first", tmp_path / "again"
    assert main(["report", str(runs), "--out", str(first), "--no-plots"]) == 0
    assert main(["report", str(first / "runs.jsonl"), "--out", str(again), "--no-plots"]) == 0
    for out in (first, again):
        header = next(
            line
            for line in (out / "report.md").read_text().split("## Table 2")[1].splitlines()
            if line.startswith("| method")
        )
        assert header == "| method | seeds | en | fr | es | avg |", header
        table1 = next(
            line
            for line in (out / "report.md").read_text().split("## Table 1")[1].splitlines()
            if line.startswith("| model")
        )
        assert table1.index("fr-en P@1") < table1.index("es-en P@1"), table1
        assert float(_csv(out / "table2_pos.csv")[0]["fr_mean"]) == pytest.approx(70.5)


def test_the_summary_keeps_the_held_out_memory_losses_through_a_merge(tmp_path):
    """runs.jsonl outlives the run directories: the backbone's and the last dev evaluation's held-out memory
    losses must survive it, and a second merge must not lose them."""
    run = tmp_path / "runs" / "gem-xsr-seed0"
    run.mkdir(parents=True)
    data = _results("gem", ["xsr"], 0, {"en": 90, "es": 80, "fr": 81})
    data["backbone"]["memory_loss"] = {"xsr": 0.05}
    data["dev"] = {"history": [{"step": 200, "memory_loss": {"xsr": 1.5}}, {"step": 400, "memory_loss": {"xsr": 2.5}}]}
    (run / "results.json").write_text(json.dumps(data))
    plain = tmp_path / "runs" / "naive-seed0"
    plain.mkdir()
    (plain / "results.json").write_text(json.dumps(_results("naive", [], 0, {"en": 90, "es": 70, "fr": 71})))
    assert main(["report", str(tmp_path / "runs"), "--out", str(tmp_path / "once"), "--no-plots"]) == 0
    later = tmp_path / "later" / "naive-seed1"  # a later session adds a run to the committed summary
    later.mkdir(parents=True)
    (later / "results.json").write_text(json.dumps(_results("naive", [], 1, {"en": 91, "es": 70, "fr": 72})))
    assert (
        main(
            [
                "report",
                str(tmp_path / "once" / "runs.jsonl"),
                str(tmp_path / "later"),
                "--out",
                str(tmp_path / "twice"),
                "--no-plots",
            ]
        )
        == 0
    )
    for out in ("once", "twice"):
        kept = {r["run_id"]: r for r in map(json.loads, (tmp_path / out / "runs.jsonl").read_text().splitlines())}
        assert kept["gem-xsr-seed0"]["memory_loss"] == {"backbone": {"xsr": 0.05}, "final": {"xsr": 2.5}}
        assert "memory_loss" not in kept["naive-seed0"]


def test_over_seeds_table_puts_every_number_of_a_method_on_one_row(runs, tmp_path):
    """The seeds table's cells are the means of what each seed measured, its per-seed cells (steps projected,
    held-out loss named by the backbone's loss on the same batch) are in seed order, and a method without them
    shows '-'."""
    for seed, (share, final) in enumerate([(0.25, 2.5), (0.5, 1.25), (0.75, None)]):
        path = runs / f"gem-mlm-xsr-seed{seed}" / "results.json"
        data = json.loads(path.read_text())
        data["train"] = {"steps": 400, "seconds": 100.0, "gem_violated_share": share}
        if final is not None:
            data["backbone"]["memory_loss"] = {"xsr.fr": 1.5}
            data["dev"] = {"history": [{"step": 400, "memory_loss": {"xsr.fr": final, "xsr.es": 9.0}}]}
        path.write_text(json.dumps(data))
    assert main(["report", str(runs), "--out", str(tmp_path / "out"), "--no-plots"]) == 0
    rows = {row["method"]: row for row in _csv(tmp_path / "out" / "seeds_pos.csv")}
    assert set(rows) == {"naive", "mtf-mlm", "gem-both"}
    gem_row, naive = rows["gem-both"], rows["naive"]
    assert gem_row["seeds"] == "3 (0, 1, 2)" and rows["mtf-mlm"]["seeds"] == "2 (0, 1)"
    assert float(gem_row["P@1 es_mean"]) == pytest.approx(51.0) and float(gem_row["P@1 es_std"]) == pytest.approx(1.0)
    assert float(gem_row["ppl fr_mean"]) == pytest.approx(14.0)  # 10 + seed + len("gem")
    scores = SEEDS["gem", ("mlm", "xsr")]
    assert float(gem_row["pos en_mean"]) == pytest.approx(statistics.fmean(s["en"] for s in scores))
    assert float(gem_row["pos es_std"]) == pytest.approx(statistics.stdev(s["es"] for s in scores))
    assert gem_row["steps projected"] == "100 / 200 / 300"
    # every constraint of a seed, named (two here), the backbone's loss on the same batch where it was logged
    assert gem_row["held-out memory loss"] == "xsr.fr 2.50 (1.50), xsr.es 9.00 / xsr.fr 1.25 (1.50), xsr.es 9.00 / -"
    assert naive["steps projected"] == "-" and naive["held-out memory loss"] == "-"
    alone = (tmp_path / "out" / "seeds_pos.md").read_text().splitlines()
    assert alone[0].startswith("| method | seeds | P@1 es | P@1 fr | ppl en | ppl es | ppl fr | pos en |")
    assert len(alone) == 2 + len(rows)
    assert "| gem-both | 3 (0, 1, 2) | 51.00 ± 1.00 |" in (tmp_path / "out" / "report.md").read_text()


def test_forgetting_curves_read_p_at_1_exactly_and_the_curve_not_the_tested_checkpoint(tmp_path):
    """`p@1` is not `p@10`; a value logged again at the last step (the tested checkpoint, by runs written before
    it had tags of its own) does not replace the curve's."""
    from torch.utils.tensorboard import SummaryWriter

    from distgem.report.plots import forgetting_series, tested_point

    writer = SummaryWriter(str(tmp_path / "tensorboard"))
    for step, p1, p10 in ((0, 70.0, 90.0), (150, 40.0, 80.0), (300, 12.0, 60.0)):
        for lang, shift in (("es", 0.0), ("fr", 2.0)):
            writer.add_scalar(f"memory/xsr/{lang}/p@1", p1 + shift, step)
            writer.add_scalar(f"memory/xsr/{lang}/p@10", p10, step)
            writer.add_scalar(f"memory/mlm_perplexity/{lang}", 10.0 + step, step)
    writer.add_scalar("memory/xsr/es/p@1", 38.0, 300)  # the tested checkpoint (step 150) over the curve
    writer.add_scalar("tested/memory/xsr/es/p@1", 38.0, 300)
    writer.close()
    series = forgetting_series(tmp_path)
    assert series["XSR P@1 (mean over pairs)"] == {0: 71.0, 150: 41.0, 300: 13.0}
    assert series["MLM perplexity (mean over languages)"] == {0: 10.0, 150: 160.0, 300: 310.0}
    run = {
        "dev": {"best_step": 150},
        "after": {"xsr": {"es": {"p@1": 40.0}, "fr": {"p@1": 42.0}}, "mlm_perplexity": {"es": 150.0}},
    }
    assert tested_point(run) == (
        150,
        {"XSR P@1 (mean over pairs)": 41.0, "MLM perplexity (mean over languages)": 150.0},
    )


def test_forgetting_curves_of_different_tasks_are_never_averaged(tmp_path):
    """POS and NER runs of one method evaluate different target languages: a panel per task; seeds of one task are
    averaged."""
    from torch.utils.tensorboard import SummaryWriter

    from distgem.report.plots import forgetting_curves

    def run(name: str, task: str, p1: float) -> dict:
        writer = SummaryWriter(str(tmp_path / name / "tensorboard"))
        writer.add_scalar("memory/xsr/es/p@1", p1, 0)
        writer.close()
        return {"run_dir": str(tmp_path / name), "label": "gem-xsr", "run": {"task": task}}

    pos = [run("pos0", "pos", 70.0), run("pos1", "pos", 72.0)]
    curves, _ = forgetting_curves([*pos, run("ner0", "ner", 50.0)])
    assert curves == {
        "XSR P@1 (mean over pairs), pos": {"gem-xsr": {0: [70.0, 72.0]}},
        "XSR P@1 (mean over pairs), ner": {"gem-xsr": {0: [50.0]}},
    }
    curves, _ = forgetting_curves(pos)
    assert curves["XSR P@1 (mean over pairs)"] == {"gem-xsr": {0: [70.0, 72.0]}}


def test_the_tradeoff_places_each_setting_in_its_family_and_matches_gem_to_the_closest_mtf(tmp_path):
    """Points pool seeds per setting; each GEM margin meets the MTF weight closest to it in English score, and the
    t-tests there are Welch's on the per-seed numbers."""
    from scipy import stats

    from distgem.report.runs import label
    from distgem.report.tradeoff import matched, points, write

    def run(method: str, seed: int, english: float, p1: float, **method_config) -> dict:
        gem = {
            "per_language": False,
            "per_layer": False,
            "refresh_every": 1,
            "memory_strength": 0.0,
            "target": "gradient",
            "anchor": "previous",
            **method_config.pop("gem", {}),
        }
        config = {
            "name": method,
            "memory": ["xsr"] if method in ("gem", "mtf") else [],
            "mlm_languages": "all",
            "mtf_weights": {"xsr": 1.0},
            "gem": gem,
            "l2sp_strength": 0.1,
            "lora_rank": 8,
            **method_config,
        }
        data = {
            "run": {"task": "pos"},
            "config": {"method": config},
            "test": {"source": english, "average": 80 + seed, "per_language": {}},
            "after": {"xsr": {"es": {"p@1": p1}, "fr": {"p@1": p1 + 2}}},
            "backbone": {"xsr": {"es": {"p@1": 95.0}, "fr": {"p@1": 97.0}}},
            "train": {"gem_mean_dual": {"xsr": 0.2 + seed / 100} if method == "gem" else None},
        }
        data["label"] = label(data)
        return data

    runs = [run("naive", s, 94.0 + s / 10, 20.0 + s) for s in range(3)]
    runs += [run("gem", s, 93.0 + s / 10, 80.0 + s, gem={"memory_strength": 0.2}) for s in range(3)]
    runs += [run("mtf", s, 93.1 + s / 10, 85.0 + 2 * s, mtf_weights={"xsr": 0.2}) for s in range(3)]
    runs += [run("mtf", s, 88.0 + s / 10, 95.0 + s, mtf_weights={"xsr": 1.0}) for s in range(3)]
    runs += [run("l2sp", s, 93.5, 40.0 + s) for s in range(3)]
    placed = {p.label: (p.family, p.knob, len(p.source)) for p in points(runs)}
    assert placed == {
        "naive": ("naive", 0.0, 3),
        "gem-xsr+gamma0.2": ("GEM, margin", 0.2, 3),
        "mtf-xsr+w0.2": ("MTF, weight", 0.2, 3),
        "mtf-xsr": ("MTF, weight", 1.0, 3),
        "l2sp": ("L2-SP, strength", 0.1, 3),
    }
    (pair,) = matched(points(runs))
    assert pair["mtf"] == "mtf-xsr+w0.2"  # 93.1 is closer to 93.0 than 88.0 is
    gem_p1 = [81.0 + s for s in range(3)]  # the mean over es and fr per seed
    mtf_p1 = [86.0 + 2 * s for s in range(3)]
    assert pair["retrieval_diff"] == pytest.approx(statistics.fmean(gem_p1) - statistics.fmean(mtf_p1))
    assert pair["retrieval_p"] == pytest.approx(stats.ttest_ind(gem_p1, mtf_p1, equal_var=False).pvalue)
    assert pair["dose_gem"] == pytest.approx(0.21) and pair["dose_mtf"] == 0.2
    assert write(runs, tmp_path, plots=False) is not None
    assert "The backbone's XSR P@1 before fine-tuning: 96.0." in (tmp_path / "tradeoff.md").read_text()
