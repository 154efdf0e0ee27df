"""Fast fixtures for engine tests: a micro corpus in the real formats and a random-weight tiny BERT.

Tests of the method's *effect* use the embedded world and its pre-trained backbone; tests of the
machinery (equivalence, resume, communication) need only something small, deterministic and quick.
"""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

LANGS = {"en": 0, "es": 1, "el": 2}
TAGS = ["DET", "NOUN", "VERB", "ADJ", "PUNCT"]
NER = ["O", "B-PER", "I-PER", "B-LOC"]


def _word(lang: str, tag: str, i: int) -> str:
    alphabet = {"en": "abcdefgh", "es": "ijklmnop", "el": "αβγδεζηθ"}[lang]
    return tag.lower()[:2] + "".join(alphabet[(i >> (3 * k)) & 7] for k in range(2))


def _sentence(
    rng: random.Random, lang: str, long: bool = False, length: int | None = None
) -> tuple[list[str], list[str]]:
    n = rng.randint(length, length + length // 4) if length else rng.randint(18, 30) if long else rng.randint(3, 9)
    tags = [rng.choice(TAGS[:-1]) for _ in range(n - 1)] + ["PUNCT"]
    words = ["." if t == "PUNCT" else _word(lang, t, rng.randrange(24)) for t in tags]
    return words, tags


def write_micro_corpus(root: Path, seed: int = 0, sentences: int = 64, length: int | None = None) -> Path:
    """pos/, ner/, mono/, parallel/ for en, es, el in the layout the data section's templates expect; with `length`,
    every sentence about that many words long (bench/step.py: batches of full windows)."""
    rng = random.Random(seed)
    for sub in ("pos", "ner", "mono", "parallel"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for lang in LANGS:
        for split, count in (("train", sentences), ("dev", 12), ("test", 12)):
            blocks = []
            for s in range(count):
                words, tags = _sentence(rng, lang, long=(s % 11 == 5), length=length)
                rows = [f"{i}\t{w}\t{w}\t{t}\t_\t_\t0\tdep\t_\t_" for i, (w, t) in enumerate(zip(words, tags), 1)]
                blocks.append(f"# sent_id = {s}\n" + "\n".join(rows) + "\n")
            (root / "pos" / f"{lang}-{split}.conllu").write_text("\n".join(blocks), encoding="utf-8")
        for split, count in (("train", sentences), ("testa", 12), ("testb", 12)):
            blocks = []
            for _ in range(count):
                words, _ = _sentence(rng, lang, length=length)
                tags = [rng.choice(NER) for _ in words]
                tags = [
                    "B-" + t[2:] if t.startswith("I-") and (i == 0 or tags[i - 1] == "O") else t
                    for i, t in enumerate(tags)
                ]
                blocks.append("\n".join(f"{w} X {t}" for w, t in zip(words, tags)) + "\n")
            (root / "ner" / f"{lang}.{split}").write_text("\n".join(blocks), encoding="utf-8")
        (root / "mono" / f"{lang}.txt").write_text(
            "\n".join(" ".join(_sentence(rng, lang, length=length)[0]) for _ in range(96)) + "\n", encoding="utf-8"
        )
    for lang in ("es", "el"):
        pairs = [_sentence(rng, "en", length=length)[0] for _ in range(64)]
        (root / "parallel" / f"en-{lang}.en").write_text("\n".join(" ".join(p) for p in pairs) + "\n", encoding="utf-8")
        (root / "parallel" / f"en-{lang}.{lang}").write_text(
            "\n".join(
                " ".join(w.translate(str.maketrans("abcdefgh", "ijklmnop" if lang == "es" else "αβγδεζηθ")) for w in p)
                for p in pairs
            )
            + "\n",
            encoding="utf-8",
        )
    return root


def write_mono(path: Path, lang: str, sentences: int, seed: int = 0) -> Path:
    """A one-sentence-per-line file in the micro corpus's words (bench/data.py: millions of lines)."""
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8") as handle:
        for _ in range(sentences):
            handle.write(" ".join(_sentence(rng, lang)[0]) + "\n")
    return path


def write_micro_backbone(directory: Path, corpus: Path, hidden: int = 32, layers: int = 2, seed: int = 0) -> Path:
    """A WordPiece tokenizer trained on the corpus and a randomly initialised BertForMaskedLM, saved as HF."""
    import torch
    from transformers import BertConfig, BertForMaskedLM

    from distgem.world import wordpiece

    texts = [
        line for f in sorted((corpus / "mono").glob("*.txt")) for line in f.read_text(encoding="utf-8").splitlines()
    ]
    tokenizer = wordpiece.bert_tokenizer(wordpiece.cased_vocabulary(texts, 300))
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=2 * hidden,
        max_position_embeddings=128,
    )
    BertForMaskedLM(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def micro_overrides(corpus: Path, backbone: Path, run_dir: Path, **extra) -> list[str]:
    """--set overrides for a fast deterministic run on the micro fixtures."""
    values = {
        "model.backbone": str(backbone),
        "data.root": str(corpus),
        "model.max_length": 16,
        "model.stride": 4,
        "model.dropout": 0.0,
        "task.targets": "[es, el]",
        "train.steps": 4,
        "train.batch_size": 8,
        "train.lr": 1e-3,
        "method.memory_batch_size": 4,
        "method.xsr_layer": -1,
        "data.xsr_eval_pairs": 16,
        "data.mlm_eval_sentences": 16,
        "eval.every": 2,
        "eval.batch_size": 16,
        "output.run_dir": str(run_dir),
        "output.tensorboard": "false",
        "data.cache_dir": str(corpus.parent / "datasets"),  # shared by the session's runs, never ~/.cache
    }
    values.update(extra)
    return [f"{k}={v}" for k, v in values.items()]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_command(ranks: int, launcher: str = "torchrun", collectives: Path | None = None) -> list[str]:
    """launch/train.py on `ranks` processes; with `collectives`, through bench/collectives.py, which writes every
    rank's collectives per step into that directory."""
    script = (
        [str(ROOT / "bench" / "collectives.py"), "--out", str(collectives)]
        if collectives
        else [str(ROOT / "launch" / "train.py")]
    )
    if ranks == 1:
        return [sys.executable, *script]
    if launcher == "torchrun":
        return [*torchrun(ranks), *script]
    raise ValueError(launcher)


def torchrun(ranks: int) -> list[str]:
    """torchrun with `ranks` CPU processes on a free port; the script and its arguments follow."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        str(ranks),
        "--master_port",
        str(free_port()),
    ]


def run_training(
    micro,
    run_dir: Path,
    ranks: int = 1,
    extra: dict | None = None,
    args: tuple = (),
    timeout: int = 300,
    check: bool = True,
    env: dict | None = None,
    collectives: Path | None = None,
) -> subprocess.CompletedProcess:
    corpus, backbone = micro
    overrides = micro_overrides(corpus, backbone, run_dir, **(extra or {}))
    command = train_command(ranks, collectives=collectives) + [a for o in overrides for a in ("--set", o)] + list(args)
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "DS_ACCELERATOR": "cpu",
        "TORCH_EXTENSIONS_DIR": os.environ.get("TORCH_EXTENSIONS_DIR", str(ROOT / ".cache" / "torch_extensions")),
        **(env or {}),
    }
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)
    if check and result.returncode != 0:
        raise AssertionError(f"training failed (rc={result.returncode}):\n{result.stderr[-4000:]}")
    return result


def read_steps(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "steps.jsonl").read_text().splitlines()]


def read_weights(run_dir: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(run_dir / "final.safetensors"))


def assert_exported_tagger_tags_as_the_engine(run_dir: Path, test_file: Path, work: Path) -> None:
    """`distgem export` then `distgem predict` on one test file give the tags the engine saved for it
    (run with output.save_predictions)."""
    from distgem.cli import main
    from distgem.data.conllu import read_conllu

    assert main(["export", str(run_dir), "--out", str(work / "model")]) == 0
    predicted = work / f"{test_file.stem}.predicted.conllu"
    assert main(["predict", str(work / "model"), str(test_file), "--out", str(predicted)]) == 0
    engine_tags = json.loads((run_dir / "predictions" / "test" / f"{test_file.stem.split('-')[0]}.json").read_text())
    assert [list(s.tags) for s in read_conllu(predicted)] == engine_tags


# Tolerances of the equivalence tests (runs that must agree across ranks, nodes and ZeRO stages)
LOSS_TOL = 5e-5  # measured <= 1.5e-6 on most vocabularies of the micro fixture, 1.4e-5 on one (per-language, k = 5,
# losses ~5.6: fp32 drift that the parameter tolerance below allows); a wrong scale or a
# missing reduction moves a loss by >= 1e-3
PARAM_TOL = 2e-4  # measured: <= 3e-5 after 20 Adam steps at lr 1e-3 (Adam amplifies rounding near zero)
# The runs the equivalence tests compare: 20 steps, no evaluation in between, the final weights saved
EQUIVALENCE_STEPS = 20
EQUIVALENCE_RUN = {
    "train.steps": EQUIVALENCE_STEPS,
    "eval.every": 100,
    "eval.before_training": "false",
    "eval.after_training": "false",
    "output.save_final": "true",
}


def conllu_row(i, form, upos="NOUN"):
    """One CoNLL-U word line (lemma = lower-cased form, a root attachment)."""
    return f"{i}\t{form}\t{form.lower()}\t{upos}\t_\t_\t0\troot\t_\t_"


# Two French sentences with a multiword token (du = de le) and an empty node: what the readers must accept
CONLLU = "\n".join(
    [
        "# newdoc id = d1",
        "# sent_id = 1",
        "# text = Je vois du pain.",
        conllu_row(1, "Je", "PRON"),
        conllu_row(2, "vois", "VERB"),
        "3-4\tdu\t_\t_\t_\t_\t_\t_\t_\t_",
        conllu_row(3, "de", "ADP"),
        conllu_row(4, "le", "DET"),
        conllu_row(5, "pain"),
        conllu_row(6, ".", "PUNCT"),
        "",
        "# sent_id = 2",
        conllu_row(1, "Oui", "INTJ"),
        "1.1\tvu\tvoir\tVERB\t_\t_\t_\t_\t0:root\t_",
        conllu_row(2, "!", "PUNCT"),
        "",
    ]
)
