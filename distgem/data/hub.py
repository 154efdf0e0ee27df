"""Hugging Face datasets as corpora: `hf:NAME[/CONFIG]` (hub) or `hf:DIR` (a `save_to_disk` directory).

Schemas map onto the rows the readers give: token lists with `ClassLabel` (or string) tag
sequences become tagged sentences, a text column becomes sentences, a `translation` or
`source_sentence`/`target_sentence` pair becomes sentence pairs. Without network a hub name fails
within seconds with one line that says how to use a copy made elsewhere.
"""

from __future__ import annotations

import functools
import os
import re
import socket
from collections.abc import Iterator, Sequence
from pathlib import Path
from urllib.parse import urlparse

from distgem.data.rows import iter_rows
from distgem.errors import InputError, UserError

PREFIX = "hf:"
TOKEN_COLUMNS = ("tokens", "words")
TEXT_COLUMNS = ("sentence", "text")
SKIP_TAG = "_"  # universal_dependencies keeps multiword ranges (and some empty nodes) as tokens tagged "_"
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'«“(\[]?[A-ZÀ-ÖØ-ÞΆ-ΏΑ-ΩА-ЯЁ])")


def is_hub(path) -> bool:
    return isinstance(path, str) and path.startswith(PREFIX)


def parse(spec: str) -> tuple[str, str | None]:
    """(dataset name, configuration): NAME, NAME/CONFIG or ORG/NAME/CONFIG."""
    parts = [p for p in spec[len(PREFIX) :].split("/") if p]
    if not 1 <= len(parts) <= 3:
        raise UserError(f"{spec}: expected hf:NAME, hf:NAME/CONFIG, hf:ORG/NAME/CONFIG or hf:DIR")
    if len(parts) == 3:
        return f"{parts[0]}/{parts[1]}", parts[2]
    return parts[0], parts[1] if len(parts) == 2 else None


@functools.lru_cache(maxsize=None)
def load_splits(spec: str) -> dict:
    """Every split of the dataset, memory-mapped: a local `save_to_disk` directory, else the hub."""
    import datasets

    target = spec[len(PREFIX) :]
    if target and Path(target).is_dir():
        try:
            loaded = datasets.load_from_disk(target)
        except (FileNotFoundError, ValueError, OSError) as err:
            raise UserError(f"{spec}: not a dataset saved with save_to_disk ({_first_line(err)})") from None
        return dict(loaded) if isinstance(loaded, datasets.DatasetDict) else {"train": loaded}
    name, config = parse(spec)
    _offline_if_unreachable()
    try:
        return dict(datasets.load_dataset(name, config))
    except Exception as err:  # ConnectionError, DatasetNotFoundError, ValueError (bad config) ...
        call = f"datasets.load_dataset({name!r}{f', {config!r}' if config else ''}).save_to_disk('DIR')"
        raise UserError(
            f"{spec}: cannot load the Hugging Face dataset {name!r}"
            f"{f' (config {config!r})' if config else ''}: {_first_line(err)}; where there is network run "
            f'python -c "import datasets; {call}", copy DIR here and use hf:DIR, or point the '
            f"config at local files (data.root, data.paths)"
        ) from None


def split_of(spec: str, split: str | None) -> tuple[object, str]:
    """(dataset, split name); with split None: `train`, else the only split."""
    splits = load_splits(spec)
    if split is None:
        split = "train" if "train" in splits or len(splits) != 1 else next(iter(splits))
    if split not in splits:
        raise UserError(f"{spec}: no split {split!r} (it has {', '.join(splits)}; see data.hub_splits)")
    return splits[split], split


def identity(spec: str, split: str | None) -> dict:
    """What a cache key needs to know of a split: datasets' fingerprint (a hub name also its spec)."""
    dataset, split = split_of(spec, split)
    target = spec[len(PREFIX) :]
    files = [os.stat(f["filename"]) for f in dataset.cache_files]
    local = bool(target) and Path(target).is_dir()
    return {
        "hf": None if local else spec,
        "split": split,
        "fingerprint": dataset._fingerprint,  # noqa: SLF001
        "files": [[s.st_size, s.st_mtime_ns] for s in files] if local else None,
    }


def where(spec: str, split: str) -> str:
    return f"{spec} ({split})"


def tag_names(dataset, column: str) -> list[str] | None:
    """The names of a ClassLabel tag sequence (None when the tags are strings)."""
    feature = getattr(dataset.features[column], "feature", None)
    return list(feature.names) if hasattr(feature, "names") else None


def tagged_columns(dataset, spec: str, tag_columns: Sequence[str]) -> tuple[str, str]:
    """(token column, tag column) of a tagged dataset, the tag column the first of `tag_columns` present."""
    tokens = next((c for c in TOKEN_COLUMNS if c in dataset.features), None)
    tags = next((c for c in tag_columns if c in dataset.features), None)
    if tokens is None or tags is None:
        raise UserError(
            f"{spec}: expected a token column ({'/'.join(TOKEN_COLUMNS)}) and a tag column "
            f"({'/'.join(tag_columns)}), found {', '.join(dataset.features)}"
        )
    return tokens, tags


