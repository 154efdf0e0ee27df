"""Does the embedded default show the paper's phenomenon? Pre-trained cross-lingual ability that naive
English fine-tuning erodes.

    python bench/world_check.py [--preset tiny] [--steps 300] [--lr 1e-4] [--control] [--json out.json]

Builds (or reuses) the world and backbone, then measures on held-out data: XSR P@1 xx->en per layer
and MLM perplexity per language; fine-tunes naively on English POS (linear head on the encoder,
Adam, batch 16; the first subword carries the word's label); measures zero-shot POS accuracy
against the majority tag, and XSR and perplexity again. `--control` repeats the fine-tuning from
a randomly initialised encoder: what transfers without pre-training (names, digits, punctuation).
Self-contained: the project's engine is not used.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections import Counter
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from distgem.data.conllu import UPOS_TAGS  # noqa: E402
from distgem.world.pretrain import PRESETS, ensure_backbone, evaluate, load_world_text  # noqa: E402

UPOS = UPOS_TAGS


def read_conllu(path: Path) -> list[tuple[list[str], list[str]]]:
    """(words, tags) per sentence; multiword ranges and empty nodes skipped."""
    sentences, words, tags = [], [], []
    for line in path.read_text(encoding="utf-8").splitlines() + [""]:
        if not line:
            if words:
                sentences.append((words, tags))
            words, tags = [], []
        elif not line.startswith("#"):
            cols = line.split("\t")
            if cols[0].isdigit():
                words.append(cols[1])
                tags.append(cols[3])
    return sentences


def encode(tokenizer, sentences, max_length: int = 128) -> list[dict]:
    examples = []
    for words, tags in sentences:
        enc = tokenizer(words, is_split_into_words=True, truncation=True, max_length=max_length)
        labels, previous = [], None
        for w in enc.word_ids():
            labels.append(UPOS.index(tags[w]) if w is not None and w != previous else -100)
            previous = w
        examples.append({"input_ids": enc["input_ids"], "labels": labels})
    return examples


def collate(examples: list[dict], pad: int) -> dict:
    length = max(len(e["input_ids"]) for e in examples)
    ids = torch.full((len(examples), length), pad)
    labels = torch.full((len(examples), length), -100)
    for row, e in enumerate(examples):
        ids[row, : len(e["input_ids"])] = torch.tensor(e["input_ids"])
        labels[row, : len(e["labels"])] = torch.tensor(e["labels"])
    return {"input_ids": ids, "attention_mask": (ids != pad).long(), "labels": labels}


class Tagger(nn.Module):
    def __init__(self, encoder: nn.Module, hidden: int):
        super().__init__()
        self.encoder, self.dropout, self.head = encoder, nn.Dropout(0.1), nn.Linear(hidden, len(UPOS))

    def forward(self, input_ids, attention_mask):
        return self.head(
            self.dropout(self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state)
        )


def fine_tune(
    model,
    tokenizer,
    train: list[dict],
    steps: int,
    lr: float,
    batch_size: int,
    seed: int,
    probe: dict[str, list[dict]] | None = None,
    every: int = 50,
) -> Tagger:
    """Adam on English POS; with `probe`, prints zero-shot accuracy on those sets every `every` steps."""
    torch.manual_seed(seed)
    rng = random.Random(seed)
    tagger = Tagger(model.bert, model.config.hidden_size)
    optimizer = torch.optim.Adam([p for p in tagger.parameters() if p.requires_grad], lr=lr)
    tagger.train()
    for step in range(steps):
        batch = collate(rng.sample(train, batch_size), tokenizer.pad_token_id)
        logits = tagger(batch["input_ids"], batch["attention_mask"])
        loss = nn.functional.cross_entropy(logits.flatten(0, 1), batch["labels"].flatten(), ignore_index=-100)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 100 == 0 or step == steps - 1:
            print(f"  step {step:4d} loss {loss.item():.3f}", file=sys.stderr)
        if probe and (step + 1) % every == 0:
            tagger.eval()
            scores = {lang: accuracy(tagger, tokenizer, examples) for lang, examples in probe.items()}
            tagger.train()
            print(
                f"  step {step + 1:4d} zero-shot dev "
                + " ".join(f"{k} {v:.1f}" for k, v in scores.items())
                + f" | avg {sum(scores.values()) / len(scores):.1f}",
                file=sys.stderr,
            )
    tagger.eval()
    return tagger


@torch.no_grad()
def accuracy(tagger: Tagger, tokenizer, examples: list[dict]) -> float:
    correct = total = 0
    for start in range(0, len(examples), 64):
        batch = collate(examples[start : start + 64], tokenizer.pad_token_id)
        predicted = tagger(batch["input_ids"], batch["attention_mask"]).argmax(-1)
        known = batch["labels"] != -100
        correct += int((predicted[known] == batch["labels"][known]).sum())
        total += int(known.sum())
    return 100.0 * correct / max(total, 1)


def measure(model_dir: Path, world: Path, args) -> dict:
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForMaskedLM.from_pretrained(model_dir)
    data = load_world_text(world)
    langs = [data["world"]["source"], *data["world"]["targets"]]
    model.eval()
    before = evaluate(model, tokenizer, data)
    train_sentences = read_conllu(world / "pos" / "en-train.conllu")
    train = encode(tokenizer, train_sentences)
    tests = {lang: read_conllu(world / "pos" / f"{lang}-test.conllu") for lang in langs}
    majority_tag = Counter(t for _, tags in train_sentences for t in tags).most_common(1)[0][0]
    result = {"before": before, "majority_tag": majority_tag, "majority": {}, "zero_shot": {}}
    for lang, sentences in tests.items():
        tags = [t for _, ts in sentences for t in ts]
        result["majority"][lang] = round(100.0 * tags.count(majority_tag) / len(tags), 2)
    runs = {"pretrained": model}
    if args.control:
        torch.manual_seed(args.seed)
        runs["random_init"] = AutoModelForMaskedLM.from_config(model.config)
    for name, net in runs.items():
        print(f"[world_check] fine-tuning {name} on English POS: {args.steps} steps, lr {args.lr}", file=sys.stderr)
        probe = {lang: encode(tokenizer, read_conllu(world / "pos" / f"{lang}-dev.conllu")[:100]) for lang in langs[1:]}
        tagger = fine_tune(net, tokenizer, train, args.steps, args.lr, args.batch_size, args.seed, probe)
        result["zero_shot" if name == "pretrained" else "control_zero_shot"] = {
            lang: round(accuracy(tagger, tokenizer, encode(tokenizer, s)), 2) for lang, s in tests.items()
        }
        net.eval()
        result["after" if name == "pretrained" else "control_after"] = evaluate(net, tokenizer, data)
    return result


def table(r: dict, layer: int) -> str:
    langs = list(r["zero_shot"])
    targets = langs[1:]
    key = str(layer)
    rows = [f"{'':<28}" + "".join(f"{lang:>8}" for lang in langs)]
    rows.append(f"{'MLM ppl before':<28}" + "".join(f"{r['before']['mlm_perplexity'][lang]:8.2f}" for lang in langs))
    rows.append(
        f"{'MLM ppl after naive FT':<28}" + "".join(f"{r['after']['mlm_perplexity'][lang]:8.2f}" for lang in langs)
    )
    rows.append(
        f"{f'XSR P@1 before (layer {layer})':<28}{'':>8}"
        + "".join(f"{r['before']['xsr_p1_by_layer'][key][lang]:8.1f}" for lang in targets)
    )
    rows.append(
        f"{f'XSR P@1 after (layer {layer})':<28}{'':>8}"
        + "".join(f"{r['after']['xsr_p1_by_layer'][key][lang]:8.1f}" for lang in targets)
    )
    if "control_after" in r:
        rows.append(
            f"{'XSR P@1 random init':<28}{'':>8}"
            + "".join(f"{r['control_after']['xsr_p1_by_layer'][key][lang]:8.1f}" for lang in targets)
        )
    rows.append(f"{'POS acc after naive FT':<28}" + "".join(f"{r['zero_shot'][lang]:8.1f}" for lang in langs))
    if "control_zero_shot" in r:
        rows.append(
            f"{'POS acc, random init + FT':<28}" + "".join(f"{r['control_zero_shot'][lang]:8.1f}" for lang in langs)
        )
    rows.append(
        f"{'majority tag (' + r['majority_tag'] + ')':<28}" + "".join(f"{r['majority'][lang]:8.1f}" for lang in langs)
    )
    per_layer = "\n".join(
        f"  layer {k}: before "
        + " ".join(f"{r['before']['xsr_p1_by_layer'][k][t]:5.1f}" for t in targets)
        + " | after "
        + " ".join(f"{r['after']['xsr_p1_by_layer'][k][t]:5.1f}" for t in targets)
        for k in r["before"]["xsr_p1_by_layer"]
    )
    return "\n".join(rows) + f"\nXSR P@1 per layer ({' '.join(targets)}):\n{per_layer}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="tiny", choices=list(PRESETS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--world", type=Path, help="world directory (default: the cached world of the preset)")
    parser.add_argument("--backbone", type=Path, help="model directory (default: the cached backbone of the preset)")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--control", action="store_true", help="also fine-tune a randomly initialised encoder")
    parser.add_argument("--json", type=Path, help="write every number here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    if args.backbone is None:
        args.backbone = ensure_backbone(args.preset, args.seed)
    if args.world is None:
        from distgem.world.synthetic import ensure_world

        args.world = ensure_world(PRESETS[args.preset].world, args.seed)
    result = measure(args.backbone, args.world, args)
    result.update(
        backbone=str(args.backbone),
        world=str(args.world),
        steps=args.steps,
        lr=args.lr,
        seconds=round(time.perf_counter() - started, 1),
    )
    print(table(result, result["before"]["xsr_layer"]))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
