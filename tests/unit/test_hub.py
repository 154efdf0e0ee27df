"""hf: names and directories: hub schemas map onto the same rows the file readers give."""

from __future__ import annotations

import pytest
from datasets import ClassLabel, Dataset, Features, List, Value

from distgem.data import hub, records
from distgem.data.conll import read_conll
from distgem.data.conllu import UPOS_TAGS, read_conllu
from distgem.data.tagged import NER_TAGS
from distgem.errors import InputError, UserError
from tests import hub_fixtures as fx
from tests.support import CONLLU


@pytest.fixture(autouse=True)
def _fresh_loads():
    hub.load_splits.cache_clear()  # fixtures reuse paths across tests
    yield
    hub.load_splits.cache_clear()


@pytest.mark.parametrize(
    "spec, parsed",
    [
        ("hf:conll2002/es", ("conll2002", "es")),
        ("hf:universal_dependencies/en_ewt", ("universal_dependencies", "en_ewt")),
        ("hf:xtreme/PAN-X.de", ("xtreme", "PAN-X.de")),
        ("hf:wikimedia/wikipedia/20231101.en", ("wikimedia/wikipedia", "20231101.en")),
        ("hf:squad", ("squad", None)),
    ],
)
def test_names_parse_into_dataset_and_configuration(spec, parsed):
    assert hub.parse(spec) == parsed


@pytest.mark.parametrize("spec", ["hf:", "hf:a/b/c/d"])
def test_malformed_names_are_user_errors(spec):
    with pytest.raises(UserError, match="expected hf:NAME"):
        hub.parse(spec)


def test_universal_dependencies_schema_reads_like_the_conllu_reader(write, tmp_path):
    sentences = list(read_conllu(write("fr.conllu", CONLLU)))
    rows = fx.ud_rows(sentences, multiword_every=1)  # every sentence gets a `_` range token, as the hub's has
    assert any("_" == fx.UD_UPOS[t] for t in rows["upos"][0])
    fx._save({"train": Dataset.from_dict(rows, features=fx.UD_FEATURES)}, tmp_path / "ud")
    got = list(records.tagged_records(f"hf:{tmp_path / 'ud'}", "conllu", UPOS_TAGS, "train", ("upos", "pos_tags")))
    assert got == [{"words": list(s.words), "tags": list(s.tags)} for s in sentences]


def test_conll2002_schema_reads_like_the_conll_reader(write, tmp_path):
    path = write("es.train", "El O\nJuan B-PER\nPérez I-PER\nvive O\nen O\nMadrid B-LOC\n\nHola O\n")
    sentences = list(read_conll(path))
    fx.save_conll2002({"train": path, "dev": path, "test": path}, tmp_path / "c")
    for split in ("train", "validation"):
        got = list(records.tagged_records(f"hf:{tmp_path / 'c'}", "conll", NER_TAGS, split, ("ner_tags",)))
        assert got == [{"words": list(s.words), "tags": list(s.tags)} for s in sentences]


def test_iob1_tags_from_a_dataset_become_iob2(tmp_path):
    features = Features({"tokens": List(Value("string")), "ner_tags": List(ClassLabel(names=fx.CONLL2002_NER))})
    ids = [fx.CONLL2002_NER.index(t) for t in ("I-PER", "I-PER", "O", "I-LOC")]
    fx._save(
        {"train": Dataset.from_dict({"tokens": [list("abcd")], "ner_tags": [ids]}, features=features)}, tmp_path / "d"
    )
    got = list(records.tagged_records(f"hf:{tmp_path / 'd'}", "conll", NER_TAGS, "train", ("ner_tags",)))
    assert got[0]["tags"] == ["B-PER", "I-PER", "O", "B-LOC"]


def test_a_tag_set_outside_the_task_is_refused_in_one_line(tmp_path):
    features = Features({"tokens": List(Value("string")), "pos_tags": List(ClassLabel(names=fx.PENN_POS))})
    fx._save({"train": Dataset.from_dict({"tokens": [["a"]], "pos_tags": [[0]]}, features=features)}, tmp_path / "penn")
    with pytest.raises(InputError) as err:
        list(records.tagged_records(f"hf:{tmp_path / 'penn'}", "conllu", UPOS_TAGS, "train", ("upos", "pos_tags")))
    message = str(err.value)
    assert message.startswith(f"hf:{tmp_path / 'penn'} (train): column 'pos_tags' has tags outside the label set (")
    assert "NNP" in message and "\n" not in message


def test_string_tags_outside_the_set_name_the_row(tmp_path):
    features = Features({"tokens": List(Value("string")), "ner_tags": List(Value("string"))})
    fx._save(
        {"train": Dataset.from_dict({"tokens": [["a"], ["b"]], "ner_tags": [["O"], ["B-FOO"]]}, features=features)},
        tmp_path / "s",
    )
    with pytest.raises(InputError, match=r"\(train\):2: tag 'B-FOO' is not in the label set"):
        list(records.tagged_records(f"hf:{tmp_path / 's'}", "conll", NER_TAGS, "train", ("ner_tags",)))


