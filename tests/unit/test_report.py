"""The report's numbers against the runs they come from, and its t-tests against an independent Welch test."""

from __future__ import annotations

import json
import math
import shutil
import statistics

import pytest

from distgem.cli import main
from tests.unit.report_data import LANGS, SEEDS, read_csv, results, write_runs


@pytest.fixture
def runs(tmp_path):
    return write_runs(tmp_path)


def _welch(a, b):
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    t = (statistics.fmean(a) - statistics.fmean(b)) / math.sqrt(va + vb)
    dof = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    return t, dof


def test_report_tables_match_results_and_ttests_match_welch(runs, tmp_path):
    from scipy import stats

    out = tmp_path / "report"
    assert main(["report", str(runs), "--out", str(out), "--no-plots"]) == 0
    rows = {r["method"]: r for r in read_csv(out / "table2_pos.csv")}
    assert set(rows) == {"naive", "gem-both", "mtf-mlm"}
    for (method, memory), seeds in SEEDS.items():
        name = method + ("-both" if len(memory) == 2 else f"-{memory[0]}" if memory else "")
        for lang in LANGS:
            assert float(rows[name][f"{lang}_mean"]) == pytest.approx(statistics.fmean(s[lang] for s in seeds))
            assert float(rows[name][f"{lang}_std"]) == pytest.approx(statistics.stdev(s[lang] for s in seeds))
        averages = [statistics.fmean([s["es"], s["fr"]]) for s in seeds]  # the source language is excluded
        assert float(rows[name]["avg_mean"]) == pytest.approx(statistics.fmean(averages))
    tests = {(t["method"], t["baseline"]): t for t in read_csv(out / "ttests.csv")}
    gem = [statistics.fmean([s["es"], s["fr"]]) for s in SEEDS["gem", ("mlm", "xsr")]]
    naive = [statistics.fmean([s["es"], s["fr"]]) for s in SEEDS["naive", ()]]
    t, dof = _welch(gem, naive)
    assert float(tests["gem-both", "naive"]["t"]) == pytest.approx(t)
    assert float(tests["gem-both", "naive"]["p"]) == pytest.approx(2 * stats.t.sf(abs(t), dof))
    assert tests["gem-both", "naive"]["significant"] == "True"  # ~5 points apart with small spread
    assert tests["mtf-mlm", "naive"]["significant"] == "False"  # worse is never marked
    markdown = (out / "report.md").read_text()
    assert "| gem-both | 3 |" in markdown and "†" in markdown.split("## Table 2")[1].split("##")[0]
    table1 = read_csv(out / "table1.csv")
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
    table1 = {r["model"]: r for r in read_csv(out / "table1.csv")}
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
    gem = [row for row in read_csv(tmp_path / "out" / "table2_pos.csv") if row["method"].startswith("gem")]
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


def test_a_single_seed_shows_its_value_without_a_spread(runs, tmp_path):
    single = runs / "gem-xsr-seed0"
    single.mkdir()
    (single / "results.json").write_text(json.dumps(results("gem", ["xsr"], 0, {"en": 93, "es": 74, "fr": 75})))
    out = tmp_path / "report"
    assert main(["report", str(runs), "--out", str(out), "--no-plots"]) == 0
    table2 = (out / "report.md").read_text().split("## Table 2")[1].split("##")[0]
    row = next(line for line in table2.splitlines() if line.startswith("| gem-xsr |"))
    assert row == "| gem-xsr | 1 | 93.00 | 74.00 | 75.00 | 74.50 |", row
    naive = next(line for line in table2.splitlines() if line.startswith("| naive |"))
    assert "±" in naive  # three seeds keep their standard deviation


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
    rows = {row["method"]: row for row in read_csv(tmp_path / "out" / "seeds_pos.csv")}
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
