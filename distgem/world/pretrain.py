"""`distgem pretrain`: a tiny multilingual BERT pre-trained on a synthetic world (the embedded backbone).

A WordPiece tokenizer is trained on every language's text, then a `BertForMaskedLM` with masked
language modelling (15%, 80/10/10) on monolingual lines of all languages and translation language
modelling (XLM's TLM: `[CLS] en [SEP] xx [SEP]`, positions restarting at the second sentence) on
parallel pairs; TLM is what aligns the languages. The held-out tail of every mono and parallel
file (world.json `heldout`) is never trained on: it is where perplexity and retrieval are measured.
Plain single-process PyTorch: nothing distributed is imported.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from distgem.world import wordpiece

IGNORE = -100
EVAL_MASK_SEED = 12345
EVAL_SENTENCES = 500
BUCKETS = 16  # batches drawn at once and grouped by length


@dataclass(frozen=True)
class PretrainPreset:
    """Tokenizer, model and optimisation of one backbone."""

    world: str = "tiny"
    """World preset that ensure_backbone builds the backbone on."""
    vocab_size: int = 5000
    hidden: int = 128
    layers: int = 4
    heads: int = 4
    intermediate: int = 512
    max_positions: int = 256
    dropout: float = 0.1
    """Dropout saved in the model's config (what fine-tuning uses)."""
    pretrain_dropout: float = 0.0
    """Dropout while pre-training: none, since a few thousand steps cannot overfit and it slows learning."""
    init_range: float = 0.05
    """Std of the initial weights; larger than BERT's 0.02 shortens the initial MLM plateau of a tiny model."""
    steps: int = 2000
    batch_size: int = 64
    """Sequences per MLM step; TLM and translation-ranking steps take half as many pairs."""
    tlm_fraction: float = 0.0
    """Share of steps that are TLM on parallel pairs (XLM). Off: at this scale it took steps from MLM and
    ranking without raising retrieval above a few percent (docs/NOTES.md, embedded default)."""
    xsr_fraction: float = 0.35
    """Share of steps that are translation ranking on parallel pairs (in-batch negatives, both directions),
    as in LaBSE and multilingual-e5: what gives the tiny encoder its cross-lingual retrieval."""
    xsr_layer: int = 3
    """Hidden layer whose masked mean ranking trains (XTREME reads 2/3 of the depth: mBERT's 8th of 12)."""
    xsr_scale: float = 20.0
    xsr_after: float = 0.4
    """Share of the steps that are MLM only before ranking starts: ranking from the first step left the MLM
    head worse than a unigram model (perplexity 270-440 against 255-340)."""
    lr: float = 1e-3
    warmup: float = 0.06
    weight_decay: float = 0.01
    mask_probability: float = 0.15


PRESETS = {
    "tiny": PretrainPreset(),
    # the experiments' backbone (configs/sweep_paper.yaml): twice the vocabulary and data, 1.6x the width
    "small": PretrainPreset(
        world="small", vocab_size=8000, hidden=160, layers=4, heads=4, intermediate=640, steps=3000, lr=8e-4
    ),
    # seconds: end-to-end tests only
    "test": PretrainPreset(
        world="test",
        vocab_size=600,
        hidden=32,
        layers=2,
        heads=2,
        intermediate=64,
        steps=20,
        xsr_layer=2,
        batch_size=16,
    ),
}


