"""The synthetic world: deterministic bytes, every file in the real formats, languages kept apart."""

from __future__ import annotations

import json
import unicodedata
from collections import defaultdict
from pathlib import Path

import pytest

from distgem.data.conllu import UPOS_TAGS
from distgem.data.readers import read_conll, read_conllu, read_parallel, read_text
from distgem.world.synthetic import LANGUAGES, PRESETS, TARGETS, write_world

PUNCT = set(".,!?%")


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("world") / "w"
    write_world(root, seed=3, preset="test")
    return root


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _conllu_rows(path: Path) -> list[list[list[str]]]:
    """Sentences as lists of 10-column rows (comments dropped, ranges kept)."""
    blocks = path.read_text(encoding="utf-8").split("\n\n")
    return [
        [line.split("\t") for line in block.splitlines() if not line.startswith("#")]
        for block in blocks
        if block.strip()
    ]


def _surface_words(root: Path, lang: str) -> set[str]:
    words: set[str] = set()
    for path in sorted((root / "pos").glob(f"{lang}-*.conllu")):
        for sentence in read_conllu(path):
            words.update(sentence.words)
    for path in sorted((root / "ner").glob(f"{lang}.*")):
        for sentence in read_conll(path):
            words.update(sentence.words)
    for line in read_text(root / "mono" / f"{lang}.txt"):
        words.update(line.text.replace(".", " ").replace(",", " ").replace("!", " ").replace("?", " ").split())
    return words


def test_same_seed_same_bytes_other_seed_other_bytes(world, tmp_path):
    write_world(tmp_path / "again", seed=3, preset="test")
    write_world(tmp_path / "other", seed=4, preset="test")
    first, again, other = _files(world), _files(tmp_path / "again"), _files(tmp_path / "other")
    assert first == again
    assert first.keys() == other.keys() and first["mono/en.txt"] != other["mono/en.txt"]


def test_every_language_and_file_is_present_and_inventoried(world):
    info = json.loads((world / "world.json").read_text(encoding="utf-8"))
    expected = {f"pos/{lang}-{split}.conllu" for lang in LANGUAGES for split in ("train", "dev", "test")}
    expected |= {f"ner/{lang}.{split}" for lang in LANGUAGES for split in ("train", "testa", "testb")}
    expected |= {f"mono/{lang}.txt" for lang in LANGUAGES}
    expected |= {f"parallel/en-{lang}.{side}" for lang in TARGETS for side in ("en", lang)}
    assert set(info["files"]) == expected
    assert set(_files(world)) == expected | {"world.json"}
    assert {"es", "fr", "el", "ru", "de", "nl"} <= set(info["targets"])
    for name, entry in info["files"].items():
        assert (world / name).read_text(encoding="utf-8").count("\n") == entry["lines"], name


def test_every_file_passes_the_readers(world):
    sizes = PRESETS["test"]
    for lang in LANGUAGES:
        for split in ("train", "dev", "test"):
            sentences = list(read_conllu(world / "pos" / f"{lang}-{split}.conllu"))
            assert len(sentences) == (
                sizes.pos_eval if split != "train" else sizes.pos_train_source if lang == "en" else sizes.pos_train
            )
            assert {t for s in sentences for t in s.tags} <= set(UPOS_TAGS)
        for split in ("train", "testa", "testb"):
            assert list(read_conll(world / "ner" / f"{lang}.{split}"))
        assert len(list(read_text(world / "mono" / f"{lang}.txt"))) == sizes.mono
    for lang in TARGETS:
        pairs = list(read_parallel(world / "parallel" / f"en-{lang}.en", world / "parallel" / f"en-{lang}.{lang}"))
        assert len(pairs) == sizes.parallel


def test_scripts_greek_and_cyrillic(world):
    info = json.loads((world / "world.json").read_text(encoding="utf-8"))
    names = {n for group in info["names"].values() for n in group}
    expected = {"el": "GREEK", "ru": "CYRILLIC", "en": "LATIN", "de": "LATIN"}
    for lang, script in expected.items():
        letters = [c for w in _surface_words(world, lang) - names for c in w if c.isalpha()]
        assert letters and all(unicodedata.name(c).startswith(script) for c in letters), lang


def test_no_surface_form_shared_with_english_but_names_numbers_punctuation(world):
    info = json.loads((world / "world.json").read_text(encoding="utf-8"))
    names = {n for group in info["names"].values() for n in group}
    english = _surface_words(world, "en")
    for lang in TARGETS:
        shared = english & _surface_words(world, lang)
        assert shared, "names, digits and punctuation are the only anchors, and there are some"
        assert all(w in names or w.isdigit() or w in PUNCT for w in shared), (lang, sorted(shared)[:10])


