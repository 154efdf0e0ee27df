"""`distgem export RUN_DIR --out DIR [--checkpoint best|last|STEP]`: a standard Hugging Face tagger.

Weights of any ZeRO stage are consolidated by DeepSpeed's own zero_to_fp32 in one process (however
many ranks wrote them), mapped onto `AutoModelForTokenClassification` of the backbone's architecture,
and saved as safetensors with `id2label`/`label2id`, the tokenizer, and a model card.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from distgem.errors import UserError

CARD = """---
library_name: transformers
pipeline_tag: token-classification
tags: [distgem, gem, cross-lingual, {task}]
---
# {task_upper} tagger trained with distgem ({method})

- backbone: `{backbone}`
- task: {task} (source language `{source}`; zero-shot targets: {targets})
- method: {method_line}
- seed: {seed}; checkpoint: {checkpoint} (step {step}); ZeRO stage {zero_stage} on {world_size} rank(s)

## Results (test, per language)

| language | score |
|---|---|
{rows}

Average over the target languages: **{average}**

## How it was trained

```
{command}
```

Load with `AutoModelForTokenClassification.from_pretrained` and `AutoTokenizer.from_pretrained`, or tag files
with `distgem predict THIS_DIR INPUT --out OUTPUT` (windows for long sentences, CoNLL-U/CoNLL round trips).
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", help="a run directory (its config.yaml and checkpoints/)")
    parser.add_argument("--out", required=True, help="the Hugging Face model directory to write")
    parser.add_argument(
        "--checkpoint",
        default="best",
        help="best (the best dev average; the default), last (the newest step checkpoint) or a step number",
    )


def run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    out = export(Path(args.run_dir), Path(args.out), args.checkpoint)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(
        f"exported {args.run_dir} ({args.checkpoint}) -> {out}: {size / 1e6:.1f} MB "
        f"in {time.perf_counter() - started:.1f} s"
    )
    return 0


def checkpoint_tag(run_dir: Path, which: str) -> str:
    root = run_dir / "checkpoints"
    if which == "best":
        tag = "best"
    elif which == "last":
        latest = root / "latest"
        if not latest.is_file():
            raise UserError(f"{run_dir}: no resumable checkpoint (train with output.checkpoint_every > 0)")
        tag = latest.read_text().strip()
    elif which.isdigit():
        tag = f"step{which}"
    else:
        raise UserError(f"--checkpoint {which!r}: expected best, last or a step number")
    if not (root / tag).is_dir():
        available = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
        raise UserError(f"{root / tag}: no such checkpoint (available: {', '.join(available) or 'none'})")
    return tag


