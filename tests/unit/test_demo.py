"""The demo's table says which model each row scores, and its last lines say what to type next."""

from __future__ import annotations

from distgem.demo import NOISE, next_commands, table


def _results(method: str, best_step: int | None, end_p1: float, tested_p1: float) -> dict:
    memory = lambda p1, ppl: {"mlm_perplexity": {"en": ppl, "es": ppl + 1}, "xsr": {"es": {"p@1": p1}}}  # noqa: E731
    gem = {"memory_strength": 0.5}
    return {
        "run": {"task": "pos"},
        "train": {"steps": 300},
        "config": {"method": {"name": method, "gem": gem}},
        "test": {"per_language": {"en": {"score": 97.0}, "es": {"score": 60.0}}, "average": 60.0},
        "backbone": memory(70.0, 90.0),
        "dev": {
            "best_step": best_step,
            "history": [{"step": 150, "memory": memory(30.0, 150.0)}, {"step": 300, "memory": memory(end_p1, 300.0)}],
        },
        "after": memory(tested_p1, 150.0),
    }


def test_rows_name_the_step_of_the_model_they_score():
    text = table({"naive": _results("naive", 150, 12.6, 30.0), "gem-both": _results("gem", 300, 50.0, 50.0)})
    zero_shot, perplexity, retrieval = (
        {line[:44].strip(): line[44:].split() for line in block.splitlines()} for block in text.split("\n\n")
    )
    assert zero_shot["naive (step 150, best dev)"] == ["97.0", "60.0", "60.0"]
    assert zero_shot["gem-both (margin 0.5) (step 300, best dev)"][0] == "97.0"  # the setting it ran with
    assert retrieval["backbone (step 0)"] == ["70.0"]
    assert retrieval["naive, end (step 300)"] == ["12.6"]  # what was forgotten by the end ...
    assert retrieval["naive, tested (step 150, best dev)"] == ["30.0"]  # ... and what the selected model kept
    assert perplexity["naive, end (step 300)"] == ["300.0", "301.0"]


def test_the_demo_ends_with_the_next_commands():
    text = next_commands("runs/demo")
    assert "source " in text and ".venv/bin/activate" in text
    assert "tensorboard --logdir runs/demo" in text and "distgem report runs/demo" in text
    assert "distgem export runs/demo/gem-both" in text


def test_only_the_launchers_expected_messages_are_filtered():
    assert NOISE.match("[2026-12-05 10:58:34,912] [INFO] [launch.py:174:main] Setting CUDA_VISIBLE_DEVICES=0,1")
    assert NOISE.match("[2026-12-05 10:58:25,294] [WARNING] [runner.py:214:fetch_hostfile] Unable to find hostfile")
    assert not NOISE.match("test average (pos, targets): 9.84  -> runs/demo/naive/results.json")
    assert not NOISE.match("[2026-12-05 10:58:25,294] [ERROR] [launch.py:1:main] a real problem")
