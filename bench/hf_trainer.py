"""The naive path against Hugging Face Trainer + DeepSpeed: same model, data, batch, optimizer and ZeRO stage.

    python bench/hf_trainer.py [--quick] [--ranks 1 2] [--stages 0 2] [--steps 40] [--set section.key=value ...]

Both sides train the configured backbone (default: the embedded tiny one) with a token-classification
head on the configured English POS/NER train file, global batch train.batch_size, AdamW at train.lr,
no clipping, fp32, under DeepSpeed with configs/deepspeed/zero{stage}.json, on 1 or N CPU ranks
(torchrun, gloo). distgem runs `launch/train.py` with method.name=naive and no evaluation and reports
every step's wall time (steps.jsonl); Trainer gets the same windows (distgem's own encoding and
padding collate) and a callback takes the same per-step wall time (from one step's end to the next). Medians
over the steps after --warmup; the ratio is ours / theirs in samples per second (> 1: distgem is faster). The runs
alternate (ours, theirs, theirs, ours, ...) per repeat so drift in the machine's load hits both.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import ROOT, environment, launcher, load_average

COMMON = [
    "method.name=naive",
    "eval.before_training=false",
    "eval.after_training=false",
    "eval.memory=false",
    "eval.every=100000",
    "output.tensorboard=false",
    "output.save_final=false",
    "train.gradient_clipping=0",
    "train.warmup_steps=0",
    "train.weight_decay=0",
]


def hf_worker(args) -> None:
    """Inside every rank: Trainer + DeepSpeed on distgem's own windows; rank 0 writes the step times."""
    import torch
    from transformers import AutoModelForTokenClassification, AutoTokenizer, Trainer, TrainerCallback, TrainingArguments

    from distgem.config.sections import load_run_config
    from distgem.data.corpora import path_of
    from distgem.data.tagged import LABELS, load_tagged
    from distgem.model.backbone import resolve
    from distgem.tasks.tagging import collate

    config = load_run_config([], [*COMMON, *args.overrides])
    backbone, task = resolve(config.model.backbone), config.task.name
    tokenizer = AutoTokenizer.from_pretrained(backbone)
    split = config.data.ner_splits["train"] if task == "ner" else "train"
    train = load_tagged(
        path_of(config.data, task, "en", split=split), task, tokenizer, config.model.max_length, config.model.stride
    ).examples
    dropout = (
        {}
        if config.model.dropout is None
        else {"hidden_dropout_prob": config.model.dropout, "attention_probs_dropout_prob": config.model.dropout}
    )
    model = AutoModelForTokenClassification.from_pretrained(backbone, num_labels=len(LABELS[task]), **dropout)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    ds_config = json.loads((ROOT / config.train.deepspeed_config.format(stage=config.train.zero_stage)).read_text())
    if world > 1:
        # on CPU, accelerate's state counts one process under DeepSpeed (num_processes 1 while torch.distributed
        # has N), so Trainer would fill train_batch_size = the per-rank batch and DeepSpeed refuse it; without
        # the key DeepSpeed derives it (micro x N). Trainer then draws the same indices on every rank (no
        # distributed sampler): each rank maps them through its own permutation, so that the ranks get
        # different windows, as distgem's shards do (identical batches would never wait for each other).
        ds_config.pop("train_batch_size", None)
    rank = int(os.environ.get("RANK", "0"))
    shard = torch.randperm(len(train), generator=torch.Generator().manual_seed(rank)) if world > 1 else None

    class Windows(torch.utils.data.Dataset):
        def __len__(self):
            return len(train)

        def __getitem__(self, i):
            return train[i if shard is None else int(shard[i])]

    class StepTimes(TrainerCallback):
        """Wall time from one step's end to the next (data loading included, as distgem's samples_per_s)."""

        def __init__(self):
            self.times, self.last = [], None

        def on_train_begin(self, *_, **__):
            self.last = time.perf_counter()

        def on_step_end(self, *_, **__):
            now = time.perf_counter()
            self.times.append(now - self.last)
            self.last = now

    times = StepTimes()
    arguments = TrainingArguments(
        output_dir=args.workdir,
        per_device_train_batch_size=config.train.batch_size // world,
        max_steps=args.steps,
        learning_rate=config.train.lr,
        weight_decay=0.0,
        warmup_steps=0,
        lr_scheduler_type="constant",
        max_grad_norm=0.0,
        optim="adamw_torch",
        logging_steps=10**9,
        save_strategy="no",
        report_to=[],
        dataloader_num_workers=0,
        disable_tqdm=True,
        seed=config.train.seed,
        deepspeed=ds_config,
        use_cpu=False,
    )
    trainer = Trainer(
        model=model,
        args=arguments,
        train_dataset=Windows(),
        data_collator=lambda windows: collate(windows, tokenizer.pad_token_id),
        callbacks=[times],
    )
    trainer.train()
    if int(os.environ.get("RANK", "0")) == 0:
        Path(args.out).write_text(json.dumps(times.times))


