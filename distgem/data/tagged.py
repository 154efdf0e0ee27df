"""Tagged corpora (UPOS in CoNLL-U, NER in CoNLL): the label sets, and one file's sentences with their gold tags
and model windows, read from the file or from cached rows."""

from __future__ import annotations

from dataclasses import dataclass

from distgem.data.align import Window, encode_words
from distgem.data.conll import read_conll
from distgem.data.conllu import UPOS_TAGS, read_conllu
from distgem.errors import InputError

NER_TAGS = ("O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-MISC", "I-MISC")
LABELS = {"pos": UPOS_TAGS, "ner": NER_TAGS}
READERS = {"pos": read_conllu, "ner": read_conll}


@dataclass
class TaggedCorpus:
    """One file's sentences, their gold tags and their model windows."""

    path: str
    words: list[tuple[str, ...]]
    tags: list[tuple[str, ...]]
    windows: list[list[Window]]  # per sentence

    @property
    def examples(self) -> list[Window]:
        """Training examples: every window of every sentence."""
        return [w for sentence in self.windows for w in sentence]


def load_tagged(path: str, task: str, tokenizer, max_length: int, stride: int) -> TaggedCorpus:
    """Read and encode a POS (CoNLL-U) or NER (CoNLL) file; a tag outside the label set is an InputError."""
    label_ids = {tag: i for i, tag in enumerate(LABELS[task])}
    words, tags, windows = [], [], []
    for sentence in READERS[task](path):
        for tag, line in zip(sentence.tags, sentence.word_lines):
            if tag not in label_ids:
                raise InputError(path, line, f"tag {tag!r} is not in the {task} label set ({', '.join(LABELS[task])})")
        words.append(sentence.words)
        tags.append(sentence.tags)
        windows.append(
            encode_words(tokenizer, sentence.words, [label_ids[t] for t in sentence.tags], max_length, stride)
        )
    return TaggedCorpus(str(path), words, tags, windows)


def corpus_from_rows(path: str, rows) -> TaggedCorpus:
    """A corpus from cached rows (words, tags and per-window ids, word ids, labels, spans; distgem.data.corpora)."""
    words, tags, windows = [], [], []
    for row in rows:
        words.append(tuple(row["words"]))
        tags.append(tuple(row["tags"]))
        windows.append(
            [
                Window(ids, word_ids, labels, span[0], span[1], (span[2], span[3]))
                for ids, word_ids, labels, span in zip(row["input_ids"], row["word_ids"], row["labels"], row["spans"])
            ]
        )
    return TaggedCorpus(str(path), words, tags, windows)
