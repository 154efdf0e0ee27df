"""The run configuration: one dataclass section per component, loaded strictly from YAML + --set.

Each component receives only its own section. Precedence: defaults < YAML files (later wins,
`include:` pulls in others) < `--set section.key=value`. Unknown keys and type mismatches fail
with the full dotted key and the file or flag that set it (see `distgem.config.loader`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Literal

from distgem.config.loader import bounded, dump_yaml, load_config, require

LANGUAGES = ("en", "es", "fr", "el", "ru", "de", "nl")


@dataclass
class ModelConfig:
    backbone: str = "embedded:tiny"
    """HF directory or hub name (bert-base-multilingual-cased, xlm-roberta-base), or embedded:tiny|small."""
    max_length: int = bounded(128, ge=8)
    """Subword window; longer sentences are split into overlapping windows, never truncated."""
    stride: int = bounded(32, ge=0)
    """Subwords of left context carried into the next window of a long sentence."""
    dropout: float | None = bounded(None, ge=0, lt=1)
    """Override the backbone's hidden and attention dropout (0 for exact equivalence tests)."""
    embed_chunk_tokens: int = bounded(2048, ge=0)
    """Sentence embeddings (XSR) of a batch whose padded size exceeds this many tokens run in length-sorted
    chunks of at most this many, each cut to its own longest sentence: the same embeddings without the
    padding's compute and activations; 0: one pass."""

    def __post_init__(self):
        require(self.stride < self.max_length - 2, "stride", "must be below max_length - 2")


@dataclass
class DataConfig:
    root: str = "embedded:tiny"
    """A world/corpus directory, or embedded:tiny|small (the synthetic world, built and cached on first use)."""
    pos: str = "{root}/pos/{lang}-{split}.conllu"
    """CoNLL-U path template; {split} is train, dev or test."""
    ner: str = "{root}/ner/{lang}.{split}"
    """CoNLL NER path template; {split} is mapped through ner_splits."""
    ner_splits: dict[str, str] = field(default_factory=lambda: {"train": "train", "dev": "testa", "test": "testb"})
    """NER file suffix of each split (CoNLL-2002 names dev testa and test testb)."""
    mono: str = "{root}/mono/{lang}.txt"
    """One sentence per line (MLM), per language."""
    parallel: str = "{root}/parallel/en-{lang}.{side}"
    """Aligned pair template; {side} is `en` or the language code."""
    xsr_eval_pairs: int = bounded(500, ge=10)
    """Last N pairs of every parallel file are held out for XSR evaluation (never used as memory)."""
    mlm_eval_sentences: int = bounded(500, ge=10)
    """Last N sentences of every mono file are held out for perplexity."""
    mono_sentences: int = bounded(0, ge=0)
    """Read only the first N sentences of every mono corpus (0 = all; the paper: 1M, 100K of them held out)."""
    paths: dict[str, str] = field(default_factory=dict)
    """Per-language paths that win over the templates, keyed `<pos|ner|mono|parallel>.<lang>` (e.g. pos.en:
    hf:universal_dependencies/en_ewt)."""
    hub_splits: dict[str, str] = field(default_factory=lambda: {"train": "train", "dev": "validation", "test": "test"})
    """Split of an hf: dataset read for train, dev and test (mono and parallel read `train`, else the only split)."""
    cache_dir: str = ""
    """Tokenised corpora (Arrow, memory-mapped, shared by runs and ranks); empty = $DISTGEM_CACHE/datasets or
    ~/.cache/distgem/datasets."""
    num_proc: int = bounded(1, ge=1)
    """Processes that tokenise a corpus on a cache miss (Dataset.map num_proc)."""

    def __post_init__(self):
        require(
            self.mono_sentences == 0 or self.mono_sentences >= 2 * self.mlm_eval_sentences,
            "mono_sentences",
            "must be 0 (all) or at least twice mlm_eval_sentences",
        )
        require(set(self.hub_splits) == {"train", "dev", "test"}, "hub_splits", "needs exactly train, dev and test")
        for key in self.paths:
            kind, _, lang = key.partition(".")
            require(
                kind in ("pos", "ner", "mono", "parallel") and lang and "." not in lang,
                "paths",
                f"key {key!r} must be <pos|ner|mono|parallel>.<lang>",
            )


@dataclass
class TaskConfig:
    name: Literal["pos", "ner"] = "pos"
    """The fine-tuning task: UPOS tagging (CoNLL-U) or NER (CoNLL, IOB2)."""
    source: str = "en"
    """The training language; it is excluded from every zero-shot average."""
    targets: list[str] = field(default_factory=lambda: [lang for lang in LANGUAGES if lang != "en"])
    """Zero-shot languages: evaluated every eval_every steps; their dev average drives early stopping."""

    def __post_init__(self):
        require(self.source not in self.targets, "targets", f"must not contain the source language {self.source!r}")
        require(len(self.targets) > 0, "targets", "needs at least one language")


