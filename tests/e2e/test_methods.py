"""Every method of the paper (and our additions) trains and writes complete results and logs."""

from __future__ import annotations

import json

import pytest
import yaml

from tests.support import ROOT, assert_exported_tagger_tags_as_the_engine, read_steps, read_weights, run_training

METHOD_CONFIGS = sorted(p.stem for p in (ROOT / "configs" / "methods").glob("*.yaml"))


def test_every_paper_method_has_a_config():
    expected = {"naive", "frozen", "mtf-mlm", "mtf-xsr", "mtf-both", "gem-mlm", "gem-xsr", "gem-both"}
    assert expected <= set(METHOD_CONFIGS)


@pytest.mark.parametrize("method", METHOD_CONFIGS)
def test_method_trains_and_writes_complete_results(micro, tmp_path, method):
    args = ("--config", str(ROOT / "configs" / "methods" / f"{method}.yaml"))
    run_training(
        micro,
        tmp_path,
        1,
        {"train.steps": 4, "eval.every": 2, "output.tensorboard": "true", "method.memory_batch_size": 4},
        args=args,
    )
    results = json.loads((tmp_path / "results.json").read_text())
    langs = {"en", "es", "el"}
    assert set(results["test"]["per_language"]) == langs
    assert results["test"]["average"] == pytest.approx(
        (results["test"]["per_language"]["es"]["score"] + results["test"]["per_language"]["el"]["score"]) / 2
    )
    for table in ("backbone", "after"):
        assert set(results[table]["mlm_perplexity"]) == langs and all(
            v > 1 for v in results[table]["mlm_perplexity"].values()
        )
        assert set(results[table]["xsr"]) == {"es", "el"}
        assert all(set(p) == {"p@1", "p@5", "p@10"} for p in results[table]["xsr"].values())
    assert [h["step"] for h in results["dev"]["history"]] == [2, 4]
    assert (
        results["config"]["method"]["name"] == yaml.safe_load((tmp_path / "config.yaml").read_text())["method"]["name"]
    )
    assert results["versions"]["torch"] and results["run"]["seed"] == 0
    steps = read_steps(tmp_path)
    memory = results["config"]["method"]["memory"]
    assert all(any(k == f"loss/{task}" or k.startswith(f"loss/{task}.") for k in steps[0]) for task in memory)
    assert "loss/pos" in steps[0]
    # memory per step: a resident set the size of a loaded torch at least, a peak that never falls and covers it
    peaks = [s["system/peak_rss_mb"] for s in steps]
    assert all(s["system/rss_mb"] > 100 for s in steps) and peaks == sorted(peaks)
    assert all(s["system/peak_rss_mb"] >= s["system/rss_mb"] - 1 for s in steps)
    assert results["train"]["peak_rss_mb"][0] >= peaks[-1]
    if results["config"]["method"]["name"] == "gem":
        assert all(s["gem/min_constraint_after"] >= -1e-5 for s in steps)
        assert results["train"]["gem_violated_share"] is not None
        # the dose in results.json is the mean over steps of the per-step dual variables in steps.jsonl
        for name, mean in results["train"]["gem_mean_dual"].items():
            per_step = [s.get(f"gem/dual/{name}", 0.0) for s in steps]
            assert abs(mean - sum(per_step) / len(per_step)) < 1e-9 and mean >= 0
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))


def test_frozen_layers_do_not_move(micro, tmp_path):
    from safetensors.torch import load_file

    run_training(
        micro,
        tmp_path,
        1,
        {
            "train.steps": 3,
            "method.name": "frozen",
            "method.frozen_layers": 1,
            "output.save_final": "true",
            "eval.before_training": "false",
            "eval.after_training": "false",
        },
    )
    _, backbone = micro
    before = load_file(str(backbone / "model.safetensors"))
    after = load_file(str(tmp_path / "final.safetensors"))
    moved = {
        k
        for k in after
        if k.startswith("encoder.")
        and k.replace("encoder.", "bert.", 1) in before
        and not bool((after[k] == before[k.replace("encoder.", "bert.", 1)]).all())
    }
    assert moved and not any("embeddings" in k or ".layer.0." in k for k in moved)
    assert any(".layer.1." in k for k in moved)