def export(run_dir: Path, out: Path, which: str = "best") -> Path:
    import torch
    from transformers import AutoConfig, AutoModelForTokenClassification

    from distgem.config.sections import load_run_config
    from distgem.data.tagged import LABELS
    from distgem.distributed.checkpoint import consolidated_weights
    from distgem.model import backbone as backbones

    if not (run_dir / "config.yaml").is_file():
        raise UserError(f"{run_dir}: not a distgem run (no config.yaml)")
    config = load_run_config([run_dir / "config.yaml"])
    tag = checkpoint_tag(run_dir, which)
    weights = consolidated_weights(run_dir / "checkpoints", tag)
    if config.method.name == "lora":  # the adapters merged into the layers they adapt: a plain model again
        weights = merge_lora(weights, config.method.lora_alpha / config.method.lora_rank)
    labels = list(LABELS[config.task.name])
    source = backbones.resolve(config.model.backbone)
    hf_config = AutoConfig.from_pretrained(
        source,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
    )
    hf_config.distgem = {"max_length": config.model.max_length, "stride": config.model.stride, "task": config.task.name}
    model = AutoModelForTokenClassification.from_config(hf_config)
    prefix = model.base_model_prefix
    mapped = {}
    for name, tensor in weights.items():
        if name.startswith("encoder."):
            mapped[f"{prefix}.{name[len('encoder.') :]}"] = tensor
        elif name.startswith("tagger."):
            mapped[f"classifier.{name[len('tagger.') :]}"] = tensor
    missing, unexpected = model.load_state_dict(mapped, strict=False)
    # a backbone without a masked-LM head loads as AutoModel and keeps its pooler, which token classification
    # neither has nor uses (and the MLM one lacks): a pooler on either side is not part of the tagger
    missing = [m for m in missing if "pooler" not in m.split(".") and "position_ids" not in m]
    unexpected = [u for u in unexpected if "pooler" not in u.split(".")]
    if missing or unexpected:
        raise UserError(
            f"{run_dir}: checkpoint does not fit {type(model).__name__}: "
            f"missing {missing[:3]}, unexpected {unexpected[:3]}"
        )
    out.mkdir(parents=True, exist_ok=True)
    model.to(torch.float32).save_pretrained(out, safe_serialization=True)
    tokenizer, _ = _tokenizer(source)
    tokenizer.save_pretrained(out)
    (out / "README.md").write_text(_card(run_dir, config, tag))
    # transformers writes the weights through a private temporary file (mode 0600): a model directory is
    # for sharing, so give every file the permissions the user's umask gives new files
    umask = os.umask(0)
    os.umask(umask)
    for path in out.iterdir():
        if path.is_file():
            path.chmod(0o666 & ~umask)
    return out


def merge_lora(weights: dict, scale: float) -> dict:
    """peft's `X.base_layer.weight` + `X.lora_A.*` + `X.lora_B.*` into `X.weight` = W + scale B A (and its bias)."""
    merged = {}
    for name, tensor in weights.items():
        if ".lora_A." in name or ".lora_B." in name:
            continue
        if name.endswith(".base_layer.weight"):
            layer = name[: -len(".base_layer.weight")]
            (a,) = [t for n, t in weights.items() if n.startswith(f"{layer}.lora_A.") and n.endswith(".weight")]
            (b,) = [t for n, t in weights.items() if n.startswith(f"{layer}.lora_B.") and n.endswith(".weight")]
            merged[f"{layer}.weight"] = tensor + scale * (b.double() @ a.double()).to(tensor.dtype)
        else:
            merged[name.replace(".base_layer.", ".")] = tensor
    return merged


def _tokenizer(source: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(source), source


def _card(run_dir: Path, config, tag: str) -> str:
    results_path = run_dir / "results.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else None
    per_language = results["test"]["per_language"] if results else {}
    rows = (
        "\n".join(f"| {lang} | {m['score']:.2f} |" for lang, m in per_language.items() if m.get("score") is not None)
        or "| - | not evaluated |"
    )
    method = config.method
    method_line = method.name + (
        f" with memory {', '.join(method.memory)} (MLM over {method.mlm_languages})" if method.memory else ""
    )
    if method.name == "gem":
        gem = method.gem
        method_line += (
            f"; memory_strength {gem.memory_strength}, per_language {gem.per_language}, "
            f"per_layer {gem.per_layer}, refresh every {gem.refresh_every}"
        )
    state_path = run_dir / "checkpoints" / tag / "state.json"
    step = json.loads(state_path.read_text())["state"]["step"] if state_path.is_file() else "?"
    command = f"deepspeed launch/train.py --config {run_dir}/config.yaml"
    return CARD.format(
        task=config.task.name,
        task_upper=config.task.name.upper(),
        method=method.name,
        backbone=config.model.backbone,
        source=config.task.source,
        targets=", ".join(config.task.targets),
        method_line=method_line,
        seed=config.train.seed,
        checkpoint=tag,
        step=step,
        zero_stage=config.train.zero_stage,
        world_size=results["run"]["world_size"] if results else "?",
        rows=rows,
        command=command,
        average=f"{results['test']['average']:.2f}" if results and results["test"]["average"] is not None else "-",
    )