def test_multiword_tokens_in_french_and_spanish_only(world):
    for lang in LANGUAGES:
        ranges = [
            (sentence, row)
            for path in sorted((world / "pos").glob(f"{lang}-*.conllu"))
            for sentence in _conllu_rows(path)
            for row in sentence
            if "-" in row[0]
        ]
        assert bool(ranges) == (lang in ("es", "fr")), lang
        for sentence, row in ranges:
            first, last = map(int, row[0].split("-"))
            words = [r for r in sentence if r[0] in (str(first), str(last))]
            assert last == first + 1 and [w[3] for w in words] == ["ADP", "DET"]
            assert row[1] not in (words[0][1], words[1][1])  # one orthographic token for two words


def test_dependency_trees_and_text_comments(world):
    for path in sorted((world / "pos").glob("*.conllu")):
        text = [
            line[len("# text = ") :]
            for line in path.read_text(encoding="utf-8").splitlines()
            if line.startswith("# text = ")
        ]
        for sentence, expected_text in zip(_conllu_rows(path), text, strict=True):
            words = [r for r in sentence if r[0].isdigit()]
            heads = {int(r[0]): int(r[6]) for r in words}
            assert sum(h == 0 for h in heads.values()) == 1
            for start in heads:  # every word reaches the root without a cycle
                seen, node = set(), start
                while node != 0:
                    assert node not in seen and node in heads, path
                    seen.add(node)
                    node = heads[node]
            tokens, skip = [], set()
            for r in sentence:
                if "-" in r[0]:
                    a, b = map(int, r[0].split("-"))
                    skip |= set(range(a, b + 1))
                elif int(r[0]) in skip:
                    continue
                tokens.append(r[1] + ("" if "SpaceAfter=No" in r[9] else " "))
            assert "".join(tokens).strip() == expected_text


def test_ner_tags_are_iob2_with_the_four_types(world):
    types = set()
    for lang in LANGUAGES:
        for split in ("train", "testa", "testb"):
            path = world / "ner" / f"{lang}.{split}"
            for line in path.read_text(encoding="utf-8").splitlines():
                if line and not line.startswith("-DOCSTART-"):
                    assert len(line.split(" ")) == 3, (path, line)
            for sentence in read_conll(path):
                previous = "O"
                for tag in sentence.tags:
                    assert tag == "O" or tag[:2] in ("B-", "I-")
                    if tag.startswith("I-"):
                        assert previous[2:] == tag[2:], (path, sentence.tags)
                    types.add(tag[2:])
                    previous = tag
            raw = [
                line.split(" ")[-1]
                for line in path.read_text(encoding="utf-8").splitlines()
                if line and not line.startswith("-DOCSTART-")
            ]
            assert [t for s in read_conll(path) for t in s.tags] == raw  # written as IOB2, not converted
    assert types - {""} == {"PER", "LOC", "ORG", "MISC"}


def test_tagging_needs_context_some_forms_have_two_tags(world):
    for lang in ("en", "es", "fr", "nl"):
        tags = defaultdict(set)
        for path in sorted((world / "pos").glob(f"{lang}-*.conllu")):
            for sentence in read_conllu(path):
                for word, tag in zip(sentence.words, sentence.tags):
                    tags[word.lower()].add(tag)
        assert any(len(t) > 1 for t in tags.values()), lang


def test_heldout_pairs_are_unseen_in_training_text(world):
    held = PRESETS["test"].heldout
    mono = {line.text for line in read_text(world / "mono" / "en.txt")}
    for lang in TARGETS:
        pairs = list(read_parallel(world / "parallel" / f"en-{lang}.en", world / "parallel" / f"en-{lang}.{lang}"))
        english = [p.source for p in pairs]
        assert len(set(english)) == len(english)  # retrieval has one right answer per query
        assert not {p.source for p in pairs[-held:]} & mono
        assert not {p.target for p in pairs[-held:]} & {line.text for line in read_text(world / "mono" / f"{lang}.txt")}


def test_tiny_preset_sizes(tmp_path):
    info = write_world(tmp_path / "tiny", seed=0, preset="tiny")
    sizes = info["sizes"]
    assert sizes["pos_train_source"] >= 2000 and sizes["pos_eval"] >= 200 and sizes["mono"] >= 2000
    assert info["heldout"]["parallel"] >= 500 and sizes["parallel"] - info["heldout"]["parallel"] >= 2000
    assert info["files"]["parallel/en-el.el"]["lines"] == sizes["parallel"]
