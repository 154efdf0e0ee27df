"""`distgem data check` as a user runs it: JSON summary, one-line errors with exit code 2, no traceback."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.support import CONLLU


def run(*args):
    return subprocess.run(
        [sys.executable, "-m", "distgem.cli", *map(str, args)], capture_output=True, text=True, timeout=120
    )


def test_data_check_json_summary(write):
    result = run("data", "check", "--json", write("fr.conllu", CONLLU))
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["format"] == "conllu" and summary["sentences"] == 2 and summary["tokens"] == 8
    assert summary["labels"]["PUNCT"] == 2 and summary["multiword_tokens"] == 1


def test_data_check_parallel_pair(write):
    result = run("data", "check", "--json", write("a.en", "a b\nc\n"), write("a.es", "x\ny z w\n"))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["pairs"] == 2 and json.loads(result.stdout)["tokens"] == 7


@pytest.mark.parametrize(
    "name, content, fmt, message",
    [
        ("bad.conllu", "1\tx\tx\tNOPE\t_\t_\t0\troot\t_\t_\n", "auto", "bad.conllu:1: unknown UPOS tag 'NOPE'"),
        ("bad.conll", "a O\nb Q-LOC\n", "conll", "bad.conll:2: invalid BIO tag 'Q-LOC'"),
        ("empty.txt", "", "text", "empty.txt: empty file"),
        ("latin1.txt", b"caf\xe9\n", "text", "latin1.txt:1: invalid UTF-8"),
    ],
)
def test_data_check_errors_are_one_line_exit_2(write, name, content, fmt, message):
    result = run("data", "check", "--format", fmt, write(name, content))
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert lines[0].startswith("distgem: error: ") and message in lines[0]


def test_unequal_parallel_files_name_both(write):
    a, b = write("x.en", "1\n2\n3\n"), write("x.es", "1\n2\n")
    result = run("data", "check", a, b)
    assert result.returncode == 2
    assert f"{a} has 3 lines, {b} has 2" in result.stderr and "Traceback" not in result.stderr


def test_missing_file_is_a_user_error(tmp_path):
    result = run("data", "check", tmp_path / "nope.conllu")
    assert result.returncode == 2 and "nope.conllu: no such file" in result.stderr


@pytest.mark.parametrize(
    "env",
    [
        {"HF_HUB_OFFLINE": "1"},
        # no offline flag, and a hub that does not answer: datasets alone retries for ~25 s
        {"HF_HUB_OFFLINE": None, "HF_ENDPOINT": "http://127.0.0.1:9"},
    ],
    ids=["offline-flag", "hub-unreachable"],
)
def test_an_unreachable_hub_name_fails_fast_in_one_line(tmp_path, env):
    import os
    import time

    environment = {k: v for k, v in {**os.environ, "HF_HOME": str(tmp_path / "hf"), **env}.items() if v is not None}
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "distgem.cli", "data", "check", "hf:conll2002/es"],
        capture_output=True,
        text=True,
        timeout=120,
        env=environment,
    )
    elapsed = time.perf_counter() - started
    assert result.returncode == 2 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(
        "distgem: error: hf:conll2002/es: cannot load the Hugging Face dataset 'conll2002' (config 'es')"
    )
    assert "save_to_disk('DIR')" in lines[0] and "hf:DIR" in lines[0] and "local files" in lines[0]
    assert elapsed < 12, f"took {elapsed:.1f} s"  # measured: 2.6-3.4 s with imports on a loaded 2-core machine


def test_data_check_reads_a_saved_hub_dataset(write, tmp_path):
    from tests.hub_fixtures import save_conll2002

    path = write("es.train", "Juan B-PER\nvive O\n\nen O\nMadrid B-LOC\n")
    save_conll2002({"train": path, "dev": path, "test": path}, tmp_path / "conll2002-es")
    result = run("data", "check", "--json", f"hf:{tmp_path / 'conll2002-es'}")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert set(summary["splits"]) == {"train", "validation", "test"}
    assert summary["splits"]["test"]["rows"] == 2 and summary["splits"]["test"]["tokens"] == 4
    assert summary["splits"]["train"]["tags"]["ner_tags"] == {"B-LOC": 1, "B-PER": 1, "O": 2}
    text = run("data", "check", f"hf:{tmp_path / 'conll2002-es'}")
    assert text.returncode == 0 and "train: 2 rows, 4 tokens" in text.stdout
