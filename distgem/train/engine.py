"""The training engine: one DeepSpeed engine, the step every method shares, evaluation, early stopping.

`Trainer.step` reads top to bottom: the memory gradients (one forward-backward per constraint, each
captured into its row of the memory buffer), the task gradient, the method's edit (MTF adds, GEM
projects), the optimizer step, the method's edit of the step taken (GEM's update target), then one
all-reduce for everything the step reports. Every gradient lives on this rank's ZeRO partition only, and
the buffers beside it (memory rows, accumulated task gradient) in `train/gradients.py`.
`Trainer.train` is the run: evaluation, checkpoints and logs are plain calls at intervals.
"""

from __future__ import annotations

import math
import random
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
import yaml

from distgem.config.loader import dump_yaml
from distgem.config.sections import RunConfig
from distgem.data.corpora import load_corpora, needed
from distgem.data.loader import BatchStream
from distgem.data.tagged import LABELS
from distgem.distributed.checkpoint import Checkpointer, config_changes, note
from distgem.distributed.deepspeed import build_engine, deepspeed_config, save_full_weights
from distgem.distributed.world import World
from distgem.errors import ConfigError, UserError
from distgem.model import backbone as backbones
from distgem.model.multitask import MultiTaskModel
from distgem.tasks.metrics import average_over_targets
from distgem.tasks.sources import memory_sources, tagging_source
from distgem.train.evaluation import Evaluator
from distgem.train.gradients import Gradients
from distgem.train.log import RunLog, flatten, hparams_of
from distgem.train.methods import METHODS
from distgem.train.preemption import DIVERGED_MARKER, PREEMPTED_EXIT, PREEMPTED_MARKER, PREEMPTION, Diverged, Preempted
from distgem.train.reduction import Reduction
from distgem.train.results import build_results, memory_mb, peak_rss_mb, write_json
from distgem.train.timer import PhaseTimer

ROOT = Path(__file__).resolve().parents[2]