@dataclass
class GemConfig:
    memory_strength: float = bounded(0.0, ge=0)
    """GEM's margin: lower bound on the dual variables (0 = the equation as printed; the GEM reference code
    runs 0.5; configs/methods/gem-*.yaml set 0.1, configs/methods/README.md). A projected step then adds at
    least this many times each memory gradient to what is projected: to the gradient (before AdamW
    normalises it; 0.1 kept retrieval on a real encoder, docs/RESULTS.md), or with target: update
    to the parameter update itself, an SGD step of this size on the memory losses (scale it like a
    learning rate there)."""
    solver: Literal["auto", "exact", "qpth"] = "auto"
    """Dual QP solver: exact active sets, qpth's interior point, or auto (docs/PROJECTION.md)."""
    per_language: bool = False
    """One constraint per memory task and language instead of one per memory task."""
    per_layer: bool = False
    """One QP per parameter group (embeddings, each layer, heads) instead of one over all parameters."""
    refresh_every: int = bounded(1, ge=1)
    """Recompute memory gradients every R steps (1 = every step, the paper). On the real encoder 4 keeps what 1
    keeps at 1.49x naive's step cost instead of 1.96x; 8 lost retrieval on one seed of three (docs/PERFORMANCE.md)."""
    target: Literal["gradient", "update"] = "gradient"
    """What is projected: the gradient before the optimizer (the paper), or the step the optimizer
    actually takes (AdamW's update, weight decay and clipping included), so that the first-order
    change <g_i, delta theta> of every memory loss is <= 0 for the step taken."""
    anchor: Literal["previous", "pretrained"] = "previous"
    """What a memory loss may not exceed: its value before the step (the paper), or the pre-trained
    model's on the same batch (needs target: update; the step taken then removes, to first order, any
    excess over the pre-trained loss: one more forward per memory task and step, on a frozen copy)."""

    def __post_init__(self):
        if self.anchor == "pretrained":
            require(self.target == "update", "anchor", "pretrained needs target: update (the step it constrains)")
            require(self.refresh_every == 1, "anchor", "pretrained needs refresh_every: 1 (fresh losses every step)")
            require(not self.per_layer, "anchor", "pretrained constrains whole losses, not per_layer shares of them")


@dataclass
class MethodConfig:
    name: Literal["naive", "frozen", "mtf", "gem", "l2sp", "lora"] = "naive"
    """naive fine-tuning, frozen bottom layers, multi-task (summed losses), GEM (projected gradient), or what a
    practitioner would use instead: L2-SP (a pull toward the pre-trained weights) or LoRA adapters (peft)."""
    memory: list[Literal["mlm", "xsr"]] = field(default_factory=list)
    """Memory tasks: [] for naive/frozen; [mlm], [xsr] or [mlm, xsr] (Both) for mtf and gem."""
    mlm_languages: Literal["en", "all"] = "all"
    """MLM memory over English only (MLM(en)) or the source and all targets (MLM(all))."""
    mtf_weights: dict[str, float] = field(default_factory=lambda: {"mlm": 1.0, "xsr": 1.0})
    """Weights of the memory losses added to the task loss in mtf."""
    frozen_layers: int = bounded(3, ge=0)
    """frozen: embeddings and the bottom N encoder layers do not train."""
    xsr_layer: int = -1
    """Hidden layer whose masked mean is the sentence embedding (-1 = last; XTREME uses 8 of 12)."""
    xsr_pooling: Literal["words", "all"] = "words"
    """Which tokens that mean averages, in training and evaluation: the sentence's own pieces ("words": not
    [CLS]/<s>, [SEP]/</s>; every XSR number in docs/RESULTS.md), or every token but padding ("all": the mean
    pooling of multilingual-e5 and sentence-transformers, a point or two higher P@1 for e5)."""
    memory_batch_size: int = bounded(16, ge=2)
    """Global batch of every memory task (the paper: 16)."""
    l2sp_strength: float = bounded(0.1, ge=0)
    """l2sp: alpha of the penalty alpha/2 |theta - theta_0|^2 on the encoder's weights (Li et al., 2018), i.e.
    alpha (theta - theta_0) added to their gradient before AdamW; the new tagging head is not pulled."""
    lora_rank: int = bounded(8, ge=1)
    """lora: rank of the adapters; the encoder itself is frozen, the adapters and the tagging head train."""
    lora_alpha: float = bounded(16.0, gt=0)
    """lora: the adapters' scale is lora_alpha / lora_rank."""
    lora_modules: list[str] = field(default_factory=lambda: ["query", "key", "value"])
    """lora: the encoder's linear layers that get adapters (BERT's attention projections)."""
    gem: GemConfig = field(default_factory=GemConfig)

    def __post_init__(self):
        needs_memory = self.name in ("mtf", "gem")
        require(
            bool(self.memory) == needs_memory,
            "memory",
            f"{self.name} takes {'one or more memory tasks' if needs_memory else 'no memory tasks'}",
        )
        require(len(set(self.memory)) == len(self.memory), "memory", "lists a task twice")
        for task, weight in self.mtf_weights.items():
            require(weight >= 0, "mtf_weights", f"{task}: {weight:g} must be >= 0")


