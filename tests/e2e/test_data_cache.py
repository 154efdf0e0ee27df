"""`distgem data prepare` caches what a run reads; hub-schema datasets train exactly like the same files."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.hub_fixtures import save_micro_as_hub
from tests.support import ROOT, micro_overrides, read_steps, run_training


def _prepare(micro, run_dir, cache, **extra):
    corpus, backbone = micro
    overrides = micro_overrides(corpus, backbone, run_dir, **{"data.cache_dir": str(cache), **extra})
    command = [sys.executable, "-m", "distgem.cli", "data", "prepare", *[a for o in overrides for a in ("--set", o)]]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=ROOT)


def _entries(cache) -> dict[str, int]:
    return {
        p.name: (p / "manifest.json").stat().st_mtime_ns for p in cache.iterdir() if (p / "manifest.json").is_file()
    }


def _untimed(steps: list[dict]) -> list[dict]:
    timed = ("samples_per_s", "gem/projection_ms")
    return [{k: v for k, v in s.items() if k not in timed and not k.startswith("system/")} for s in steps]


def test_prepare_caches_everything_a_run_reads(micro, tmp_path):
    cache = tmp_path / "cache"
    first = _prepare(micro, tmp_path / "run", cache)
    assert first.returncode == 0, first.stderr
    head = first.stdout.splitlines()[0]
    # pos train (en), dev (es, el), test (en, es, el); MLM for 3 languages; XSR for 2
    assert head.startswith(f"prepared 11 corpora in {cache} (11 built, 0 already cached;"), head
    assert sum(line.startswith("  built ") for line in first.stdout.splitlines()) == 11
    assert any(line.split()[1] == "mlm-en" and "rows" in line for line in first.stdout.splitlines()[1:])
    built = _entries(cache)
    assert len(built) == 11
    second = _prepare(micro, tmp_path / "run", cache)
    assert second.returncode == 0 and "(0 built, 11 already cached;" in second.stdout
    run_training(micro, tmp_path / "run", 1, {"data.cache_dir": str(cache), "train.steps": 2, "eval.every": 2})
    assert _entries(cache) == built, "the run tokenised something prepare had not cached"


def test_prepare_reports_bad_input_in_one_line(micro, tmp_path):
    result = _prepare(micro, tmp_path / "run", tmp_path / "cache", **{"data.mono": "{root}/nope/{lang}.txt"})
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"distgem: error: data.mono: {micro[0]}/nope/en.txt: no such file (template '{{root}}/nope/{{lang}}.txt')"
    ]
    bad = tmp_path / "bad.txt"
    bad.write_bytes("good line\ncaf\xe9\n".encode("latin-1"))
    result = _prepare(micro, tmp_path / "run", tmp_path / "cache", **{"data.paths": f"{{mono.es: '{bad}'}}"})
    assert result.returncode == 2 and "Traceback" not in result.stderr  # after the progress bars, one line:
    assert result.stderr.strip().splitlines()[-1] == f"distgem: error: {bad}:2: invalid UTF-8 (byte 0xe9 at column 4)"
    assert not [p for p in (tmp_path / "cache").iterdir() if p.name.startswith("mlm-es")]


@pytest.mark.parametrize("task", ["pos", "ner"])
def test_hub_schema_datasets_train_and_evaluate_like_the_same_files(micro, tmp_path, task):
    """UD (with `_` multiword tokens), conll2002, PAN-X, wikipedia, tatoeba / translation schemas, saved with
    save_to_disk and read as hf:DIR, give the run the very batches the equivalent files give."""
    corpus, _ = micro
    paths = save_micro_as_hub(corpus, tmp_path / "hub", task)
    settings = {
        "task.name": task,
        "method.name": "gem",
        "method.memory": "[mlm, xsr]",
        "train.steps": 3,
        "eval.every": 3,
    }
    run_training(micro, tmp_path / "files", 1, settings)
    mapping = "{" + ", ".join(f"{k}: '{v}'" for k, v in paths.items()) + "}"
    run_training(
        micro, tmp_path / "hub-run", 1, {**settings, "data.paths": mapping, "data.cache_dir": str(tmp_path / "cache")}
    )
    files, hub = (json.loads((tmp_path / d / "results.json").read_text()) for d in ("files", "hub-run"))
    assert hub["config"]["data"]["paths"][f"{task}.en"].startswith("hf:")
    assert _untimed(read_steps(tmp_path / "hub-run")) == _untimed(read_steps(tmp_path / "files"))
    assert hub["test"] == files["test"] and hub["dev"] == files["dev"]
    assert hub["backbone"] == files["backbone"] and hub["after"] == files["after"]
    assert set(hub["test"]["per_language"]) == {"en", "es", "el"} and set(hub["after"]["xsr"]) == {"es", "el"}
