"""Readers: every accepted variation and every rejection with its path:line."""

from __future__ import annotations

import pytest

from distgem.data.conll import entity_spans, read_conll, to_iob2
from distgem.data.conllu import read_conllu
from distgem.data.readers import detect_format, summarise
from distgem.data.text import read_parallel, read_text
from distgem.errors import InputError
from tests.support import CONLLU, conllu_row


def test_conllu_words_tags_lines_multiword_and_empty_nodes(write):
    sentences = list(read_conllu(write("a.conllu", CONLLU)))
    assert [s.words for s in sentences] == [("Je", "vois", "de", "le", "pain", "."), ("Oui", "!")]
    assert sentences[0].tags == ("PRON", "VERB", "ADP", "DET", "NOUN", "PUNCT")
    assert sentences[0].line == 4 and sentences[0].word_lines == (4, 5, 7, 8, 9, 10)
    assert (sentences[0].multiword_tokens, sentences[1].empty_nodes) == (1, 1)
    assert sentences[1].word_lines == (13, 15)


@pytest.mark.parametrize("variant", ["bom", "crlf", "trailing", "no_final_newline", "many_blank"])
def test_conllu_tolerates_encoding_variants(write, variant):
    text = CONLLU
    if variant == "crlf":
        text = text.replace("\n", "\r\n")
    elif variant == "trailing":
        text = text.replace("\n", "  \n")
    elif variant == "no_final_newline":
        text = text.rstrip("\n")
    elif variant == "many_blank":
        text = "\n\n" + text.replace("\n\n", "\n\n\n\n")
    data = ("\ufeff" + text if variant == "bom" else text).encode("utf-8")
    sentences = list(read_conllu(write("a.conllu", data)))
    assert [len(s.words) for s in sentences] == [6, 2]
    assert sentences[0].words[0] == "Je"


@pytest.mark.parametrize(
    "bad_line, expected",
    [
        ("1\tJe\tje\tPRON\t_\t_\t0", "expected 10 tab-separated columns, found 7"),
        ("x\tJe\tje\tPRON\t_\t_\t0\troot\t_\t_", "non-numeric ID 'x' (expected N, N-M or N.M)"),
        ("1\tJe\tje\tPRONOUN\t_\t_\t0\troot\t_\t_", "unknown UPOS tag 'PRONOUN' (not one of the 17 UD tags)"),
        ("2\tJe\tje\tPRON\t_\t_\t0\troot\t_\t_", "word ID 2 out of sequence (expected 1)"),
    ],
)
def test_conllu_rejects_bad_lines_with_path_and_line(write, bad_line, expected):
    path = write("bad.conllu", "# sent_id = 1\n" + bad_line + "\n" + conllu_row(2, "x") + "\n")
    with pytest.raises(InputError) as err:
        list(read_conllu(path))
    assert str(err.value) == f"{path}:2: {expected}"


def test_conllu_rejects_range_whose_words_are_missing(write):
    path = write("r.conllu", conllu_row(1, "a") + "\n2-3\tdu\t_\t_\t_\t_\t_\t_\t_\t_\n" + conllu_row(2, "de") + "\n\n")
    with pytest.raises(InputError, match=r"r\.conllu:2: multiword range 2-3: words 3-3 are missing"):
        list(read_conllu(path))


def test_invalid_utf8_empty_file_and_missing_file(write, tmp_path):
    bad = write("u.conllu", CONLLU.encode() + b"1\tcaf\xe9\tx\tNOUN\t_\t_\t0\troot\t_\t_\n")
    with pytest.raises(InputError, match=r"u\.conllu:16: invalid UTF-8 \(byte 0xe9 at column 6\)"):
        list(read_conllu(bad))
    with pytest.raises(InputError, match=r"e\.conllu: empty file"):
        list(read_conllu(write("e.conllu", "")))
    with pytest.raises(InputError, match="no such file"):
        list(read_text(tmp_path / "absent.txt"))
    with pytest.raises(InputError, match="no sentences"):
        list(read_conllu(write("c.conllu", "# only a comment\n\n")))


def test_a_nul_byte_is_refused_with_path_line_and_column(write):
    """A NUL is never part of a sentence (a binary file, a corpus a crash truncated onto zeros)."""
    with pytest.raises(InputError, match=r"m\.txt:2: NUL byte \(at column 4\)"):
        list(read_text(write("m.txt", b"one line\nbad\x00word\n")))
    with pytest.raises(InputError, match=r"n\.conllu:16: NUL byte"):
        list(read_conllu(write("n.conllu", CONLLU.encode() + b"1\tca\x00f\tx\tNOUN\t_\t_\t0\troot\t_\t_\n")))
    with pytest.raises(InputError, match=r"p\.es:1: NUL byte"):
        list(read_parallel(write("p.en", "a b\n"), write("p.es", b"\x00 c\n")))