@dataclass
class TrainConfig:
    seed: int = bounded(0, ge=0)
    """Seeds model initialisation, data order, masking and dropout."""
    steps: int = bounded(1000, ge=1)
    """Optimizer steps (each runs every task once)."""
    batch_size: int = bounded(16, ge=1)
    """Global batch (every task): micro_batch_size x gradient_accumulation x ranks."""
    gradient_accumulation: int = bounded(1, ge=1)
    """Micro-batches per rank and step for the task and MLM (XSR batches are never split)."""
    lr: float = bounded(1e-5, gt=0)
    """AdamW learning rate (the paper: Adam, 1e-5)."""
    weight_decay: float = bounded(0.0, ge=0)
    """L2 via decoupled weight decay (AdamW); the paper's naive baseline."""
    warmup_steps: int = bounded(0, ge=0)
    """Linear warm-up of the learning rate, then constant."""
    group_by_length: bool = False
    """Batch examples of similar length (each epoch still a permutation of seed and epoch): less padding,
    up to 2x faster steps on CPU; off reproduces uniformly random batches."""
    gradient_clipping: float = bounded(0.0, ge=0)
    """0 disables (DeepSpeed's own default of 1.0 would clip the projected gradient)."""
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    """fp16 uses DeepSpeed's loss scaling (GPU only); the projection is scale-invariant."""
    zero_stage: Literal[0, 1, 2, 3] = 0
    """DeepSpeed ZeRO stage; GEM works on each rank's gradient partition at every stage."""
    deepspeed_config: str = "configs/deepspeed/zero{stage}.json"
    """DeepSpeed JSON; its "auto" fields are filled from this section (relative paths: cwd, then the repo)."""
    nonfinite: Literal["stop", "skip"] = "stop"
    """A step whose loss or gradient is not finite (fp32/bf16; fp16 overflows are DeepSpeed's to skip) is never
    applied: its gradient is zeroed before the optimizer. `stop` ends the run (exit code 3, results.json status
    "diverged") after `nonfinite_limit` such steps in a row; `skip` only counts them (docs/USAGE.md)."""
    nonfinite_limit: int = bounded(3, ge=1)
    """Consecutive non-finite steps after which `nonfinite: stop` ends the run."""


@dataclass
class EvalConfig:
    every: int = bounded(100, ge=1)
    """Evaluate the targets' dev sets every E steps (early stopping on their average)."""
    patience: int = bounded(5, ge=0)
    """Stop after this many evaluations without improvement (0 = never stop early)."""
    batch_size: int = bounded(64, ge=1)
    """Evaluation batch (windows or sentences) per rank."""
    before_training: bool = True
    """Evaluate the backbone first (Table 1's backbone row; the same for every run of one backbone)."""
    after_training: bool = True
    """Measure MLM perplexity and XSR P@k after training (Table 1's method rows)."""
    memory: bool = True
    """Also measure MLM perplexity and XSR P@k at every dev evaluation (forgetting curves)."""
    memory_loss_examples: int = bounded(64, ge=0)
    """At every dev evaluation, each memory constraint's loss on this many fixed held-out examples, spread
    evenly over its held-out data so that every language of a pooled constraint has its share
    (`memory_loss/<constraint>`: does the constraint protect anything?); 0 disables."""
    memory_loss_every: int = bounded(0, ge=0)
    """Also measure those held-out memory losses every N steps between dev evaluations (a forgetting
    curve at the cost of a forward over those examples; it changes nothing in training); 0 = only at dev
    evaluations."""
    predicted_change: bool = False
    """Every step, each memory loss's first-order predicted change <g_i, theta_after - theta_before> for
    the step actually taken (`gem/predicted_change/<constraint>`); costs two copies of the partition."""


@dataclass
class OutputConfig:
    run_dir: str = "runs/default"
    """Where config.yaml, results.json, steps.jsonl, tensorboard/ and checkpoints/ go."""
    checkpoint_every: int = bounded(0, ge=0)
    """Save a resumable checkpoint every N steps (0 = none but `best` and the one a preemption signal asks
    for)."""
    keep_checkpoints: int = bounded(2, ge=1)
    """Resumable checkpoints kept (the newest; `best` is kept besides them): an older one is deleted only after
    a newer one is complete."""
    tensorboard: bool = True
    """Write TensorBoard events (rank 0)."""
    save_predictions: bool = False
    """Write the test sets' word-level predictions to predictions/<lang>.json (export checks)."""
    save_final: bool = False
    """Also write final.safetensors: the last step's weights, gathered on rank 0 (tests, export)."""


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    output: OutputConfig = field(default_factory=OutputConfig)


def load_run_config(paths: list[str | os.PathLike] = (), overrides: list[str] = ()) -> RunConfig:
    """The resolved run config from YAML files and `section.key=value` overrides."""
    return load_config(RunConfig, list(paths), list(overrides))


__all__ = ["RunConfig", "load_run_config", "dump_yaml"]