class Trainer:
    def __init__(self, config: RunConfig, world: World):
        self.config, self.world = config, world
        self.run_dir = Path(config.output.run_dir)
        train, method = config.train, config.method
        _seed_everything(train.seed)
        self.tokenizer, backbone = backbones.load(config.model.backbone, config.model.dropout)
        backbones.check_config(config, backbone)
        # perplexity for every language (where there is an MLM head), XSR for every target
        mono, pairs = needed(config.task, backbones.has_mlm_head(backbone.config))
        with world.main_first():  # one rank tokenises into the shared cache, the others open what it wrote
            self.corpora = load_corpora(
                config.data, config.task, config.model, self.tokenizer, mono, pairs, progress=world.is_main
            )
        # ZeRO-3 gathers each layer's parameters collectively in every forward: where a count of forwards can differ
        # between ranks (evaluation shards, embedding chunks), every rank runs the most any rank needs
        lockstep = train.zero_stage == 3 and world.size > 1
        self.model = MultiTaskModel(
            backbone,
            len(LABELS[config.task.name]),
            method.xsr_layer,
            gather=world.gather_rows(),
            embed_chunk_tokens=config.model.embed_chunk_tokens,
            agree_chunks=world.max if lockstep else None,
        )
        self.main = tagging_source(config.task.name, self.corpora.train, self.tokenizer.pad_token_id)
        languages = [config.task.source, *config.task.targets]
        self.corpora.mono_train = {
            lang: self.corpora.mono_train[lang]
            for lang in (languages if method.mlm_languages == "all" else ["en"])
            if lang in self.corpora.mono_train
        }
        self.memories = memory_sources(method, self.corpora, self.tokenizer, train.seed) if method.memory else []
        # the same constraints over the held-out memory data (fixed batches: memory_loss/<name> at dev evaluations)
        held_out = SimpleNamespace(
            mono_train={
                lang: self.corpora.mono_eval[lang] for lang in self.corpora.mono_train if lang in self.corpora.mono_eval
            },
            pairs_train=self.corpora.pairs_eval,
        )
        self.held_out = (
            memory_sources(method, held_out, self.tokenizer, train.seed)
            if method.memory and config.eval.memory_loss_examples
            else []
        )
        self.timer = PhaseTimer(world.device)  # off unless DISTGEM_PROFILE=1 (bench/)
        self.method = METHODS[method.name](method, self.memories, world, train.zero_stage > 0, self.timer)
        self.method.prepare(self.model)
        names = {id(p): n for n, p in self.model.named_parameters()}
        self.engine = build_engine(self.model, *self._optimizer(), self._deepspeed_config())
        self.gradients = Gradients(
            self.engine,
            names,
            world.device,
            rows=len(self.memories),
            accumulation=train.gradient_accumulation,
            per_layer=method.name == "gem" and method.gem.per_layer,
            timer=self.timer,
        )
        self.streams = {
            s.name: BatchStream(
                s.size,
                train.batch_size if s is self.main else method.memory_batch_size,
                train.seed,
                s.name,
                s.lengths() if train.group_by_length else None,
            )
            for s in [self.main, *self.memories]
        }
        self.evaluator = Evaluator(
            self.engine, world, self.tokenizer, config.eval.batch_size, lockstep, method.xsr_pooling
        )
        self.state = {
            "step": 0,
            "best": None,
            "best_step": None,
            "bad_evals": 0,
            "history": [],
            "backbone": None,
            "gem": self.method.state_dict() or {"violated_steps": 0, "steps": 0, "fallbacks": 0},
        }
        self.stop_requested = False
        self.checkpoints = Checkpointer(
            self.run_dir / "checkpoints", self.engine, world, config.output.keep_checkpoints
        )
        self.config_text = dump_yaml(config)  # kept with every checkpoint: a resume compares it
        self._stop_if_preempted()  # a signal during start-up (data, engine build): requeue without a checkpoint

    # --- set-up -----------------------------------------------------------------------------
    def _optimizer(self):
        train = self.config.train
        decay, no_decay = [], []
        for param in self.model.parameters():
            if param.requires_grad:
                (no_decay if param.ndim < 2 else decay).append(param)
        optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": train.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=train.lr,
        )
        warmup = train.warmup_steps
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup) if warmup else 1.0)
        return optimizer, schedule

    def _deepspeed_config(self) -> dict:
        train, size = self.config.train, self.world.size
        for key, batch in (
            ("train.batch_size", train.batch_size),
            ("method.memory_batch_size", self.config.method.memory_batch_size),
        ):
            if batch % (size * train.gradient_accumulation):
                raise ConfigError(
                    f"{key} {batch} must divide into {size} ranks x "
                    f"train.gradient_accumulation {train.gradient_accumulation} micro-batches"
                )
        path = train.deepspeed_config.format(stage=train.zero_stage)
        path = path if Path(path).is_absolute() or Path(path).exists() else str(ROOT / path)
        return deepspeed_config(
            path,
            micro_batch=train.batch_size // size // train.gradient_accumulation,
            world_size=size,
            zero_stage=train.zero_stage,
            precision=train.precision,
            gradient_clipping=train.gradient_clipping,
        )

    # --- the step ---------------------------------------------------------------------------
    def step(self, step: int) -> dict[str, float]:
        """One optimizer step of the configured method; returns what the log shows."""
        method, reduction = self.method, Reduction()
        # memory gradients, each captured into its row of the buffer (kept there on steps that skip them)
        gradients = self.gradients
        refresh = bool(self.memories) and (not gradients.has_memory or method.refresh(step))
        losses = [self._backward(source, step, row=i) for i, source in enumerate(self.memories)] if refresh else []
        losses.append(self._backward(self.main, step))  # the task gradient, where DeepSpeed reduced it
        view = gradients.view(reduction)
        method.after_backward(view)  # MTF adds the memory gradients, GEM projects onto their constraints
        # a non-finite loss or gradient is never applied; whether the run goes on is decided after the reduction
        nonfinite = not all(math.isfinite(loss) for loss in losses) or not gradients.finite(self.config.train.precision)
        if nonfinite:
            gradients.discard()
        predict = self.config.eval.predicted_change and gradients.memory is not None
        before = gradients.values() if predict or method.edits_update else None
        with self.timer.phase("optimizer"):
            self.engine.step()
        method.after_step(view, before)  # GEM's update target projects the step the optimizer took
        # one small all-reduce for everything the step reports
        reduction.add("losses", torch.tensor(losses, dtype=torch.float64))
        reduction.add("stop", torch.tensor([float(PREEMPTION.requested)]))
        reduction.add("nonfinite", torch.tensor([float(nonfinite)]))
        if predict:  # first order: L_i(theta + delta) - L_i(theta) ~ <g_i, delta> for the step actually taken
            delta = gradients.values().sub_(before)
            shards = 1 if gradients.partition.stage else self.world.size  # ZeRO 0: every rank holds all of it
            reduction.add("predicted", (gradients.memory.data @ delta).double() / shards)
        with self.timer.phase("reduce_losses"):
            reduced = reduction.sum(self.world)
        self.stop_requested = bool(reduced["stop"][0] > 0)
        stats = view.stats
        stats["train/nonfinite"] = float(reduced["nonfinite"][0] > 0)  # on any rank
        reported = self.memories if refresh else []
        stats.update(
            {f"loss/{s.name}": v / self.world.size for s, v in zip([*reported, self.main], reduced["losses"].tolist())}
        )
        if predict:
            stats.update(
                {f"gem/predicted_change/{s.name}": v for s, v in zip(self.memories, reduced["predicted"].tolist())}
            )
        method.report(reduced, stats)
        stats["lr"] = self.engine.get_lr()[0]
        stats.update(self.timer.take())
        return stats

    def _backward(self, source, step: int, row: int | None = None) -> float:
        """Forward and backward of one task over this rank's micro-batches; the loss is scaled so that
        summing over micro-batches and averaging over ranks gives the global batch's mean."""
        batch = self.streams[source.name].next()
        whole = source.batch(batch, step)  # the global batch's units (tokens, masked tokens, pairs) set the scale
        scale = self.world.size / max(source.units(whole), 1)
        # XSR ranks each pair against the whole global batch: accumulation would shrink its negatives
        accumulation = 1 if source.kind == "xsr" else self.config.train.gradient_accumulation
        micro_batches = self.world.micro_batches(batch, accumulation)
        total = 0.0
        for j, indices in enumerate(micro_batches):
            with self.timer.phase("zero"):
                self.gradients.zero()
            with self.timer.phase("forward_backward"):  # DeepSpeed reduces the gradient inside backward
                tensors = whole if indices == batch else source.batch(indices, step)  # one rank: collated once
                inputs = {key: value.to(self.world.device) for key, value in tensors.items()}
                loss = self.engine(task=source.kind, scale=scale, **inputs)["loss"]
                self.engine.backward(loss)
                total += loss.detach().item()
            if row is not None:
                self.method.after_memory_backward(row, self.model, inputs, scale, loss.detach().item())
            self.gradients.capture(row, accumulate=j > 0)
        return total

    # --- evaluation -----------------------------------------------------------------------------
    def evaluate_tagging(self, corpora: dict, save_as: str | None = None) -> dict[str, dict[str, float]]:
        """Scores per language; with `save_as`, also the word-level tags under predictions/<save_as>/."""
        return self.evaluator.tagging(
            self.config.task.name, corpora, self.run_dir / "predictions" / save_as if save_as else None
        )

    def evaluate_memory(self) -> dict:
        """MLM perplexity per language and XSR P@1/5/10 per pair (Table 1)."""
        return self.evaluator.memory(self.corpora.mono_eval, self.corpora.pairs_eval)

    def evaluate_memory_losses(self) -> dict[str, float]:
        return self.evaluator.memory_losses(self.held_out, self.config.eval.memory_loss_examples)

    # --- the run ------------------------------------------------------------------------------
    def train(self, resume: bool = False, allow_config_change: bool = False) -> dict:
        config = self.config
        PREEMPTION.install()  # again: DeepSpeed or a library may have replaced the handler since start-up
        if self.world.is_main:
            (self.run_dir / PREEMPTED_MARKER).unlink(missing_ok=True)
            (self.run_dir / DIVERGED_MARKER).unlink(missing_ok=True)
        if resume:
            self._resume(allow_config_change)
        log = RunLog(
            self.run_dir, self.world.is_main, config.output.tensorboard, config.train.steps, self.state["step"]
        )
        started = time.perf_counter()
        if config.eval.before_training and self.state["backbone"] is None:
            self.state["backbone"] = self.evaluate_memory()
            log.scalars(0, flatten("memory", self.state["backbone"]))
            if self.held_out:  # where the memory_loss curves start
                self.state["backbone"]["memory_loss"] = self.evaluate_memory_losses()
                log.scalars(0, flatten("memory_loss", self.state["backbone"]["memory_loss"]))
        self._stop_if_preempted(log)
        self.engine.train()  # from_pretrained returns eval mode; dropout must be on whatever ran before
        try:
            while self.state["step"] < config.train.steps:
                step = self.state["step"]
                tick = time.perf_counter()
                stats = self.step(step)
                stats["samples_per_s"] = config.train.batch_size / (time.perf_counter() - tick)
                stats.update(memory_mb(self.world.device))  # this rank's; results.json has every rank's peak
                self.state["step"] = step + 1
                self.state["gem"] = self.method.state_dict() or self.state["gem"]
                every = config.eval.memory_loss_every
                held = self.evaluate_memory_losses() if self.held_out and every and (step + 1) % every == 0 else None
                if held is not None:  # observed after the step's timing: it changes nothing in training
                    stats.update({f"memory_loss/{name}": v for name, v in held.items()})
                log.step(step + 1, stats)
                log.progress(loss=stats[f"loss/{self.main.name}"])
                self._count_nonfinite(step + 1, stats, log)
                if (step + 1) % config.eval.every == 0 or step + 1 == config.train.steps:
                    if self._evaluate_dev(step + 1, log, held):
                        log.message(
                            f"early stopping at step {step + 1}: no improvement in {config.eval.patience} evaluations"
                        )
                        break
                if (
                    config.output.checkpoint_every
                    and (step + 1) % config.output.checkpoint_every == 0
                    or self.stop_requested
                ):
                    self.checkpoints.save(f"step{step + 1}", self._client_state(), self.config_text)
                if self.stop_requested:
                    if self.world.is_main:
                        (self.run_dir / PREEMPTED_MARKER).write_text(f"{step + 1}\n")
                    log.message(
                        f"preempted: checkpoint at step {step + 1}; exiting with code {PREEMPTED_EXIT} to be requeued"
                    )
                    log.close()
                    raise Preempted(step + 1)
        except Diverged as err:
            self._write_results(None, None, time.perf_counter() - started, log, status="diverged", error=str(err))
            raise
        train_seconds = time.perf_counter() - started
        if config.output.save_final:
            save_full_weights(self.model, self.run_dir / "final.safetensors", self.world)
        if self.state["best_step"] is not None:
            self.checkpoints.load("best", module_only=True)
        test = self.evaluate_tagging(self.corpora.test, save_as="test" if config.output.save_predictions else None)
        after = self.evaluate_memory() if config.eval.after_training else None
        return self._write_results(test, after, train_seconds, log)

    def _write_results(
        self,
        test: dict | None,
        after: dict | None,
        seconds: float,
        log: RunLog,
        status: str = "ok",
        error: str | None = None,
    ) -> dict:
        """results.json (main process), the test scores in TensorBoard; a diverged run leaves a DIVERGED marker."""
        rss = self.world.gather(round(peak_rss_mb(), 1))  # per rank: the data stays memory-mapped
        results = build_results(self.config, self.world.size, self.state, test, after, seconds, rss, status)
        if error:
            results["error"] = error
        if self.world.is_main:
            write_json(self.run_dir / "results.json", results)
            if status != "ok":
                (self.run_dir / DIVERGED_MARKER).write_text(f"{self.state['step']}\n")
            # the tested checkpoint (best dev average, or the last step) under tags of its own: its scores are not
            # a point of the memory/* curves, which were measured during training
            tested = {"tested/step": float(self.state["best_step"] or self.state["step"])}
            if test:
                tested.update(flatten("test", {lang: m["score"] for lang, m in test.items()}))
            if after:
                tested.update(flatten("tested/memory", after))
            log.scalars(self.state["step"], tested)
            average = results["test"]["average"]
            log.hparams(
                hparams_of(self.config),
                {
                    "hparam/test_average": average if average is not None else 0.0,
                    "hparam/dev_best": self.state["best"] or 0.0,
                },
            )
        log.close()
        self.world.barrier()
        return results

    def _resume(self, allow_config_change: bool) -> None:
        """Continue from the newest intact checkpoint (none yet: from the start), with the config it was written
        with unless the change is allowed."""
        tag, damaged = self.checkpoints.resumable()
        for line in damaged if self.world.is_main else []:
            note(f"checkpoint {line}: not used")
        if tag is None:
            if damaged:
                raise UserError(
                    f"--resume: no intact checkpoint in {self.checkpoints.directory} ({'; '.join(damaged)})"
                )
            return
        if damaged and self.world.is_main:
            note(f"resuming from {tag}, the newest intact checkpoint")
        client = self.checkpoints.load(tag)
        if client["config"] is not None:
            saved, current = yaml.safe_load(client["config"]), yaml.safe_load(self.config_text)
            saved["output"]["run_dir"] = current["output"]["run_dir"]  # where the run is, not what it computes
            changes = config_changes(saved, current)
            if changes and not allow_config_change:
                raise ConfigError(
                    f"--resume: {tag} was written with another config ({'; '.join(changes)}); "
                    f"resume with that config, or pass --allow-config-change"
                )
            if changes and self.world.is_main:
                note(f"resuming {tag} with a changed config: {'; '.join(changes)}")
        self._restore(client)

    def _stop_if_preempted(self, log: RunLog | None = None) -> None:
        """Before the step loop: exit for a requeue if any rank was signalled (one small all-reduce, so that
        every rank leaves together); the requeued run resumes from the latest checkpoint, if there is one."""
        flag = torch.tensor([float(PREEMPTION.requested)], device=self.world.device)
        if self.world.sum(flag).item() == 0:
            return
        step = self.state["step"]
        if self.world.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / PREEMPTED_MARKER).write_text(f"{step}\n")
        message = f"preempted before step {step + 1}: exiting with code {PREEMPTED_EXIT} to be requeued"
        if log is not None:
            log.message(message)
            log.close()
        raise Preempted(message)

    def _count_nonfinite(self, step: int, stats: dict, log: RunLog) -> None:
        """Count a non-finite step (its update was not applied); end the run after too many in a row."""
        counts = self.state.setdefault("nonfinite", {"steps": 0, "consecutive": 0, "first": None})
        if not stats["train/nonfinite"]:
            counts["consecutive"] = 0
            return
        counts["steps"] += 1
        counts["consecutive"] += 1
        counts["first"] = counts["first"] or step
        train = self.config.train
        log.message(
            f"step {step}: a loss or gradient is not finite; its update was not applied "
            f"({counts['consecutive']} in a row, train.nonfinite: {train.nonfinite})"
        )
        if train.nonfinite == "stop" and counts["consecutive"] >= train.nonfinite_limit:
            raise Diverged(
                f"diverged: {counts['consecutive']} steps in a row with a non-finite loss or gradient "
                f"(steps {step - counts['consecutive'] + 1}-{step}; train.nonfinite_limit "
                f"{train.nonfinite_limit}); lower train.lr, or train.nonfinite: skip to go on"
            )

    def _evaluate_dev(self, step: int, log: RunLog, held: dict | None = None) -> bool:
        """Dev evaluation on the targets; keeps the best checkpoint; True when patience is exhausted.
        `held`: this step's held-out memory losses when they were measured (and logged) already."""
        scores = {lang: m["score"] for lang, m in self.evaluate_tagging(self.corpora.dev).items()}
        average = average_over_targets(scores, self.config.task.source)
        self.state["history"].append({"step": step, "scores": scores, "average": average})
        log.scalars(step, {**{f"dev/{lang}": s for lang, s in scores.items()}, "dev/average": average})
        if self.held_out:
            if held is None:
                held = self.evaluate_memory_losses()
                log.scalars(step, {f"memory_loss/{name}": v for name, v in held.items()})
            self.state["history"][-1]["memory_loss"] = held
        if self.config.eval.memory:
            memory = self.evaluate_memory()
            self.state["history"][-1]["memory"] = memory
            log.scalars(step, flatten("memory", memory))
        if math.isfinite(average) and (self.state["best"] is None or average > self.state["best"]):
            # a model whose dev scores are not finite is never saved as the best one
            self.state.update(best=average, best_step=step, bad_evals=0)
            self.checkpoints.save("best", self._client_state(), self.config_text)
            return False
        self.state["bad_evals"] += 1
        return 0 < self.config.eval.patience <= self.state["bad_evals"]

    def _client_state(self) -> dict:
        return {
            "state": self.state,
            "streams": {n: s.state_dict() for n, s in self.streams.items()},
            "memory": self.gradients.state(),
            "tensors": self.method.tensors(),
        }

    def _restore(self, client: dict) -> None:
        self.state = client["state"]
        self.method.load_state_dict(self.state.get("gem", {}))
        self.method.load_tensors(client.get("tensors", {}))
        for name, stream in self.streams.items():
            stream.load_state_dict(client["streams"][name])
        if client.get("memory") is not None:
            self.gradients.restore(client["memory"])


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
