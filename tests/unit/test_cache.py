"""The `datasets` cache of tokenised corpora: same rows as the in-memory path, reused, rebuilt when corrupt."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from distgem.config.sections import load_run_config
from distgem.data import corpora as corpora_module
from distgem.data import records
from distgem.data.cache import DatasetCache, default_directory
from distgem.data.corpora import load_corpora, mono_examples
from distgem.data.tagged import load_tagged
from distgem.errors import InputError
from distgem.tasks import mlm, xsr
from tests.local_tokenizers import TOKENIZERS
from tests.support import ROOT, write_micro_corpus

LANGS = ["en", "es", "el"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_micro_corpus(tmp_path_factory.mktemp("corpus"))


def _config(corpus: Path, cache: Path, *extra: str):
    return load_run_config(
        [],
        [
            f"data.root={corpus}",
            f"data.cache_dir={cache}",
            "task.targets=[es, el]",
            "data.mlm_eval_sentences=16",
            "data.xsr_eval_pairs=16",
            "model.max_length=16",
            "model.stride=4",
            *extra,
        ],
    )


def _load(config, tokenizer, cache: DatasetCache | None = None):
    cache = cache or DatasetCache(config.data.cache_dir, config.data.num_proc)
    loaded = load_corpora(config.data, config.task, config.model, tokenizer, LANGS, ["es", "el"], cache=cache)
    return loaded, cache


@pytest.mark.parametrize("num_proc", [1, 2])
@pytest.mark.parametrize("kind", list(TOKENIZERS))
def test_cached_corpora_equal_the_in_memory_encoding(corpus, tmp_path, monkeypatch, kind, num_proc):
    monkeypatch.setattr(corpora_module, "PARALLEL_MIN_ROWS", 0)  # 2 workers even on small files: shards in order
    tokenizer = TOKENIZERS[kind]()
    config = _config(corpus, tmp_path, f"data.num_proc={num_proc}")
    loaded, cache = _load(config, tokenizer)
    assert all(e.built for e in cache.entries) and len(cache.entries) == 6 + 3 + 2
    for name, split in (("train", "en-train"), ("dev", "es-dev"), ("test", "el-test")):
        got = loaded.train if name == "train" else getattr(loaded, name)[split[:2]]
        want = load_tagged(str(corpus / "pos" / f"{split}.conllu"), "pos", tokenizer, 16, 4)
        assert (got.words, got.tags, got.windows) == (want.words, want.tags, want.windows), split
    for lang in LANGS:
        want = mlm.load_mono(str(corpus / "mono" / f"{lang}.txt"), tokenizer, 16)
        got = list(loaded.mono_train[lang]) + list(loaded.mono_eval[lang])
        assert got == want and len(loaded.mono_eval[lang]) == 16
    for lang in ("es", "el"):
        want = xsr.load_pairs(
            str(corpus / "parallel" / f"en-{lang}.{lang}"), str(corpus / "parallel" / f"en-{lang}.en"), tokenizer, 16
        )
        assert list(loaded.pairs_train[lang]) + list(loaded.pairs_eval[lang]) == want


def test_second_load_reads_no_text_and_tokenises_nothing(corpus, tmp_path, monkeypatch):
    tokenizer = TOKENIZERS["wordpiece"]()
    config = _config(corpus, tmp_path)
    first, _ = _load(config, tokenizer)

    def refuse(*args, **kwargs):
        raise AssertionError("a cached corpus was read again")

    for name in ("read_text", "read_parallel"):
        monkeypatch.setattr(records, name, refuse)
    monkeypatch.setattr(records, "FILE_READERS", {"conllu": refuse, "conll": refuse})
    monkeypatch.setattr(corpora_module, "mono_windows", refuse)
    second, cache = _load(config, tokenizer)  # a fresh cache object: as a second job or rank would
    assert not any(e.built for e in cache.entries)
    assert list(second.mono_train["es"]) == list(first.mono_train["es"])
    assert second.train.windows == first.train.windows


def test_a_change_rebuilds_exactly_the_entries_it_touches(corpus, tmp_path):
    tokenizer = TOKENIZERS["wordpiece"]()
    copy = write_micro_corpus(tmp_path / "copy")  # same bytes in another directory: content-keyed, so cached
    _load(_config(corpus, tmp_path / "cache"), tokenizer)
    _, cache = _load(_config(copy, tmp_path / "cache"), tokenizer)
    assert not any(e.built for e in cache.entries)
    (copy / "mono" / "es.txt").write_text((copy / "mono" / "es.txt").read_text() + "una frase nueva .\n")
    _, cache = _load(_config(copy, tmp_path / "cache"), tokenizer)
    assert [e.name for e in cache.entries if e.built] == ["mlm-es"]
    _, cache = _load(_config(copy, tmp_path / "cache", "model.max_length=20"), tokenizer)
    assert all(e.built for e in cache.entries)  # every encoding depends on the window
    _, cache = _load(_config(copy, tmp_path / "cache"), TOKENIZERS["sentencepiece"]())
    assert all(e.built for e in cache.entries)


@pytest.mark.parametrize("damage", ["truncate", "flip", "no-manifest", "missing-file"])
def test_a_damaged_entry_is_detected_and_rebuilt(corpus, tmp_path, capsys, damage):
    tokenizer = TOKENIZERS["wordpiece"]()
    config = _config(corpus, tmp_path)
    cache = DatasetCache(tmp_path)
    good = list(mono_examples(cache, config.data, "en", tokenizer, 16))
    entry = cache.entries[0].path
    arrow = next(entry.glob("*.arrow"))
    if damage == "truncate":  # what a killed copy or a full disk leaves
        arrow.write_bytes(arrow.read_bytes()[: arrow.stat().st_size // 2])
    elif damage == "flip":  # same size, different bytes: only the digest can tell
        data = bytearray(arrow.read_bytes())
        data[len(data) // 2] ^= 0xFF
        arrow.write_bytes(bytes(data))
    elif damage == "no-manifest":
        (entry / "manifest.json").unlink()
    else:
        arrow.unlink()
    capsys.readouterr()
    again = DatasetCache(tmp_path)
    rows = mono_examples(again, config.data, "en", tokenizer, 16)
    assert again.entries[0].built, "the damaged entry was trusted"
    assert f"cache entry {entry} is corrupt" in capsys.readouterr().err
    assert list(rows) == good
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name or ".corrupt-" in p.name]


def test_bad_input_is_one_line_and_leaves_no_entry(tmp_path, write):
    corpus = write_micro_corpus(tmp_path / "corpus")
    rows = (corpus / "pos" / "es-dev.conllu").read_text().splitlines()
    line = next(i for i, text in enumerate(rows, 1) if text and not text.startswith("#"))
    columns = rows[line - 1].split("\t")
    rows[line - 1] = "\t".join(columns[:3] + ["NOPE"] + columns[4:])
    (corpus / "pos" / "es-dev.conllu").write_text("\n".join(rows) + "\n")
    with pytest.raises(InputError) as err:
        _load(_config(corpus, tmp_path / "cache"), TOKENIZERS["wordpiece"]())
    assert str(err.value).startswith(f"{corpus / 'pos' / 'es-dev.conllu'}:{line}: unknown UPOS tag 'NOPE'")
    assert not [
        p
        for p in (tmp_path / "cache").iterdir()
        if p.name.startswith(("pos-es-dev", ".pos-es-dev-")) and not p.name.endswith(".lock")
    ]


def test_rows_are_memory_mapped_not_loaded(tmp_path):
    import pyarrow as pa

    lines = [" ".join(f"w{(i * 7 + j) % 97}" for j in range(5 + i % 20)) for i in range(30_000)]
    (tmp_path / "mono").mkdir()
    (tmp_path / "mono" / "en.txt").write_text("\n".join(lines) + "\n")
    config = _config(tmp_path, tmp_path / "cache")
    tokenizer = TOKENIZERS["wordpiece"]()
    mono_examples(DatasetCache(tmp_path / "cache"), config.data, "en", tokenizer, 16)  # build
    before = pa.total_allocated_bytes()
    cache = DatasetCache(tmp_path / "cache")
    rows = mono_examples(cache, config.data, "en", tokenizer, 16)
    sample = [rows[i] for i in range(0, len(rows), 97)]
    assert len(rows) > 30_000 and all(r[0] == tokenizer.cls_token_id for r in sample)
    assert cache.entries[0].bytes > 2_000_000
    assert pa.total_allocated_bytes() - before < 200_000, "the Arrow data was copied into memory"


def test_concurrent_jobs_build_an_entry_once(tmp_path):
    tokenizer = TOKENIZERS["wordpiece"]()
    tokenizer.save_pretrained(tmp_path / "tokenizer")  # one tokenizer for every job (training is not deterministic)
    (tmp_path / "mono").mkdir()
    (tmp_path / "mono" / "en.txt").write_text("\n".join(f"the cat {i} sat on the mat" for i in range(40_000)) + "\n")
    script = (
        "import json, sys; from transformers import AutoTokenizer; from distgem.config.sections import load_run_config;"
        "from distgem.data.cache import DatasetCache; from distgem.data.corpora import mono_examples;"
        f"config = load_run_config([], ['data.root={tmp_path}', 'data.cache_dir={tmp_path / 'cache'}']);"
        f"tokenizer = AutoTokenizer.from_pretrained('{tmp_path / 'tokenizer'}'); "
        f"cache = DatasetCache('{tmp_path / 'cache'}');"
        "rows = mono_examples(cache, config.data, 'en', tokenizer, 16);"
        "print(json.dumps([cache.entries[0].built, len(rows), rows[123]]))"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    jobs = [
        subprocess.Popen(
            [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
        for _ in range(3)
    ]
    results = []
    for job in jobs:
        out, err = job.communicate(timeout=300)
        assert job.returncode == 0, err[-2000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert sorted(r[0] for r in results) == [False, False, True], "built more than once (or never)"
    assert len({json.dumps(r[1:]) for r in results}) == 1
    assert not [p for p in (tmp_path / "cache").iterdir() if ".tmp-" in p.name]


def test_default_directory_follows_distgem_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("DISTGEM_CACHE", str(tmp_path))
    assert default_directory() == tmp_path / "datasets"
    assert DatasetCache(None).directory == tmp_path / "datasets"
    assert DatasetCache("").directory == tmp_path / "datasets"