@pytest.mark.parametrize(
    "setting,method,message",
    [
        ({"method.xsr_layer": 9}, "gem-xsr", "method.xsr_layer: 9 is not a layer of"),
        ({"method.frozen_layers": 3}, "frozen", "method.frozen_layers: 3 is more than the 2 layers"),
    ],
)
def test_a_layer_the_backbone_lacks_is_a_one_line_config_error(micro, tmp_path, setting, method, message):
    result = run_training(
        micro,
        tmp_path,
        1,
        setting,
        check=False,
        args=("--config", str(ROOT / "configs" / "methods" / f"{method}.yaml")),
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert message in result.stderr.strip().splitlines()[-1]


def test_projecting_the_update_at_zero_stage_0_needs_fp32(micro, tmp_path):
    result = run_training(
        micro,
        tmp_path,
        1,
        {"method.gem.target": "update", "train.precision": "bf16"},
        check=False,
        args=("--config", str(ROOT / "configs" / "methods" / "gem-xsr.yaml")),
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "method.gem.target: update" in result.stderr.strip().splitlines()[-1]


def test_held_out_memory_losses_every_n_steps_observe_without_changing_training(micro, tmp_path):
    """eval.memory_loss_every: a held-out forgetting curve between dev evaluations, the same numbers a dev
    evaluation records, and not one bit of training changed by measuring it."""
    args = ("--config", str(ROOT / "configs" / "methods" / "gem-both.yaml"))
    common = {
        "train.steps": 6,
        "eval.every": 3,
        "method.memory_batch_size": 4,
        "eval.memory_loss_examples": 8,
        "eval.before_training": "false",
        "eval.after_training": "false",
        "eval.memory": "false",
        "output.save_final": "true",
    }
    run_training(micro, tmp_path / "plain", 1, common, args=args)
    run_training(micro, tmp_path / "curve", 1, {**common, "eval.memory_loss_every": 2}, args=args)
    plain, curve = read_steps(tmp_path / "plain"), read_steps(tmp_path / "curve")

    def trained(steps):  # losses and GEM's statistics; not its timings
        return [
            {k: v for k, v in s.items() if k.startswith(("loss/", "gem/")) and not k.endswith("_ms")} for s in steps
        ]

    assert trained(plain)[0].keys() >= {"loss/pos", "loss/mlm", "loss/xsr", "gem/cosine/xsr"}
    assert trained(curve) == trained(plain)
    assert read_weights(tmp_path / "curve").keys() == read_weights(tmp_path / "plain").keys()
    assert all(
        bool((a == b).all())
        for a, b in zip(read_weights(tmp_path / "curve").values(), read_weights(tmp_path / "plain").values())
    )
    measured = {s["step"] for s in curve if any(k.startswith("memory_loss/") for k in s)}
    assert measured == {2, 4, 6} and not any(k.startswith("memory_loss/") for s in plain for k in s)
    history = json.loads((tmp_path / "curve" / "results.json").read_text())["dev"]["history"]
    by_step = {s["step"]: s for s in curve}
    assert history[-1]["step"] == 6
    assert history[-1]["memory_loss"] == {
        k.split("/", 1)[1]: v for k, v in by_step[6].items() if k.startswith("memory_loss/")
    }
    assert set(history[-1]["memory_loss"]) == {"mlm", "xsr"}
    assert (
        history[-1]["memory_loss"]
        == json.loads((tmp_path / "plain" / "results.json").read_text())["dev"]["history"][-1]["memory_loss"]
    )


def test_the_held_out_memory_losses_start_from_the_backbone(micro, tmp_path):
    """With eval.before_training, the backbone's held-out memory losses are the curves' step 0 (results.json
    and TensorBoard), measured on the same examples as later: a run that barely moves (lr 1e-12) stays on them."""
    from tbparse import SummaryReader

    args = ("--config", str(ROOT / "configs" / "methods" / "gem-both.yaml"))
    run_training(
        micro,
        tmp_path,
        1,
        {
            "train.steps": 2,
            "eval.every": 2,
            "method.memory_batch_size": 4,
            "eval.memory_loss_examples": 8,
            "train.lr": 1e-12,
            "model.dropout": 0.0,
            "output.tensorboard": "true",
        },
        args=args,
    )
    results = json.loads((tmp_path / "results.json").read_text())
    start, end = results["backbone"]["memory_loss"], results["dev"]["history"][-1]["memory_loss"]
    assert set(start) == {"mlm", "xsr"} and all(v > 0 for v in start.values())
    assert start == pytest.approx(end, rel=1e-6)
    scalars = SummaryReader(str(tmp_path / "tensorboard")).scalars
    at_zero = scalars[(scalars.step == 0) & scalars.tag.str.startswith("memory_loss/")]
    assert dict(zip(at_zero.tag.str.split("/").str[1], at_zero.value)) == pytest.approx(start, rel=1e-6)
    # the pooled constraints' held-out examples come from every language, not the first one's first rows
    run_training(
        micro,
        tmp_path / "per-language",
        1,
        {
            "train.steps": 1,
            "eval.every": 1,
            "method.memory_batch_size": 4,
            "eval.memory_loss_examples": 8,
            "train.lr": 1e-12,
            "model.dropout": 0.0,
            "method.gem.per_language": "true",
        },
        args=args,
    )
    each = json.loads((tmp_path / "per-language" / "results.json").read_text())["backbone"]["memory_loss"]
    for task in ("mlm", "xsr"):
        languages = [v for k, v in each.items() if k.startswith(task + ".")]
        assert len(languages) >= 2 and all(start[task] != pytest.approx(v, rel=1e-4) for v in languages)


def test_l2sp_pulls_the_encoder_toward_the_pretrained_weights_and_resumes_with_them(micro, tmp_path):
    """alpha (theta - theta_0) on the encoder's gradient: a strong pull keeps it nearer theta_0 than naive does,
    the head is not pulled, and a resumed run pulls toward the same theta_0 (kept in the checkpoint)."""
    from safetensors.torch import load_file

    common = {
        "train.steps": 6,
        "eval.every": 3,
        "output.save_final": "true",
        "eval.before_training": "false",
        "eval.after_training": "false",
    }
    run_training(micro, tmp_path / "naive", 1, common)
    run_training(micro, tmp_path / "l2sp", 1, {**common, "method.name": "l2sp", "method.l2sp_strength": 100.0})
    _, backbone = micro
    start = {k.replace("bert.", "encoder.", 1): v for k, v in load_file(str(backbone / "model.safetensors")).items()}
    moved = {}
    for name in ("naive", "l2sp"):
        final = load_file(str(tmp_path / name / "final.safetensors"))
        moved[name] = sum(float((final[k] - start[k]).norm() ** 2) for k in final if k in start) ** 0.5
    assert moved["l2sp"] < 0.5 * moved["naive"], moved
    # stopped at step 3 and resumed: the same weights as the run that never stopped
    halves = {**common, "method.name": "l2sp", "method.l2sp_strength": 100.0, "output.checkpoint_every": 3}
    run_training(micro, tmp_path / "resumed", 1, {**halves, "train.steps": 3})
    run_training(micro, tmp_path / "resumed", 1, halves, args=("--resume", "--allow-config-change"))
    once, twice = (
        load_file(str(tmp_path / "l2sp" / "final.safetensors")),
        load_file(str(tmp_path / "resumed" / "final.safetensors")),
    )
    assert all(bool((once[k] == twice[k]).all()) for k in once)


def test_lora_trains_adapters_only_and_exports_a_merged_tagger(micro, tmp_path):
    """The encoder's own weights do not move; the adapters and the head do; the export merges the adapters and
    tags exactly as the engine did."""
    pytest.importorskip("peft")
    from safetensors.torch import load_file

    run_training(
        micro,
        tmp_path / "run",
        1,
        {
            "train.steps": 4,
            "eval.every": 2,
            "method.name": "lora",
            "method.lora_rank": 4,
            "output.save_final": "true",
            "output.save_predictions": "true",
            "eval.after_training": "false",
        },
    )
    corpus, backbone = micro
    start = {k.replace("bert.", "encoder.", 1): v for k, v in load_file(str(backbone / "model.safetensors")).items()}
    final = load_file(str(tmp_path / "run" / "final.safetensors"))
    base = {
        k.replace(".base_layer.", "."): v for k, v in final.items() if "lora_" not in k and k.startswith("encoder.")
    }
    assert base and all(bool((v == start[k]).all()) for k, v in base.items() if k in start)
    assert any("lora_B" in k and float(v.abs().max()) > 0 for k, v in final.items())  # B starts at zero: it trained
    assert_exported_tagger_tags_as_the_engine(tmp_path / "run", corpus / "pos" / "es-test.conllu", tmp_path)
