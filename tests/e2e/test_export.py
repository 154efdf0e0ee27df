"""Export from a ZeRO-3 run of 2 ranks, load with transformers, tag files: same tags as the engine's evaluation."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from distgem.cli import main
from tests.support import CONLLU, assert_exported_tagger_tags_as_the_engine, read_steps, run_training


@pytest.fixture(scope="module")
def exported(micro, tmp_path_factory):
    base = tmp_path_factory.mktemp("export")
    run_training(
        micro,
        base / "run",
        2,
        {
            "train.steps": 4,
            "eval.every": 2,
            "train.zero_stage": 3,
            "output.save_predictions": "true",
            "eval.before_training": "false",
            "eval.after_training": "false",
        },
    )
    assert main(["export", str(base / "run"), "--out", str(base / "model")]) == 0
    return base / "run", base / "model"


def test_export_loads_in_a_fresh_process_and_matches_engine_predictions(micro, exported, tmp_path):
    run_dir, model_dir = exported
    corpus, _ = micro
    config = json.loads((model_dir / "config.json").read_text())
    assert config["id2label"]["0"] == "ADJ" and config["label2id"]["VERB"] == 15
    assert (model_dir / "model.safetensors").is_file() and "ZeRO stage 3 on 2 rank(s)" in (
        model_dir / "README.md"
    ).read_text()
    umask = os.umask(0)
    os.umask(umask)
    assert {p.name: p.stat().st_mode & 0o777 for p in model_dir.iterdir()} == {
        p.name: 0o666 & ~umask for p in model_dir.iterdir()
    }  # shareable: no private 0600 weights
    script = f"""
import json, sys
from transformers import AutoModelForTokenClassification, AutoTokenizer, pipeline
from distgem.data.conllu import read_conllu
model = AutoModelForTokenClassification.from_pretrained({str(model_dir)!r})
tokenizer = AutoTokenizer.from_pretrained({str(model_dir)!r})
tagger = pipeline("token-classification", model=model, tokenizer=tokenizer, aggregation_strategy="none",
                  ignore_labels=[])
out = []
for sentence in read_conllu({str(corpus / "pos" / "es-test.conllu")!r}):
    text = " ".join(sentence.words)
    starts, position = set(), 0
    for word in sentence.words:
        starts.add(position)
        position += len(word) + 1
    out.append([t["entity"] for t in tagger(text) if t["start"] in starts])
print(json.dumps(out))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    pipeline_tags = json.loads(result.stdout)
    engine_tags = json.loads((run_dir / "predictions" / "test" / "es.json").read_text())
    short = [i for i, s in enumerate(engine_tags) if len(s) <= 9]  # the pipeline truncates long sentences
    assert short and all(pipeline_tags[i] == engine_tags[i] for i in short)
    predicted = tmp_path / "es.conllu"
    assert main(["predict", str(model_dir), str(corpus / "pos" / "es-test.conllu"), "--out", str(predicted)]) == 0
    from distgem.data.conllu import read_conllu

    assert [list(s.tags) for s in read_conllu(predicted)] == engine_tags  # windows included: every sentence
    assert read_steps(run_dir)[-1]["step"] == 4


def test_predict_conllu_changes_only_upos(exported, write, tmp_path):
    _, model_dir = exported
    source = write("fr.conllu", "\ufeff# newdoc\r\n" + CONLLU.replace("\n", "\r\n"))
    out = tmp_path / "out.conllu"
    assert main(["predict", str(model_dir), str(source), "--out", str(out)]) == 0
    before, after = source.read_bytes().splitlines(keepends=True), out.read_bytes().splitlines(keepends=True)
    assert len(before) == len(after)
    for a, b in zip(before, after):
        ca, cb = a.split(b"\t"), b.split(b"\t")
        if len(ca) == 10 and ca[0].lstrip(b"\xef\xbb\xbf").isdigit():
            assert ca[:3] + ca[4:] == cb[:3] + cb[4:]
        else:
            assert a == b  # comments, the multiword range, the empty node, blank lines: byte for byte


def test_predict_conll_keeps_middle_columns(exported, write, tmp_path, capsys):
    _, model_dir = exported
    source = write("es.conll", "-DOCSTART- -X- O\n\nEl DA O\nvino VMI B-MISC\n\nPedro NP B-PER\n")
    out = tmp_path / "out.conll"
    assert main(["predict", str(model_dir), str(source), "--out", str(out), "--format", "conll"]) == 0
    rows = [line.split() for line in out.read_text().splitlines()]
    assert rows[0] == ["-DOCSTART-", "-X-", "O"] and rows[1] == []
    assert [r[:2] for r in rows if len(r) == 3][1:] == [["El", "DA"], ["vino", "VMI"], ["Pedro", "NP"]]
    assert "score against the file's tags" in capsys.readouterr().out


def test_predict_and_export_errors(exported, write, tmp_path, capsys):
    run_dir, model_dir = exported
    bad = write("bad.conllu", "1\tx\tx\tNOPE\t_\t_\t0\troot\t_\t_\n")
    assert main(["predict", str(model_dir), str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "bad.conllu:1: unknown UPOS tag 'NOPE'" in capsys.readouterr().err
    assert main(["export", str(run_dir), "--out", str(tmp_path / "m"), "--checkpoint", "99"]) == 2
    assert "no such checkpoint (available: best)" in capsys.readouterr().err
    assert main(["predict", str(tmp_path), str(bad), "--out", str(tmp_path / "o")]) == 2


def test_a_backbone_without_a_masked_lm_head_exports_and_predicts(micro, tmp_path):
    """A backbone saved without an MLM head (AutoModel: as multilingual-e5 is) keeps its pooler, which token
    classification has not: the export must still fit, and tag exactly as the engine did."""
    from transformers import BertForMaskedLM, BertModel, BertTokenizerFast

    corpus, backbone = micro
    masked = BertForMaskedLM.from_pretrained(backbone)
    encoder = BertModel(masked.config)  # with a pooler, as a sentence encoder is saved
    encoder.load_state_dict(masked.bert.state_dict(), strict=False)
    encoder.save_pretrained(tmp_path / "encoder")
    BertTokenizerFast.from_pretrained(backbone).save_pretrained(tmp_path / "encoder")
    assert json.loads((tmp_path / "encoder" / "config.json").read_text())["architectures"] == ["BertModel"]
    run_training(
        (corpus, tmp_path / "encoder"),
        tmp_path / "run",
        1,
        {
            "train.steps": 2,
            "eval.every": 2,
            "method.name": "gem",
            "method.memory": "[xsr]",
            "output.save_predictions": "true",
            "eval.after_training": "false",
        },
    )
    assert_exported_tagger_tags_as_the_engine(tmp_path / "run", corpus / "pos" / "es-test.conllu", tmp_path)