def pretrain(
    world_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    preset: str = "tiny",
    seed: int = 0,
    max_steps: int | None = None,
    threads: int | None = None,
    progress: bool = True,
) -> dict:
    """Train tokenizer and model on the world, save both to `out_dir` (Hugging Face layout); returns the summary."""
    import torch
    from transformers import BertConfig, BertForMaskedLM

    settings = PRESETS[preset]
    steps = settings.steps if max_steps is None else min(max_steps, settings.steps)
    previous_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    started = time.perf_counter()
    try:
        data = load_world_text(Path(world_dir))
        tokenizer = train_tokenizer(
            data["mono_train"], data["pairs_train"], settings.vocab_size, settings.max_positions
        )
        torch.manual_seed(seed)
        model = BertForMaskedLM(
            BertConfig(
                vocab_size=len(tokenizer),
                hidden_size=settings.hidden,
                num_hidden_layers=settings.layers,
                num_attention_heads=settings.heads,
                intermediate_size=settings.intermediate,
                max_position_embeddings=settings.max_positions,
                type_vocab_size=2,
                hidden_dropout_prob=settings.pretrain_dropout,
                attention_probs_dropout_prob=settings.pretrain_dropout,
                initializer_range=settings.init_range,
                pad_token_id=tokenizer.pad_token_id,
            )
        )
        batches = Batches(tokenizer, data, settings, seed)
        losses = train(model, batches, settings, steps, progress)
        model.eval()
        evaluation = evaluate(model, tokenizer, data)
        model.config.hidden_dropout_prob = model.config.attention_probs_dropout_prob = settings.dropout
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
        summary = {
            "preset": preset,
            "seed": seed,
            "settings": asdict(settings),
            "steps": steps,
            "world": {k: data["world"][k] for k in ("preset", "seed", "version") if k in data["world"]},
            "parameters": sum(p.numel() for p in model.parameters()),
            "vocab_size": len(tokenizer),
            "train": {
                "mono_lines": sum(map(len, data["mono_train"].values())),
                "pairs": sum(map(len, data["pairs_train"].values())),
                **{f"final_loss_{k}": v for k, v in losses.items()},
            },
            **evaluation,
            "threads": torch.get_num_threads(),
            "seconds": round(time.perf_counter() - started, 1),
        }
        (out / "distgem_pretrain.json").write_text(json.dumps(summary, indent=1, ensure_ascii=False) + "\n")
        return summary
    finally:
        torch.set_num_threads(previous_threads)


def load_world_text(world: Path) -> dict:
    """Training and held-out text of a world: mono lines per language, (en, xx) pairs per target."""
    from distgem.data.text import read_parallel, read_text

    info = json.loads((world / "world.json").read_text(encoding="utf-8"))
    held_mono, held_pairs = info["heldout"]["mono"], info["heldout"]["parallel"]
    data: dict = {"world": info, "mono_train": {}, "mono_eval": {}, "pairs_train": {}, "pairs_eval": {}}
    for lang in [info["source"], *info["targets"]]:
        lines = [line.text for line in read_text(world / "mono" / f"{lang}.txt")]
        data["mono_train"][lang], data["mono_eval"][lang] = lines[:-held_mono], lines[-held_mono:]
    for lang in info["targets"]:
        pairs = [
            (p.source, p.target)
            for p in read_parallel(world / "parallel" / f"en-{lang}.en", world / "parallel" / f"en-{lang}.{lang}")
        ]
        data["pairs_train"][lang], data["pairs_eval"][lang] = pairs[:-held_pairs], pairs[-held_pairs:]
    return data


def train_tokenizer(
    mono: dict[str, list[str]], pairs: dict[str, list[tuple[str, str]]], vocab_size: int, max_length: int
):
    """A cased WordPiece tokenizer (mBERT's recipe, learned deterministically) as a transformers BertTokenizerFast."""
    texts = [line for lang in sorted(mono) for line in mono[lang]]
    texts += [side for lang in sorted(pairs) for pair in pairs[lang] for side in pair]
    return wordpiece.bert_tokenizer(wordpiece.cased_vocabulary(texts, vocab_size), max_length)