def tagged_rows(spec: str, split: str, tag_columns: Sequence[str]) -> Iterator[tuple[int, list[str], list[str]]]:
    """(row number, words, tags); tokens tagged `_` (multiword ranges) are dropped, as the CoNLL-U reader does."""
    dataset, split = split_of(spec, split)
    token_column, tag_column = tagged_columns(dataset, spec, tag_columns)
    names = tag_names(dataset, tag_column)
    for number, row in enumerate(iter_rows(dataset, [token_column, tag_column]), start=1):
        _refuse_nul(spec, split, number, *row[token_column])
        tags = [names[t] for t in row[tag_column]] if names is not None else list(row[tag_column])
        kept = [(w, t) for w, t in zip(row[token_column], tags) if t != SKIP_TAG]
        if kept:
            yield number, [w for w, _ in kept], [t for _, t in kept]


def mono_rows(spec: str, split: str | None = None) -> Iterator[tuple[int, str]]:
    """(row number, sentence): a text column split into lines and sentences (Wikipedia articles, or one per row)."""
    dataset, split = split_of(spec, split)
    column = next((c for c in TEXT_COLUMNS if c in dataset.features), None)
    if column is None:
        raise UserError(
            f"{spec}: expected a text column ({'/'.join(TEXT_COLUMNS)}), found {', '.join(dataset.features)}"
        )
    for number, row in enumerate(iter_rows(dataset, [column]), start=1):
        _refuse_nul(spec, split, number, row[column] or "")
        for sentence in split_sentences(row[column] or ""):
            yield number, sentence


def _refuse_nul(spec: str, split: str, row: int, *texts: str) -> None:
    """A NUL character is never part of a sentence (as in files: distgem.data.lines)."""
    if any("\0" in text for text in texts):
        raise InputError(where(spec, split), row, "NUL byte")


def split_sentences(text: str) -> list[str]:
    """Paragraphs (lines) cut after . ! ? when a capitalised word follows: MLM needs no finer segmentation."""
    return [s.strip() for line in text.splitlines() for s in _SENTENCE_END.split(line) if s.strip()]


def parallel_rows(spec: str, lang: str, split: str | None = None) -> Iterator[tuple[int, str, str]]:
    """(row number, sentence in `lang`, its English translation)."""
    dataset, split = split_of(spec, split)
    features = dataset.features
    if "translation" in features:
        languages = getattr(features["translation"], "languages", None) or []
        if lang not in languages or "en" not in languages:
            raise UserError(f"{spec}: its translations are in {', '.join(languages)}, not {lang} and en")
        pick = lambda row: (row["translation"][lang], row["translation"]["en"])  # noqa: E731
        columns = ["translation"]
    elif "source_sentence" in features and "target_sentence" in features:  # xtreme tatoeba: xx -> eng
        pick = lambda row: (row["source_sentence"], row["target_sentence"])  # noqa: E731
        columns = ["source_sentence", "target_sentence"]
    else:
        raise UserError(
            f"{spec}: expected a translation column or source_sentence/target_sentence, found {', '.join(features)}"
        )
    for number, row in enumerate(iter_rows(dataset, columns), start=1):
        _refuse_nul(spec, split, number, *(s or "" for s in pick(row)))
        source, target = (" ".join((s or "").split()) for s in pick(row))
        if source and target:  # an empty side cannot be retrieved: the row is not a pair
            yield number, source, target


def summarise(spec: str) -> dict:
    """Rows, tokens and tag counts of every split (what `distgem data check hf:...` prints)."""
    splits = {}
    for split, dataset in load_splits(spec).items():
        info: dict = {"rows": dataset.num_rows}
        tokens = next((c for c in TOKEN_COLUMNS if c in dataset.features), None)
        if tokens is not None:
            info["tokens"] = sum(len(row[tokens]) for row in iter_rows(dataset, [tokens]))
            for column, feature in dataset.features.items():
                names = tag_names(dataset, column) if column != tokens else None
                if names is not None:
                    counts: dict[str, int] = {}
                    for row in iter_rows(dataset, [column]):
                        for tag in row[column]:
                            counts[names[tag]] = counts.get(names[tag], 0) + 1
                    info.setdefault("tags", {})[column] = dict(sorted(counts.items()))
        elif any(c in dataset.features for c in TEXT_COLUMNS):
            info["sentences"] = sum(1 for _ in mono_rows(spec, split))
        splits[split] = info
    return {"format": "hf", "path": spec, "splits": splits}


def _offline_if_unreachable(timeout: float = 3.0) -> None:
    """Switch datasets to offline mode when the hub's port does not answer: its own retries take ~25 s."""
    import datasets
    from huggingface_hub import constants

    if datasets.config.HF_HUB_OFFLINE or os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy"):
        return
    url = urlparse(datasets.config.HF_ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout).close()
    except OSError:
        constants.HF_HUB_OFFLINE = datasets.config.HF_HUB_OFFLINE = True  # then only the local hub cache is tried


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
