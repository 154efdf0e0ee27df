"""`distgem predict MODEL_DIR INPUT [--format ...] --out OUTPUT`: tag a file, keep everything else.

CoNLL-U: only the UPOS column of word lines changes (comments, multiword-token lines and empty
nodes stay byte for byte). CoNLL: the last column. Text: each word becomes `word/TAG`. Sentences
longer than the window are tagged through overlapping windows, as in evaluation.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from distgem.errors import UserError

FORMATS = ("auto", "conllu", "conll", "text")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model_dir", help="a model directory written by `distgem export`")
    parser.add_argument("input", help="the file to tag: CoNLL-U, CoNLL columns or one sentence per line")
    parser.add_argument(
        "--format",
        default="auto",
        choices=FORMATS,
        help="the input's format (auto: from its content); the output keeps it",
    )
    parser.add_argument("--out", required=True, help="where the tagged copy goes (every other column unchanged)")
    parser.add_argument("--batch-size", type=int, default=64, help="windows per forward pass")


def run(args: argparse.Namespace) -> int:
    from distgem.data.readers import detect_format

    fmt = detect_format(args.input) if args.format == "auto" else args.format
    if fmt not in FORMATS:
        raise UserError(f"{args.input}: cannot predict on {fmt} files (use conllu, conll or text)")
    tags, gold = predict_file(Path(args.model_dir), Path(args.input), fmt, args.batch_size)
    write_back(Path(args.input), Path(args.out), fmt, tags)
    print(f"tagged {len(tags)} sentences -> {args.out}", file=sys.stderr)
    if gold is not None:
        print(gold)
    return 0


def load_model(model_dir: Path):
    import torch
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    if not (model_dir / "config.json").is_file():
        raise UserError(f"{model_dir}: not a model directory (no config.json)")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForTokenClassification.from_pretrained(model_dir)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return tokenizer, model.to(device).eval(), device


def predict_file(model_dir: Path, path: Path, fmt: str, batch_size: int = 64):
    """Predicted tags per sentence, and the score line when the file has gold tags."""
    import torch
    from tqdm import tqdm

    from distgem.data.align import encode_words, stitch
    from distgem.data.conll import read_conll
    from distgem.data.conllu import read_conllu
    from distgem.data.tagged import LABELS
    from distgem.data.text import read_text
    from distgem.tasks import tagging

    tokenizer, model, device = load_model(model_dir)
    settings = getattr(model.config, "distgem", None) or {}
    max_length, stride = settings.get("max_length", 128), settings.get("stride", 32)
    id2label = {int(k): v for k, v in model.config.id2label.items()}
    if fmt == "text":
        sentences = [(tuple(line.text.split()), None) for line in read_text(path)]
    else:
        sentences = [(s.words, s.tags) for s in (read_conllu(path) if fmt == "conllu" else read_conll(path))]
    windows = [encode_words(tokenizer, words, None, max_length, stride) for words, _ in sentences]
    flat = [(i, w) for i, ws in enumerate(windows) for w in ws]
    per_sentence: list[list] = [[] for _ in sentences]
    with torch.no_grad():
        for start in tqdm(range(0, len(flat), batch_size), desc="predict", unit="batch", disable=None, file=sys.stderr):
            chunk = flat[start : start + batch_size]
            batch = tagging.collate([w for _, w in chunk], tokenizer.pad_token_id)
            logits = model(
                input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device)
            ).logits
            for (i, _), row in zip(chunk, logits.argmax(-1).tolist()):
                per_sentence[i].append(row)
    tags = [
        [id2label[t] for t in stitch(windows[i], per_sentence[i], len(sentences[i][0]))] for i in range(len(sentences))
    ]
    gold = None
    if fmt != "text":
        task = settings.get("task", "pos" if fmt == "conllu" else "ner")
        names = list(LABELS[task])
        scores = tagging.score(task, [g for _, g in sentences], [[names.index(t) for t in s] for s in tags])
        gold = "score against the file's tags: " + ", ".join(f"{k} {v:.2f}" for k, v in scores.items() if k != "score")
    return tags, gold


def write_back(path: Path, out: Path, fmt: str, tags: list[list[str]]) -> None:
    """Copy the input, replacing only the predicted column (CoNLL-U UPOS, CoNLL last column)."""
    from distgem.data.conll import read_conll
    from distgem.data.conllu import read_conllu

    if fmt == "text":
        from distgem.data.text import read_text

        lines = [" ".join(f"{w}/{t}" for w, t in zip(line.text.split(), s)) for line, s in zip(read_text(path), tags)]
        out.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return
    reader = read_conllu if fmt == "conllu" else read_conll
    replacement: dict[int, str] = {}
    for sentence, predicted in zip(reader(path), tags):
        replacement.update(zip(sentence.word_lines, predicted))
    raw = path.read_bytes()
    with out.open("wb") as handle:
        for number, line in enumerate(raw.splitlines(keepends=True), start=1):
            if number in replacement:
                body = line.rstrip(b"\r\n")
                ending = line[len(body) :]
                text = body.decode("utf-8-sig" if number == 1 else "utf-8")
                bom = "\ufeff" if number == 1 and body.startswith(b"\xef\xbb\xbf") else ""
                if fmt == "conllu":
                    cols = text.split("\t")
                    cols[3] = replacement[number]
                    text = "\t".join(cols)
                else:
                    stripped = text.rstrip()
                    head, _, _ = stripped.rpartition(stripped.split()[-1])
                    text = head + replacement[number] + text[len(stripped) :]
                line = (bom + text).encode("utf-8") + ending
            handle.write(line)
