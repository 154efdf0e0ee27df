"""Datasets in the Hugging Face hub's schemas, built offline from the micro corpus and saved with save_to_disk.

Features copy the hub datasets' (universal_dependencies, conll2002, xtreme PAN-X and tatoeba,
wikipedia, europarl-style translations), so that `hf:DIR` goes through the same schema mapping a
downloaded copy would.
"""

from __future__ import annotations

from pathlib import Path

from datasets import ClassLabel, Dataset, DatasetDict, Features, List, Translation, Value

from distgem.data.conll import read_conll
from distgem.data.conllu import read_conllu
from distgem.data.text import read_parallel, read_text

# the order of the hub's ClassLabel names (not ours): the mapping must go through the names
UD_UPOS = [
    "NOUN",
    "PUNCT",
    "ADP",
    "NUM",
    "SYM",
    "SCONJ",
    "ADJ",
    "PART",
    "DET",
    "CCONJ",
    "PROPN",
    "PRON",
    "X",
    "_",
    "ADV",
    "INTJ",
    "VERB",
    "AUX",
]
CONLL2002_NER = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]
CONLL2002_POS = [
    "AO",
    "AQ",
    "CC",
    "CS",
    "DA",
    "DE",
    "DD",
    "DI",
    "DN",
    "DP",
    "DT",
    "Faa",
    "Fat",
    "Fc",
    "NC",
    "NP",
    "VMI",
]
PANX_NER = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC"]
PENN_POS = ["NN", "NNP", "VBZ", "DT", "JJ", "."]

_strings = List(Value("string"))
UD_FEATURES = Features(
    {
        "idx": Value("string"),
        "text": Value("string"),
        "tokens": _strings,
        "lemmas": _strings,
        "upos": List(ClassLabel(names=UD_UPOS)),
        "xpos": _strings,
        "feats": _strings,
        "head": _strings,
        "deprel": _strings,
        "deps": _strings,
        "misc": _strings,
    }
)
CONLL2002_FEATURES = Features(
    {
        "id": Value("string"),
        "tokens": _strings,
        "pos_tags": List(ClassLabel(names=CONLL2002_POS)),
        "ner_tags": List(ClassLabel(names=CONLL2002_NER)),
    }
)
PANX_FEATURES = Features({"tokens": _strings, "ner_tags": List(ClassLabel(names=PANX_NER)), "langs": _strings})
TATOEBA_FEATURES = Features(
    {
        "source_sentence": Value("string"),
        "target_sentence": Value("string"),
        "source_lang": Value("string"),
        "target_lang": Value("string"),
    }
)
WIKIPEDIA_FEATURES = Features(
    {"id": Value("string"), "url": Value("string"), "title": Value("string"), "text": Value("string")}
)
SPLITS = {"train": "train", "dev": "validation", "test": "test"}


def ud_rows(sentences, multiword_every: int = 3) -> dict:
    """UD rows; every `multiword_every`-th sentence gets a multiword surface token tagged `_`, as the hub's has."""
    rows = {name: [] for name in UD_FEATURES}
    for i, s in enumerate(sentences):
        words, tags = list(s.words), list(s.tags)
        if multiword_every and i % multiword_every == 0:
            words, tags = [words[0] + words[1 % len(words)], *words], ["_", *tags]
        rows["idx"].append(str(i))
        rows["text"].append(" ".join(s.words))
        rows["tokens"].append(words)
        rows["upos"].append([UD_UPOS.index(t) for t in tags])
        for name in ("lemmas", "xpos", "feats", "head", "deprel", "deps", "misc"):
            rows[name].append(["_"] * len(words))
    return rows


def save_ud(files: dict[str, Path], out: Path) -> Path:
    """files: {train|dev|test: CoNLL-U path} -> a universal_dependencies-shaped DatasetDict."""
    return _save(
        {SPLITS[k]: Dataset.from_dict(ud_rows(list(read_conllu(p))), features=UD_FEATURES) for k, p in files.items()},
        out,
    )


