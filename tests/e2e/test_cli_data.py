"""`distgem data check` as a user runs it: JSON summary, one-line errors with exit code 2, no traceback."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.unit.test_readers import CONLLU


def run(*args):
    return subprocess.run([sys.executable, "-m", "distgem.cli", *map(str, args)], capture_output=True, text=True, timeout=120)


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


@pytest.mark.parametrize("name, content, fmt, message", [
    ("bad.conllu", "1\tx\tx\tNOPE\t_\t_\t0\troot\t_\t_\n", "auto", "bad.conllu:1: unknown UPOS tag 'NOPE'"),
    ("bad.conll", "a O\nb Q-LOC\n", "conll", "bad.conll:2: invalid BIO tag 'Q-LOC'"),
    ("empty.txt", "", "text", "empty.txt: empty file"),
    ("latin1.txt", b"caf\xe9\n", "text", "latin1.txt:1: invalid UTF-8"),
])
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
