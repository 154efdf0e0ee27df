"""Every corpus a run needs: resolved from the `data` section, tokenised once into the Arrow cache, opened lazily.

Tagging corpora (10^4 sentences) are read back into memory: every dev evaluation stitches every
window of every sentence. Memory corpora (MLM sentences, XSR pairs: 10^6 per language in the paper)
stay memory-mapped and are indexed per batch (distgem.data.rows). A cache entry's key is the
content of its source (file bytes, or the hub split's fingerprint), the tokenizer, the settings
and the code that encodes, so any change rebuilds it and nothing else does.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from datasets import Dataset, Features, List, Value

from distgem.data import hub, records
from distgem.data.cache import DatasetCache, file_digest
from distgem.data.encode import mono_windows, pair_ids, tagged_windows
from distgem.data.rows import ArrowRows, iter_rows
from distgem.data.tagged import LABELS, TaggedCorpus, corpus_from_rows
from distgem.errors import UserError

TAG_COLUMNS = {"pos": ("upos", "pos_tags"), "ner": ("ner_tags",)}  # hub columns, in order of preference
FILE_FORMATS = {"pos": "conllu", "ner": "conll"}
PARALLEL_MIN_ROWS = 5000  # below this, map's worker processes (~0.2 s each to start) cost more than they save
CODE_MODULES = (
    "distgem.data.lines",
    "distgem.data.text",
    "distgem.data.conll",
    "distgem.data.conllu",
    "distgem.data.align",
    "distgem.data.encode",
    "distgem.data.records",
    "distgem.data.hub",
    "distgem.data.corpora",
)


@dataclass
class Corpora:
    train: TaggedCorpus
    dev: dict[str, TaggedCorpus]
    test: dict[str, TaggedCorpus]
    mono_train: dict[str, Sequence[list[int]]] = field(default_factory=dict)
    mono_eval: dict[str, Sequence[list[int]]] = field(default_factory=dict)
    pairs_train: dict[str, Sequence[tuple]] = field(default_factory=dict)
    pairs_eval: dict[str, Sequence[tuple]] = field(default_factory=dict)


def needed(task, has_mlm: bool) -> tuple[list[str], list[str]]:
    """(mono languages, parallel languages) a run reads: perplexity for every language, XSR for every target."""
    return ([task.source, *task.targets] if has_mlm else []), list(task.targets)


def resolve_root(root: str) -> str:
    """A corpus directory; `embedded:<preset>` is the synthetic world, written on first use."""
    if root.startswith("embedded:"):
        from distgem.world.synthetic import ensure_world

        return str(ensure_world(preset=root.split(":", 1)[1]))
    return root


# {lang3} and {side3} in a template: the ISO 639-3 code, as Tatoeba and LASER name their files (spa-eng)
ISO_639_3 = {
    "en": "eng",
    "es": "spa",
    "fr": "fra",
    "el": "ell",
    "ru": "rus",
    "de": "deu",
    "nl": "nld",
    "it": "ita",
    "pt": "por",
    "ar": "ara",
    "zh": "cmn",
    "ja": "jpn",
    "ko": "kor",
    "hi": "hin",
    "tr": "tur",
    "fi": "fin",
    "pl": "pol",
    "sv": "swe",
    "bg": "bul",
    "cs": "ces",
}


def path_of(data, key: str, lang: str, **fields) -> str:
    """The file (or hf: spec) of `data.<key>` for one language; `data.paths["<key>.<lang>"]` wins over the template."""
    name = f"paths.{key}.{lang}" if f"{key}.{lang}" in data.paths else key
    template = data.paths.get(f"{key}.{lang}", getattr(data, key))
    try:
        root = resolve_root(data.root) if "{root}" in template else data.root
        codes = {f"{k}3": ISO_639_3.get(v, v) for k, v in {"lang": lang, **fields}.items() if k in ("lang", "side")}
        path = template.format(root=root, lang=lang, **fields, **codes)
    except (KeyError, IndexError, ValueError) as err:
        known = ["root", "lang", "lang3", *fields, *(["side3"] if "side" in fields else [])]
        raise UserError(f"data.{name}: bad template {template!r} ({err!r}; placeholders: {', '.join(known)})") from None
    if not hub.is_hub(path) and not Path(path).is_file():
        raise UserError(f"data.{name}: {path}: no such file (template {template!r})")
    return path


def load_corpora(
    data,
    task,
    model,
    tokenizer,
    need_mono: list[str],
    need_pairs: list[str],
    progress: bool = False,
    cache: DatasetCache | None = None,
) -> Corpora:
    """Tagging train (source), dev (targets), test (all); mono and parallel splits for memory and evaluation."""
    cache = cache or DatasetCache(data.cache_dir or None, data.num_proc, progress)
    languages = [task.source, *task.targets]
    # every path first: a missing file fails in one line before anything is tokenised
    for lang, split in [(task.source, "train"), *((t, "dev") for t in task.targets), *((x, "test") for x in languages)]:
        path_of(data, task.name, lang, split=data.ner_splits[split] if task.name == "ner" else split)
    for lang in need_mono:
        path_of(data, "mono", lang)
    for lang in need_pairs:
        if not hub.is_hub(path_of(data, "parallel", lang, side=lang)):
            path_of(data, "parallel", lang, side="en")
    tagged = lambda lang, split: tagged_corpus(cache, data, task.name, lang, split, tokenizer, model)  # noqa: E731
    corpora = Corpora(
        train=tagged(task.source, "train"),
        dev={lang: tagged(lang, "dev") for lang in task.targets},
        test={lang: tagged(lang, "test") for lang in languages},
    )
    for lang in need_mono:
        examples = mono_examples(cache, data, lang, tokenizer, model.max_length)
        held = min(data.mlm_eval_sentences, len(examples) // 2)
        corpora.mono_train[lang], corpora.mono_eval[lang] = examples[:-held], examples[-held:]
    for lang in need_pairs:
        pairs = parallel_pairs(cache, data, lang, tokenizer, model.max_length)
        held = min(data.xsr_eval_pairs, len(pairs) // 2)
        corpora.pairs_train[lang], corpora.pairs_eval[lang] = pairs[:-held], pairs[-held:]
    return corpora


def tagged_corpus(cache: DatasetCache, data, task: str, lang: str, split: str, tokenizer, model) -> TaggedCorpus:
    """One POS/NER split, words, tags and windows (label alignment ran in the cache build)."""
    hub_split = data.hub_splits[split]
    path = path_of(data, task, lang, split=data.ner_splits[split] if task == "ner" else split)
    source = hub.identity(path, hub_split) if hub.is_hub(path) else _file_identity(path)
    key = _key(f"tag-{task}", source, tokenizer, max_length=model.max_length, stride=model.stride)
    gen = {
        "path": path,
        "fmt": FILE_FORMATS[task],
        "labels": tuple(LABELS[task]),
        "split": hub_split,
        "tag_columns": tuple(TAG_COLUMNS[task]),
    }  # tuples: datasets shards over lists
    fn = {"tokenizer": tokenizer, "labels": list(LABELS[task]), "max_length": model.max_length, "stride": model.stride}
    dataset = cache.get(
        f"{task}-{lang}-{split}",
        key,
        lambda tmp, procs: _build(
            tmp, procs, records.tagged_records, gen, "tagged", _tagged_batch, fn, key, remove=False
        ),
    )
    return corpus_from_rows(path, iter_rows(dataset))


def mono_examples(cache: DatasetCache, data, lang: str, tokenizer, max_length: int) -> ArrowRows:
    """MLM examples of one language (a long line is several windows), memory-mapped."""
    path = path_of(data, "mono", lang)
    source = hub.identity(path, None) if hub.is_hub(path) else _file_identity(path)
    key = _key("mlm", source, tokenizer, max_length=max_length, sentences=data.mono_sentences)
    gen = {"path": path, "limit": data.mono_sentences}
    fn = {"tokenizer": tokenizer, "max_length": max_length}
    dataset = cache.get(
        f"mlm-{lang}",
        key,
        lambda tmp, procs: _build(tmp, procs, records.mono_records, gen, "mono", _mono_batch, fn, key),
    )
    return ArrowRows(dataset, ["input_ids"])


def parallel_pairs(cache: DatasetCache, data, lang: str, tokenizer, max_length: int) -> ArrowRows:
    """XSR (source, English) id pairs of one language, memory-mapped."""
    first = path_of(data, "parallel", lang, side=lang)
    second = None if hub.is_hub(first) else path_of(data, "parallel", lang, side="en")
    second = None if second == first else second  # a template without {side}: one two-column TSV
    if hub.is_hub(first):
        source = {**hub.identity(first, None), "lang": lang}
    else:
        source = [_file_identity(p) for p in (first, second) if p is not None]
    key = _key("xsr", source, tokenizer, max_length=max_length)
    gen = {"source": first, "target": second, "lang": lang}
    fn = {"tokenizer": tokenizer, "max_length": max_length}
    dataset = cache.get(
        f"xsr-{lang}",
        key,
        lambda tmp, procs: _build(tmp, procs, records.parallel_records, gen, "parallel", _pair_batch, fn, key),
    )
    return ArrowRows(dataset, ["source_ids", "target_ids"])


# --- building an entry: rows -> Arrow (from_generator) -> tokenised Arrow (map), both under `tmp` ---

_IDS = List(Value("int32"))  # vocabularies stay far below 2^31: half the bytes of int64
OUTPUT = {
    "tagged": Features(
        {
            **records.FEATURES["tagged"],
            "input_ids": List(_IDS),
            "word_ids": List(_IDS),
            "labels": List(_IDS),
            "spans": List(_IDS),
        }
    ),  # per sentence, one list per window
    "mono": Features({"input_ids": _IDS}),
    "parallel": Features({"source_ids": _IDS, "target_ids": _IDS}),
}


def _build(
    tmp: Path,
    num_proc: int,
    generator,
    gen_kwargs: dict,
    kind: str,
    function,
    fn_kwargs: dict,
    key: dict,
    remove: bool = True,
) -> Dataset:
    fingerprint = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]
    raw = Dataset.from_generator(
        generator,
        features=records.FEATURES[kind],
        gen_kwargs=gen_kwargs,
        cache_dir=str(tmp / "raw"),
        fingerprint=f"raw{fingerprint}",
    )
    procs = num_proc if num_proc > 1 and raw.num_rows >= PARALLEL_MIN_ROWS else None
    # Record batches of 10K rows, not datasets' 1000: opening a memory-mapped stream reads every batch's
    # header, and the kernel maps 64 KB around each, so small batches make the whole file resident.
    rows = 1000 if kind == "tagged" else 10_000
    # fingerprints given, not computed: datasets would otherwise pickle and hash the tokenizer
    return raw.map(
        function,
        fn_kwargs=fn_kwargs,
        batched=True,
        batch_size=rows,
        writer_batch_size=rows,
        num_proc=procs,
        remove_columns=raw.column_names if remove else None,
        features=OUTPUT[kind],
        cache_file_name=str(tmp / "data.arrow"),
        new_fingerprint=f"tok{fingerprint}",
        desc=f"tokenising {kind}",
    )


def _tagged_batch(batch: dict, tokenizer, labels: list[str], max_length: int, stride: int) -> dict:
    index = {tag: i for i, tag in enumerate(labels)}
    ids = [[index[t] for t in tags] for tags in batch["tags"]]
    return tagged_windows(batch["words"], ids, tokenizer, max_length, stride)


def _mono_batch(batch: dict, tokenizer, max_length: int) -> dict:
    return {"input_ids": mono_windows(batch["text"], tokenizer, max_length)}


def _pair_batch(batch: dict, tokenizer, max_length: int) -> dict:
    sources, targets = pair_ids(batch["source"], batch["target"], tokenizer, max_length)
    return {"source_ids": sources, "target_ids": targets}


# --- cache keys ---


def _key(kind: str, source, tokenizer, **settings) -> dict:
    return {"kind": kind, "source": source, "tokenizer": tokenizer_digest(tokenizer), "code": code_digest(), **settings}


def _file_identity(path: str) -> dict:
    return {"bytes": os.path.getsize(path), "xxh3": file_digest(path)}


def tokenizer_digest(tokenizer) -> str:
    """What tokenising depends on: the backend's full JSON (vocabulary, normaliser, templates), the special tokens."""
    cached = getattr(tokenizer, "_distgem_digest", None)
    if cached is None:
        digest = hashlib.sha256(tokenizer.backend_tokenizer.to_str().encode())
        digest.update(
            json.dumps([type(tokenizer).__name__, tokenizer.special_tokens_map], sort_keys=True, default=str).encode()
        )
        cached = tokenizer._distgem_digest = digest.hexdigest()[:32]
    return cached


@lru_cache(maxsize=1)
def code_digest() -> str:
    """Hash of the modules that read and encode: a cache entry is rebuilt whenever their code changes."""
    digest = hashlib.sha256()
    for name in CODE_MODULES:
        digest.update(Path(importlib.util.find_spec(name).origin).read_bytes())
    return digest.hexdigest()[:16]
