"""Readers on the real UD, CoNLL-2002 and Tatoeba files, against counts made independently here."""

from __future__ import annotations

import re

import pytest

from distgem.data.readers import summarise
from tests.conftest import REAL

pytestmark = pytest.mark.real_data

UD = sorted(p.name for p in (REAL / "ud").glob("*.conllu")) if REAL.is_dir() else ["absent"]
EXPECTED_SENTENCES = {
    "en_ewt-ud-train.conllu": 12544,
    "en_ewt-ud-dev.conllu": 2001,
    "en_ewt-ud-test.conllu": 2077,
    "fr_gsd-ud-test.conllu": 416,
    "el_gdt-ud-test.conllu": 456,
    "es_gsd-ud-test.conllu": 427,
}


def _independent_conllu_counts(path):
    text = path.read_text(encoding="utf-8-sig")
    ids = [line.split("\t", 1)[0] for line in text.splitlines() if line and not line.startswith("#")]
    blocks = [b for b in re.split(r"\n\s*\n", text) if any(re.match(r"\d+\t", ln) for ln in b.splitlines())]
    return {
        "sentences": len(blocks),
        "tokens": sum(1 for i in ids if i.isdigit()),
        "multiword_tokens": sum(1 for i in ids if re.fullmatch(r"\d+-\d+", i)),
        "empty_nodes": sum(1 for i in ids if re.fullmatch(r"\d+\.\d+", i)),
    }


@pytest.mark.parametrize("name", UD)
def test_ud_counts_match_independent_counts(name):
    path = REAL / "ud" / name
    summary = summarise(path)
    expected = _independent_conllu_counts(path)
    assert {k: summary[k] for k in expected} == expected
    assert sum(summary["labels"].values()) == summary["tokens"]
    if name in EXPECTED_SENTENCES:
        assert summary["sentences"] == EXPECTED_SENTENCES[name]


def test_ud_english_has_multiword_tokens_and_empty_nodes():
    summary = summarise(REAL / "ud" / "en_ewt-ud-train.conllu")
    assert summary["multiword_tokens"] > 0 and summary["empty_nodes"] > 0
    assert len(summary["labels"]) == 17


@pytest.mark.parametrize("split", ["train", "testa", "testb"])
def test_conll2002_counts(split):
    path = REAL / "conll2002" / f"esp.{split}"
    lines = path.read_text(encoding="utf-8").splitlines()
    tokens = [ln for ln in lines if ln.strip() and not ln.startswith("-DOCSTART-")]
    sentences = sum(
        1
        for i, ln in enumerate(lines)
        if ln.strip()
        and not ln.startswith("-DOCSTART-")
        and (i == 0 or not lines[i - 1].strip() or lines[i - 1].startswith("-DOCSTART-"))
    )
    summary = summarise(path, fmt="conll")
    assert (summary["sentences"], summary["tokens"]) == (sentences, len(tokens))
    assert summary["entities"] >= sum(1 for ln in tokens if ln.split()[-1].startswith("B-"))
    assert set(t[2:] for t in summary["labels"] if t != "O") == {"PER", "LOC", "ORG", "MISC"}


@pytest.mark.parametrize("lang", ["spa", "fra", "ell"])
def test_tatoeba_pairs(lang):
    xx = REAL / "tatoeba" / f"tatoeba.{lang}-eng.{lang}"
    en = REAL / "tatoeba" / f"tatoeba.{lang}-eng.eng"
    summary = summarise(xx, en)
    assert summary["pairs"] == len(xx.read_text(encoding="utf-8").splitlines()) == 1000
    assert summary["source_tokens"] == sum(len(ln.split()) for ln in xx.read_text(encoding="utf-8").splitlines())