def test_wikipedia_articles_become_sentences(tmp_path):
    text = "Paris is the capital of France. It has 2.1 million inhabitants! Is it big? Yes.\n\nΗ Αθήνα είναι πόλη. Ναι."
    fx._save(
        {
            "train": Dataset.from_dict(
                {"id": ["1"], "url": ["u"], "title": ["t"], "text": [text]}, features=fx.WIKIPEDIA_FEATURES
            )
        },
        tmp_path / "wiki",
    )
    got = [r["text"] for r in records.mono_records(f"hf:{tmp_path / 'wiki'}")]
    assert got == [
        "Paris is the capital of France.",
        "It has 2.1 million inhabitants!",
        "Is it big?",
        "Yes.",
        "Η Αθήνα είναι πόλη.",
        "Ναι.",
    ]
    assert [r["text"] for r in records.mono_records(f"hf:{tmp_path / 'wiki'}", limit=2)] == got[:2]


def test_translation_and_tatoeba_schemas_give_source_then_english(write, tmp_path):
    es, en = write("p.es", "hola\nadiós\n"), write("p.en", "hello\ngoodbye\n")
    fx.save_translation(es, en, tmp_path / "europarl", "es")
    fx.save_tatoeba(es, en, tmp_path / "tatoeba", "es")
    want = [{"source": "hola", "target": "hello"}, {"source": "adiós", "target": "goodbye"}]
    assert list(records.parallel_records(f"hf:{tmp_path / 'europarl'}", None, "es")) == want
    assert list(records.parallel_records(f"hf:{tmp_path / 'tatoeba'}", None, "es")) == want  # its only split
    with pytest.raises(UserError, match="translations are in en, es, not fr and en"):
        list(records.parallel_records(f"hf:{tmp_path / 'europarl'}", None, "fr"))


def test_a_missing_split_names_the_splits_there_are(write, tmp_path):
    path = write("x.train", "a O\n")
    fx.save_panx({"train": path, "dev": path}, tmp_path / "panx", "de")
    with pytest.raises(UserError, match=r"no split 'test' \(it has train, validation; see data.hub_splits\)"):
        hub.split_of(f"hf:{tmp_path / 'panx'}", "test")


def test_summary_counts_tags_by_name(write, tmp_path):
    train, dev = write("y.train", "John B-PER\nSmith I-PER\nlives O\n"), write("y.testa", "Ana B-PER\n\nya O\nno O\n")
    fx.save_conll2002({"train": train, "dev": dev}, tmp_path / "c")
    summary = hub.summarise(f"hf:{tmp_path / 'c'}")
    assert summary["splits"]["train"]["rows"] == 1 and summary["splits"]["train"]["tokens"] == 3
    assert summary["splits"]["train"]["tags"]["ner_tags"] == {"B-PER": 1, "I-PER": 1, "O": 1}
    assert summary["splits"]["validation"]["tags"]["ner_tags"] == {"B-PER": 1, "O": 2}


def test_not_a_saved_dataset_is_a_user_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="not a dataset saved with save_to_disk"):
        hub.load_splits(f"hf:{tmp_path / 'empty'}")


def test_a_saved_single_dataset_is_its_train_split(tmp_path):
    Dataset.from_dict({"text": ["One. Two."]}).save_to_disk(str(tmp_path / "one"))
    assert [r["text"] for r in records.mono_records(f"hf:{tmp_path / 'one'}")] == ["One.", "Two."]


def test_the_hub_example_config_names_a_dataset_for_every_corpus():
    from distgem.config.sections import LANGUAGES, load_run_config
    from distgem.data.corpora import path_of
    from tests.support import ROOT

    data = load_run_config([ROOT / "configs" / "base.yaml", ROOT / "configs" / "data" / "hub.yaml"]).data
    for lang in LANGUAGES:  # resolved without touching the network (or the embedded world)
        assert hub.is_hub(path_of(data, "pos", lang, split="train"))
        assert hub.is_hub(path_of(data, "ner", lang, split="train"))
        assert path_of(data, "mono", lang) == f"hf:wikimedia/wikipedia/20231101.{lang}"
        if lang != "en":
            assert path_of(data, "parallel", lang, side=lang).startswith("hf:xtreme/tatoeba.")
    assert path_of(data, "ner", "de", split="train") == "hf:xtreme/PAN-X.de"
    assert path_of(data, "pos", "ru", split="dev") == "hf:universal_dependencies/ru_syntagrus"


def test_iso_639_3_placeholders_name_tatoeba_style_files(tmp_path):
    from distgem.config.sections import load_run_config
    from distgem.data.corpora import path_of
    from distgem.errors import UserError
    from tests.support import ROOT

    for side in ("spa", "eng"):
        (tmp_path / "tatoeba").mkdir(exist_ok=True)
        (tmp_path / "tatoeba" / f"tatoeba.spa-eng.{side}").write_text("x\n")
    data = load_run_config([ROOT / "configs" / "real" / "me5-pos.yaml"], [f"data.root={tmp_path}"]).data
    assert path_of(data, "parallel", "es", side="es") == f"{tmp_path}/tatoeba/tatoeba.spa-eng.spa"
    assert path_of(data, "parallel", "es", side="en") == f"{tmp_path}/tatoeba/tatoeba.spa-eng.eng"
    with pytest.raises(UserError, match="no such file"):  # el has no pairs here: named, not guessed
        path_of(data, "parallel", "el", side="el")
    data.parallel = "{root}/{language}.txt"
    with pytest.raises(UserError, match=r"data.parallel: bad template .*placeholders: root, lang, lang3, side, side3"):
        path_of(data, "parallel", "es", side="es")
