"""How runs become labelled settings, how summaries merge, and the curves and the trade-off read from them."""

from __future__ import annotations

import json
import statistics

import pytest

from distgem.cli import main
from tests.unit.report_data import SEEDS, read_csv, results, write_runs


@pytest.fixture
def runs(tmp_path):
    return write_runs(tmp_path)


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
        data = results("gem", ["xsr"], 0, {"en": 90, "es": 80, "fr": 81})
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
        data = results("mtf", memory, 0, {"en": 90, "es": 80, "fr": 81})
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
        data = results(method, [], 0, {"en": 90, "es": 80, "fr": 81})
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
    (redone / "results.json").write_text(json.dumps(results("naive", [], 0, {"en": 90, "es": 60, "fr": 62})))
    extra = tmp_path / "new" / "mtf-mlm-seed2"
    extra.mkdir()
    (extra / "results.json").write_text(json.dumps(results("mtf", ["mlm"], 2, {"en": 93, "es": 66, "fr": 65})))
    merged = tmp_path / "merged"
    assert main(["report", str(first / "runs.jsonl"), str(tmp_path / "new"), "--out", str(merged), "--no-plots"]) == 0
    rows = {r["method"]: r for r in read_csv(merged / "table2_pos.csv")}
    naive = [{"en": 90, "es": 60, "fr": 62}] + SEEDS["naive", ()][1:]
    assert float(rows["naive"]["es_mean"]) == pytest.approx(statistics.fmean(s["es"] for s in naive))
    mtf = SEEDS["mtf", ("mlm",)] + [{"en": 93, "es": 66, "fr": 65}]
    assert float(rows["mtf-mlm"]["fr_mean"]) == pytest.approx(statistics.fmean(s["fr"] for s in mtf))
    ids = [json.loads(line)["run_id"] for line in (merged / "runs.jsonl").read_text().splitlines()]
    assert len(ids) == len(set(ids)) == 9  # 8 summarised, one replaced, one added


def test_language_columns_follow_the_task_source_first_also_from_a_sorted_summary(tmp_path):
    runs = tmp_path / "runs"
    for seed in (0, 1):
        data = results("naive", [], seed, {"fr": 70.0 + seed, "en": 95.0, "es": 72.0})
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
        assert float(read_csv(out / "table2_pos.csv")[0]["fr_mean"]) == pytest.approx(70.5)


def test_the_summary_keeps_the_held_out_memory_losses_through_a_merge(tmp_path):
    """runs.jsonl outlives the run directories: the backbone's and the last dev evaluation's held-out memory
    losses must survive it, and a second merge must not lose them."""
    run = tmp_path / "runs" / "gem-xsr-seed0"
    run.mkdir(parents=True)
    data = results("gem", ["xsr"], 0, {"en": 90, "es": 80, "fr": 81})
    data["backbone"]["memory_loss"] = {"xsr": 0.05}
    data["dev"] = {"history": [{"step": 200, "memory_loss": {"xsr": 1.5}}, {"step": 400, "memory_loss": {"xsr": 2.5}}]}
    (run / "results.json").write_text(json.dumps(data))
    plain = tmp_path / "runs" / "naive-seed0"
    plain.mkdir()
    (plain / "results.json").write_text(json.dumps(results("naive", [], 0, {"en": 90, "es": 70, "fr": 71})))
    assert main(["report", str(tmp_path / "runs"), "--out", str(tmp_path / "once"), "--no-plots"]) == 0
    later = tmp_path / "later" / "naive-seed1"  # a later session adds a run to the committed summary
    later.mkdir(parents=True)
    (later / "results.json").write_text(json.dumps(results("naive", [], 1, {"en": 91, "es": 70, "fr": 72})))
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


def test_the_report_says_when_the_forgetting_figure_stands_on_fewer_runs_than_the_tables(tmp_path):
    """Runs kept only as summaries have no step logs: the figure is drawn from the others, or left as it was, and
    the report says which; with every run's logs here it says nothing."""
    from distgem.report.plots import forgetting_coverage

    def run(name: str, logs: bool) -> dict:
        if logs:
            (tmp_path / name / "tensorboard").mkdir(parents=True)
        return {"run_dir": str(tmp_path / name)}

    here, gone = [run("a", True), run("b", True)], [run("c", False)]
    out = tmp_path / "report"
    out.mkdir()
    assert forgetting_coverage(here, out, redrawn=True) is None
    assert forgetting_coverage([*here, *gone], out, redrawn=True).endswith(
        "drawn from the 2 of 3 runs whose step logs are here"
    )
    assert forgetting_coverage(gone, out, redrawn=False) is None  # no figure to speak of
    (out / "forgetting.png").write_bytes(b"")
    assert forgetting_coverage(gone, out, redrawn=False).endswith(
        "left as it was: none of the 1 runs has its step logs here"
    )
    # step logs without memory curves (eval.memory off) draw nothing: the old figure stays, and it says why
    assert forgetting_coverage([*here, *gone], out, redrawn=False).endswith(
        "left as it was: the 2 of 3 runs with step logs here have no memory curves"
    )


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