CONLL = """-DOCSTART- -X- O O

El DA O
Abogado NC B-PER
General AQ I-PER
de SP O
Madrid NC B-LOC

-DOCSTART- -X- O O

Pedro NP I-PER
y CC O
Juan NP I-PER
Juan NP B-PER
"""


def test_conll_docstart_middle_columns_and_iob1_to_iob2(write):
    sentences = list(read_conll(write("esp.train", CONLL)))
    assert [s.words for s in sentences] == [
        ("El", "Abogado", "General", "de", "Madrid"),
        ("Pedro", "y", "Juan", "Juan"),
    ]
    assert sentences[0].tags == ("O", "B-PER", "I-PER", "O", "B-LOC")
    assert sentences[1].tags == ("B-PER", "O", "B-PER", "B-PER")  # IOB1 I- opening an entity becomes B-
    assert sentences[1].line == 11 and sentences[1].word_lines == (11, 12, 13, 14)


def test_iob2_conversion_is_idempotent_and_keeps_entities():
    iob1 = ["I-PER", "I-PER", "O", "I-LOC", "B-LOC", "I-ORG", "I-MISC"]
    iob2 = to_iob2(iob1)
    assert iob2 == ["B-PER", "I-PER", "O", "B-LOC", "B-LOC", "B-ORG", "B-MISC"]
    assert to_iob2(iob2) == iob2
    assert entity_spans(iob2) == [("PER", 0, 2), ("LOC", 3, 4), ("LOC", 4, 5), ("ORG", 5, 6), ("MISC", 6, 7)]


@pytest.mark.parametrize(
    "bad_line, expected",
    [
        ("Madrid", "expected at least 2 columns (word ... tag), found 1"),
        ("Madrid NC X-LOC", "invalid BIO tag 'X-LOC' (expected O, B-TYPE or I-TYPE)"),
        ("Madrid NC B-", "invalid BIO tag 'B-' (expected O, B-TYPE or I-TYPE)"),
        ("Madrid B-LOC", "found 2 columns, but line 1 has 3"),
    ],
)
def test_conll_rejections(write, bad_line, expected):
    path = write("x.conll", f"El DA O\n{bad_line}\n")
    with pytest.raises(InputError) as err:
        list(read_conll(path))
    assert str(err.value) == f"{path}:2: {expected}"


def test_text_skips_blank_lines_keeps_line_numbers(write):
    lines = list(read_text(write("m.txt", "\ufeffuno dos\r\n\r\n  tres  \r\ncuatro")))
    assert [(t.text, t.line) for t in lines] == [("uno dos", 1), ("tres", 3), ("cuatro", 4)]


def test_parallel_two_files_and_tsv(write):
    en = write("p.en", "a cat\nthe dog\n")
    es = write("p.es", "un gato\r\nel perro")
    assert [(p.source, p.target, p.line) for p in read_parallel(en, es)] == [
        ("a cat", "un gato", 1),
        ("the dog", "el perro", 2),
    ]
    tsv = write("p.tsv", "a cat\tun gato\nthe dog\tel perro\n")
    assert [(p.source, p.target) for p in read_parallel(tsv)] == [("a cat", "un gato"), ("the dog", "el perro")]


def test_parallel_unequal_length_names_both_files_and_counts(write):
    en = write("p.en", "a\nb\nc\n")
    es = write("p.es", "x\ny\n")
    with pytest.raises(InputError) as err:
        list(read_parallel(en, es))
    assert str(err.value) == f"{es}:3: parallel files differ in length: {en} has 3 lines, {es} has 2"


def test_parallel_rejects_half_empty_pair_and_bad_tsv(write):
    en = write("p.en", "a\n\nc\n")
    es = write("p.es", "x\ny\nz\n")
    with pytest.raises(InputError, match=r"p\.en:2: empty sentence, but line 2 of .*p\.es is not empty"):
        list(read_parallel(en, es))
    with pytest.raises(InputError, match=r"t\.tsv:2: expected 2 non-empty tab-separated columns, found 3"):
        list(read_parallel(write("t.tsv", "a\tb\na\tb\tc\n")))


def test_detect_format_and_summary_counts(write):
    conllu = write("x", CONLLU)
    conll = write("y", CONLL)
    assert detect_format(conllu) == "conllu" and detect_format(conll) == "conll"
    assert detect_format(write("z", "just a sentence\n")) == "text"
    summary = summarise(conllu)
    assert summary["sentences"] == 2 and summary["tokens"] == 8
    assert summary["multiword_tokens"] == 1 and summary["empty_nodes"] == 1
    assert summary["labels"]["PUNCT"] == 2 and sum(summary["labels"].values()) == 8
    assert summarise(conll)["entities"] == 5