def save_conll2002(files: dict[str, Path], out: Path) -> Path:
    splits = {}
    for split, path in files.items():
        sentences = list(read_conll(path))
        splits[SPLITS[split]] = Dataset.from_dict(
            {
                "id": [str(i) for i in range(len(sentences))],
                "tokens": [list(s.words) for s in sentences],
                "pos_tags": [[i % len(CONLL2002_POS) for i in range(len(s.words))] for s in sentences],
                "ner_tags": [[CONLL2002_NER.index(t) for t in s.tags] for s in sentences],
            },
            features=CONLL2002_FEATURES,
        )
    return _save(splits, out)


def save_panx(files: dict[str, Path], out: Path, lang: str) -> Path:
    splits = {}
    for split, path in files.items():
        sentences = list(read_conll(path))
        splits[SPLITS[split]] = Dataset.from_dict(
            {
                "tokens": [list(s.words) for s in sentences],
                "ner_tags": [[PANX_NER.index(t) for t in s.tags] for s in sentences],
                "langs": [[lang] * len(s.words) for s in sentences],
            },
            features=PANX_FEATURES,
        )
    return _save(splits, out)


def save_tatoeba(source: Path, english: Path, out: Path, lang: str) -> Path:
    """xtreme's tatoeba.<lang>: one validation split, source in `lang`, target in English."""
    pairs = list(read_parallel(source, english))
    return _save(
        {
            "validation": Dataset.from_dict(
                {
                    "source_sentence": [p.source for p in pairs],
                    "target_sentence": [p.target for p in pairs],
                    "source_lang": [lang] * len(pairs),
                    "target_lang": ["eng"] * len(pairs),
                },
                features=TATOEBA_FEATURES,
            )
        },
        out,
    )


def save_translation(source: Path, english: Path, out: Path, lang: str) -> Path:
    """europarl_bilingual / opus style: one `translation` column of {lang: ..., en: ...}."""
    pairs = list(read_parallel(source, english))
    features = Features({"translation": Translation(languages=sorted(["en", lang]))})
    return _save(
        {
            "train": Dataset.from_dict(
                {"translation": [{lang: p.source, "en": p.target} for p in pairs]}, features=features
            )
        },
        out,
    )


def save_wikipedia(text: Path, out: Path, lines_per_article: int = 7) -> Path:
    """Articles of several paragraphs (one sentence each, so sentences equal the file's lines)."""
    lines = [line.text for line in read_text(text)]
    articles = ["\n".join(lines[i : i + lines_per_article]) for i in range(0, len(lines), lines_per_article)]
    return _save(
        {
            "train": Dataset.from_dict(
                {
                    "id": [str(i) for i in range(len(articles))],
                    "url": [f"https://example.org/{i}" for i in range(len(articles))],
                    "title": [f"Article {i}" for i in range(len(articles))],
                    "text": articles,
                },
                features=WIKIPEDIA_FEATURES,
            )
        },
        out,
    )


def save_micro_as_hub(corpus: Path, out: Path, task: str) -> dict[str, str]:
    """Every corpus of the micro world in hub schemas; returns the data.paths that point a run at them."""
    paths = {}
    for lang in ("en", "es", "el"):
        if task == "pos":
            files = {s: corpus / "pos" / f"{lang}-{s}.conllu" for s in SPLITS}
            paths[f"pos.{lang}"] = save_ud(files, out / f"ud-{lang}")
        else:
            files = {
                s: corpus / "ner" / f"{lang}.{n}" for s, n in (("train", "train"), ("dev", "testa"), ("test", "testb"))
            }
            paths[f"ner.{lang}"] = (
                save_panx(files, out / f"panx-{lang}", lang)
                if lang == "el"
                else save_conll2002(files, out / f"conll2002-{lang}")
            )
        paths[f"mono.{lang}"] = save_wikipedia(corpus / "mono" / f"{lang}.txt", out / f"wiki-{lang}")
    for lang in ("es", "el"):
        save = save_tatoeba if task == "pos" else save_translation
        paths[f"parallel.{lang}"] = save(
            corpus / "parallel" / f"en-{lang}.{lang}",
            corpus / "parallel" / f"en-{lang}.en",
            out / f"pairs-{lang}",
            lang,
        )
    return {key: f"hf:{path}" for key, path in paths.items()}


def _save(splits: dict, out: Path) -> Path:
    DatasetDict(splits).save_to_disk(str(out))
    return out