def run(command: list[str], env: dict, what: str) -> None:
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT)
    if done.returncode:
        raise SystemExit(f"{what} failed (rc={done.returncode}):\n{done.stderr[-4000:]}")


def ours(ranks: int, stage: int, args, work: Path, env: dict) -> list[float]:
    run_dir = work / f"ours-{ranks}-{stage}"
    sets = [
        *COMMON,
        f"train.steps={args.steps}",
        f"train.zero_stage={stage}",
        f"output.run_dir={run_dir}",
        *args.overrides,
    ]
    run(
        [*launcher(ranks), str(ROOT / "launch" / "train.py"), *[a for s in sets for a in ("--set", s)]],
        env,
        "distgem",
    )
    records = [json.loads(line) for line in (run_dir / "steps.jsonl").read_text().splitlines()]
    return [r["samples_per_s"] for r in records if "samples_per_s" in r]


def theirs(ranks: int, stage: int, args, work: Path, env: dict) -> list[float]:
    out = work / f"hf-{ranks}-{stage}.json"
    sets = [f"train.zero_stage={stage}", *args.overrides]
    run(
        [
            *launcher(ranks),
            __file__,
            "--hf-worker",
            "--workdir",
            str(work / "hf"),
            "--out",
            str(out),
            "--steps",
            str(args.steps),
            *[a for s in sets for a in ("--set", s)],
        ],
        env,
        "HF Trainer",
    )
    batch = next((int(s.split("=", 1)[1]) for s in reversed(args.overrides) if s.startswith("train.batch_size=")), 16)
    return [batch / t for t in json.loads(out.read_text())]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1 rank, ZeRO-2, 6 steps, one repeat")
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--stages", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--set", action="append", default=[], dest="overrides")
    parser.add_argument("--hf-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.hf_worker:
        hf_worker(args)
        return 0
    if args.quick:
        args.ranks, args.stages, args.steps, args.warmup, args.repeats = [1], [2], 6, 2, 1
    env = {
        **os.environ,
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
        "PYTHONPATH": str(ROOT),
        "DS_ACCELERATOR": os.environ.get("DS_ACCELERATOR", "cpu"),
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    print(f"# naive: distgem vs HF Trainer + DeepSpeed, {environment(torch.device('cpu'))}")
    print(
        f"# {args.steps} steps per run, median samples/s over steps {args.warmup + 1}..{args.steps}, "
        f"{args.repeats} repeat(s) alternating; load average before {load_average()}\n"
    )
    print("| ranks | ZeRO | distgem samples/s | HF Trainer samples/s | ours / theirs |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for ranks in args.ranks:
            for stage in args.stages:
                a, b = [], []
                for repeat in range(args.repeats):
                    sides = [(ours, a), (theirs, b)] if repeat % 2 == 0 else [(theirs, b), (ours, a)]
                    for side, into in sides:
                        into += side(ranks, stage, args, Path(tmp) / str(repeat), env)[args.warmup :]
                mine, hf = statistics.median(a), statistics.median(b)
                print(f"| {ranks} | {stage} | {mine:.1f} | {hf:.1f} | {mine / hf:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