class Batches:
    """Masked MLM batches of monolingual lines and TLM batches of concatenated translation pairs."""

    def __init__(self, tokenizer, data: dict, settings: PretrainPreset, seed: int):
        import torch

        self.settings = settings
        self.rng = random.Random(f"{seed}:pretrain")
        self.queues: dict[str, list] = {}
        self.generator = torch.Generator().manual_seed(seed)
        self.cls, self.sep, self.pad = tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id
        self.mask_id, self.vocab = tokenizer.mask_token_id, len(tokenizer)
        limit = settings.max_positions // 2 - 2
        encode = lambda texts: [ids[:limit] for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]  # noqa: E731
        self.mono = [ids for lang in sorted(data["mono_train"]) for ids in encode(data["mono_train"][lang])]
        self.pairs = []
        for lang in sorted(data["pairs_train"]):
            pairs = data["pairs_train"][lang]
            self.pairs += list(zip(encode([p[0] for p in pairs]), encode([p[1] for p in pairs])))

    def next(self, progress: float = 1.0) -> tuple[str, dict]:
        """The next batch; `progress` is the share of training done (translation ranking starts at xsr_after)."""
        s = self.settings
        draw = self.rng.random()
        if progress < s.xsr_after:  # the same draws, re-aimed: MLM and TLM share the steps ranking will take
            draw = s.xsr_fraction + draw * (1 - s.xsr_fraction)
        if draw < s.xsr_fraction:
            chosen = self._bucketed("xsr", self.pairs, max(2, s.batch_size // 2), lambda p: max(map(len, p)))
            rows = [([self.cls] + en + [self.sep], []) for en, _ in chosen]
            rows += [([self.cls] + xx + [self.sep], []) for _, xx in chosen]
            return "xsr", self._pad(rows)
        if draw < s.xsr_fraction + s.tlm_fraction:
            chosen = self._bucketed("tlm", self.pairs, max(1, s.batch_size // 2), lambda p: sum(map(len, p)))
            return "tlm", self._collate([([self.cls] + en + [self.sep], [*xx, self.sep]) for en, xx in chosen])
        chosen = self._bucketed("mlm", self.mono, s.batch_size, len)
        return "mlm", self._collate([([self.cls] + ids + [self.sep], []) for ids in chosen])

    def _bucketed(self, kind: str, pool: list, size: int, length) -> list:
        """`size` random examples of similar length: draws BUCKETS batches at once, sorted by length, then
        hands them out in random order (padding to the longest of a random batch wasted 60% of the compute)."""
        queue = self.queues.setdefault(kind, [])
        if not queue:
            draws = sorted((self.rng.choice(pool) for _ in range(size * BUCKETS)), key=length)
            queue += [draws[i * size : (i + 1) * size] for i in range(BUCKETS)]
            self.rng.shuffle(queue)
        return queue.pop()

    def _pad(self, rows: list[tuple[list[int], list[int]]]) -> dict:
        import torch

        length = max(len(a) + len(b) for a, b in rows)
        ids = torch.full((len(rows), length), self.pad, dtype=torch.long)
        types, positions, attention = (torch.zeros_like(ids) for _ in range(3))
        for r, (a, b) in enumerate(rows):
            n = len(a) + len(b)
            ids[r, :n] = torch.tensor(a + b)
            types[r, len(a) : n] = 1
            # XLM resets positions at the second sentence: position i of en and of xx line up
            positions[r, :n] = torch.tensor(list(range(len(a))) + list(range(1, len(b) + 1)))
            attention[r, :n] = 1
        return {"input_ids": ids, "token_type_ids": types, "position_ids": positions, "attention_mask": attention}

    def _collate(self, rows: list[tuple[list[int], list[int]]]) -> dict:
        batch = self._pad(rows)
        ids, attention = batch["input_ids"], batch["attention_mask"]
        special = (ids == self.cls) | (ids == self.sep) | (attention == 0)
        input_ids, labels = mask_tokens(
            ids, special, self.settings.mask_probability, self.mask_id, self.vocab, self.generator
        )
        return {**batch, "input_ids": input_ids, "labels": labels}


def mask_tokens(ids, special, probability: float, mask_id: int, vocab: int, generator):
    """BERT masking: `probability` of the non-special tokens are predicted (80% [MASK], 10% random, 10% kept)."""
    import torch

    chosen = (torch.rand(ids.shape, generator=generator) < probability) & ~special
    labels = torch.where(chosen, ids, IGNORE)
    action = torch.rand(ids.shape, generator=generator)
    random_ids = torch.randint(len(wordpiece.SPECIALS), vocab, ids.shape, generator=generator)
    ids = torch.where(chosen & (action < 0.8), mask_id, ids)
    ids = torch.where(chosen & (action >= 0.8) & (action < 0.9), random_ids, ids)
    return ids, labels


def masked_lm_loss(model, batch: dict):
    """Cross-entropy over masked positions only (the vocabulary projection at 15% of the tokens)."""
    from torch.nn import functional as F

    hidden = model.bert(**{k: v for k, v in batch.items() if k != "labels"}).last_hidden_state
    masked = batch["labels"] != IGNORE
    logits = model.cls(hidden[masked])
    return F.cross_entropy(logits, batch["labels"][masked], reduction="sum"), int(masked.sum())


def translation_ranking_loss(model, batch: dict, layer: int, scale: float, special_ids: tuple[int, int]):
    """In-batch translation ranking on mean-pooled `layer`: rows [0, n) are English, [n, 2n) their translations."""
    import torch
    from torch.nn import functional as F

    ids = batch["input_ids"]
    hidden = model.bert(input_ids=ids, attention_mask=batch["attention_mask"], output_hidden_states=True).hidden_states[
        layer
    ]
    weights = ((batch["attention_mask"] == 1) & (ids != special_ids[0]) & (ids != special_ids[1])).unsqueeze(-1).float()
    embedding = F.normalize((hidden * weights).sum(1) / weights.sum(1).clamp(min=1), dim=-1)
    n = len(ids) // 2
    scores = scale * embedding[:n] @ embedding[n:].T
    target = torch.arange(n)
    return (F.cross_entropy(scores, target) + F.cross_entropy(scores.T, target)) / 2


def train(model, batches: Batches, settings: PretrainPreset, steps: int, progress: bool) -> dict[str, float]:
    """AdamW with linear warm-up and decay; returns the final (smoothed) MLM and TLM losses."""
    import torch
    from tqdm import tqdm

    decay = [p for n, p in model.named_parameters() if p.ndim > 1 and "LayerNorm" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.ndim > 1 and "LayerNorm" not in n)]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": settings.weight_decay}, {"params": rest, "weight_decay": 0.0}],
        lr=settings.lr,
    )
    warmup = max(1, int(settings.warmup * steps))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min((step + 1) / warmup, max(0.0, (steps - step) / max(1, steps - warmup)))
    )
    smoothed = {"mlm": math.nan, "tlm": math.nan, "xsr": math.nan}
    model.train()
    bar = tqdm(range(steps), desc="pretrain", unit="step", disable=not progress, dynamic_ncols=True)
    for step in bar:
        kind, batch = batches.next(step / steps)
        if kind == "xsr":
            loss = translation_ranking_loss(
                model, batch, settings.xsr_layer, settings.xsr_scale, (batches.cls, batches.sep)
            )
        else:
            nll, count = masked_lm_loss(model, batch)
            loss = nll / max(count, 1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        value = float(loss.detach())
        smoothed[kind] = value if math.isnan(smoothed[kind]) else 0.95 * smoothed[kind] + 0.05 * value
        bar.set_postfix({k: f"{v:.3f}" for k, v in smoothed.items() if not math.isnan(v)})
    return {k: round(v, 4) for k, v in smoothed.items() if not math.isnan(v)}  # kinds that never ran are left out


def evaluate(model, tokenizer, data: dict, batch_size: int = 64) -> dict:
    """Held-out MLM perplexity per language (fixed masks) and XSR P@1 xx->en for every hidden layer."""
    import torch

    generator = torch.Generator().manual_seed(EVAL_MASK_SEED)
    perplexity = {}
    with torch.no_grad():
        for lang in sorted(data["mono_eval"]):
            lines = data["mono_eval"][lang][:EVAL_SENTENCES]
            nll, count = 0.0, 0
            for start in range(0, len(lines), batch_size):
                enc = tokenizer(lines[start : start + batch_size], padding=True, truncation=True, return_tensors="pt")
                special = torch.tensor(
                    [
                        tokenizer.get_special_tokens_mask(ids, already_has_special_tokens=True)
                        for ids in enc["input_ids"].tolist()
                    ],
                    dtype=torch.bool,
                )
                ids, labels = mask_tokens(
                    enc["input_ids"],
                    special | (enc["attention_mask"] == 0),
                    0.15,
                    tokenizer.mask_token_id,
                    len(tokenizer),
                    generator,
                )
                batch = {"input_ids": ids, "attention_mask": enc["attention_mask"], "labels": labels}
                part, n = masked_lm_loss(model, batch)
                nll, count = nll + float(part), count + n
            perplexity[lang] = round(math.exp(nll / max(count, 1)), 3)
        by_layer: dict[int, dict[str, float]] = {}
        for lang in sorted(data["pairs_eval"]):
            pairs = data["pairs_eval"][lang]
            english = embed_layers(model, tokenizer, [p[0] for p in pairs], batch_size)
            foreign = embed_layers(model, tokenizer, [p[1] for p in pairs], batch_size)
            for layer in range(len(english)):
                by_layer.setdefault(layer, {})[lang] = retrieval_p1(foreign[layer], english[layer])
    best = max(by_layer, key=lambda layer: (sum(by_layer[layer].values()), -layer))
    return {
        "mlm_perplexity": perplexity,
        "xsr_p1_by_layer": {str(k): v for k, v in by_layer.items()},
        "xsr_layer": best,
        "xsr_p1": by_layer[best],
    }


def embed_layers(model, tokenizer, sentences: list[str], batch_size: int) -> list:
    """Per hidden layer (0 = embeddings): masked means over non-special tokens, one row per sentence."""
    import torch

    layers = None
    for start in range(0, len(sentences), batch_size):
        enc = tokenizer(sentences[start : start + batch_size], padding=True, truncation=True, return_tensors="pt")
        special = torch.tensor(
            [
                tokenizer.get_special_tokens_mask(ids, already_has_special_tokens=True)
                for ids in enc["input_ids"].tolist()
            ],
            dtype=torch.bool,
        )
        weights = ((enc["attention_mask"] == 1) & ~special).unsqueeze(-1).float()
        hidden = model.bert(
            input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], output_hidden_states=True
        ).hidden_states
        means = [(h * weights).sum(1) / weights.sum(1).clamp(min=1) for h in hidden]
        layers = [[m] for m in means] if layers is None else [acc + [m] for acc, m in zip(layers, means)]
    return [torch.cat(parts) for parts in layers]


def retrieval_p1(queries, candidates) -> float:
    """Percentage of queries whose cosine-nearest candidate is their own translation (row i <-> row i)."""
    import torch
    from torch.nn import functional as F

    scores = F.normalize(queries, dim=-1) @ F.normalize(candidates, dim=-1).T
    return round(100.0 * float((scores.argmax(1) == torch.arange(len(queries))).float().mean()), 2)


def backbone_key(preset: str, seed: int) -> str:
    """Cache name: preset, seed and a hash of the world's and this module's code and of the settings."""
    from distgem.store import source_digest
    from distgem.world.synthetic import WORLD_MODULES, world_key

    text = source_digest(*WORLD_MODULES, __name__) + json.dumps(asdict(PRESETS[preset]), sort_keys=True)
    text += world_key(PRESETS[preset].world, seed)
    return f"{preset}-s{seed}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"


def ensure_backbone(preset: str = "tiny", seed: int = 0) -> Path:
    """The cached backbone of (preset, seed), its world and itself built on first use (atomically, once)."""
    from distgem.store import build_once, cache_root
    from distgem.world.synthetic import ensure_world

    if preset not in PRESETS:
        from distgem.errors import UserError

        raise UserError(f"unknown backbone preset {preset!r} (choose from {', '.join(PRESETS)})")
    world = ensure_world(PRESETS[preset].world, seed)
    threads = default_threads()
    return build_once(
        cache_root() / "backbones" / backbone_key(preset, seed),
        lambda tmp: pretrain(world, tmp, preset, seed, threads=threads),
    )


def default_threads() -> int:
    """Pre-training is one process: every core (up to 8) unless DISTGEM_PRETRAIN_THREADS says otherwise
    (OMP_NUM_THREADS=1, right for the training ranks, would leave all but one core idle)."""
    return int(os.environ.get("DISTGEM_PRETRAIN_THREADS", "0")) or min(os.cpu_count() or 1, 8)


def add_arguments(parser) -> None:
    import argparse

    parser.add_argument("--world", required=True, help="a directory written by `distgem world`")
    parser.add_argument("--out", required=True, help="model directory (Hugging Face layout)")
    parser.add_argument(
        "--preset",
        default="tiny",
        choices=list(PRESETS),
        help="tiny (the embedded default), small (experiments), test (seconds, for tests)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seeds the tokenizer's data order, weights and batches")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default: every core up to 8, or $DISTGEM_PRETRAIN_THREADS)",
    )
    parser.add_argument("--max-steps", type=int, default=None, help=argparse.SUPPRESS)  # truncated runs in tests


def run(args) -> int:
    from distgem.errors import UserError

    if not (Path(args.world) / "world.json").is_file():
        raise UserError(f"{args.world}: not a world directory (no world.json; write one with `distgem world`)")
    summary = pretrain(
        args.world,
        args.out,
        args.preset,
        args.seed,
        max_steps=args.max_steps,
        threads=args.threads or default_threads(),
    )
    xsr = ", ".join(f"{lang} {p:.1f}" for lang, p in summary["xsr_p1"].items())
    print(
        f"saved {args.out} ({summary['parameters']} parameters, {summary['seconds']} s); "
        f"XSR P@1 at layer {summary['xsr_layer']}: {xsr}"
    )
    return 0
