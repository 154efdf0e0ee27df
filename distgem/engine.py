"""The training engine: one DeepSpeed engine, one step for every method, evaluation, early stopping.

The step reads top to bottom: memory gradients (k constraints), the task gradient, then
naive: nothing / mtf: add the weighted memory gradients / gem: project on the Gram's dual,
then the optimizer step. Every gradient lives on this rank's ZeRO partition only.
"""
from __future__ import annotations

import copy
import json
import math
import random
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from distgem import backbone as backbones
from distgem import distributed as dist
from distgem import evaluation
from distgem.checkpoint import Checkpointer
from distgem.config import RunConfig
from distgem.data.corpora import load_corpora, needed
from distgem.errors import ConfigError
from distgem.data.loader import BatchStream, rank_micro_batches
from distgem.gem import memory
from distgem.gem.step import Projector
from distgem.log import RunLog
from distgem.metrics import average_over_targets
from distgem.model import MultiTaskModel, freeze_bottom, parameter_group
from distgem.partition import GradientPartition
from distgem.results import build_results, memory_mb, peak_rss_mb, write_json
from distgem.tasks.sources import memory_sources, spread, tagging_source
from distgem.tasks import tagging
from distgem.timer import PhaseTimer
from distgem.tasks.tagging import LABELS


PREEMPTED_EXIT = 75  # EX_TEMPFAIL: slurm/*.sh requeue the job on it
PREEMPTED_MARKER = "PREEMPTED"  # launchers may fold the exit code; the marker survives them


class Preempted(Exception):
    """Raised after the preemption checkpoint; the CLI exits with PREEMPTED_EXIT."""

    exit_code = PREEMPTED_EXIT


class _PreemptionFlag:
    """Set by SIGUSR1/SIGTERM (Slurm sends one before the time limit); read at the next step boundary."""

    def __init__(self):
        self.requested = False

    def install(self) -> None:
        import signal

        for sig in (signal.SIGUSR1, signal.SIGTERM):
            signal.signal(sig, self._handle)

    def _handle(self, signum, frame) -> None:
        self.requested = True


PREEMPTION = _PreemptionFlag()


class Trainer:
    def __init__(self, config: RunConfig, world: dist.World):
        self.config, self.world = config, world
        self.run_dir = Path(config.output.run_dir)
        train, method = config.train, config.method
        _seed_everything(train.seed)
        self.tokenizer, backbone = backbones.load(config.model.backbone, config.model.dropout)
        has_mlm = any(a.endswith("ForMaskedLM") for a in (backbone.config.architectures or []))
        if "mlm" in method.memory and not has_mlm:
            raise ConfigError(f"method.memory: {config.model.backbone} has no masked-LM head; use [xsr]")
        layers = getattr(backbone.config, "num_hidden_layers", None)
        if layers is not None and not -(layers + 1) <= method.xsr_layer <= layers:
            raise ConfigError(f"method.xsr_layer: {method.xsr_layer} is not a layer of {config.model.backbone} "
                              f"({layers} layers: 0 = embeddings .. {layers}, or -1 for the last)")
        languages = [config.task.source, *config.task.targets]
        mono, pairs = needed(config.task, has_mlm)  # perplexity for every language, XSR for every target
        with dist.rank0_first():  # one rank tokenises into the shared cache, the others open what it wrote
            self.corpora = load_corpora(config.data, config.task, config.model, self.tokenizer, mono, pairs,
                                        progress=world.rank == 0)
        # ZeRO-3 gathers each layer's parameters collectively in every forward: where a count of forwards can differ
        # between ranks (evaluation shards, embedding chunks), every rank runs the most any rank needs
        self.agree = ((lambda n: dist.all_reduce_max_int(n, world.device))
                      if train.zero_stage == 3 and world.size > 1 else None)
        self.model = MultiTaskModel(backbone, len(LABELS[config.task.name]), method.xsr_layer,
                                    gather=dist.AutogradGather(world.rank, world.size),
                                    embed_chunk_tokens=config.model.embed_chunk_tokens,
                                    agree_chunks=self.agree)
        if method.name == "frozen":
            freeze_bottom(self.model, method.frozen_layers)
        if method.name == "gem" and method.gem.target == "update" and train.zero_stage == 0 \
                and train.precision != "fp32":
            raise ConfigError(f"method.gem.target: update edits the optimizer's master weights, which ZeRO 0 "
                              f"keeps out of reach in {train.precision}; use train.zero_stage >= 1 or fp32")
        # gem.anchor: pretrained: a frozen copy of the pre-trained model gives each memory batch's reference loss
        self.reference = None
        if method.name == "gem" and method.gem.anchor == "pretrained":
            self.reference = copy.deepcopy(self.model).requires_grad_(False).to(world.device)
        self.names = {id(p): n for n, p in self.model.named_parameters()}
        self.engine = dist.build_engine(self.model, *self._optimizer(), self._deepspeed_config())
        self.partition = GradientPartition(self.engine, self.names)
        self.main = tagging_source(config.task.name, self.corpora.train, self.tokenizer.pad_token_id)
        mlm_train = {lang: self.corpora.mono_train[lang] for lang in (languages if method.mlm_languages == "all" else ["en"])
                     if lang in self.corpora.mono_train}
        self.corpora.mono_train = mlm_train
        self.memories = memory_sources(method, self.corpora, self.tokenizer, train.seed) if method.memory else []
        # the same constraints over the held-out memory data (fixed batches: memory_loss/<name> at dev evaluations)
        held_out = SimpleNamespace(mono_train={lang: self.corpora.mono_eval[lang] for lang in mlm_train
                                               if lang in self.corpora.mono_eval}, pairs_train=self.corpora.pairs_eval)
        self.held_out = memory_sources(method, held_out, self.tokenizer, train.seed) \
            if method.memory and config.eval.memory_loss_examples else []
        self.streams = {s.name: BatchStream(s.size, train.batch_size if s is self.main else method.memory_batch_size,
                                            train.seed, s.name, s.lengths() if train.group_by_length else None)
                        for s in [self.main, *self.memories]}
        self.buffer: memory.MemoryBuffer | None = None
        self.task_buffer: memory.MemoryBuffer | None = None
        self.layout: memory.Layout | None = None
        self.timer = PhaseTimer(world.device)  # off unless DISTGEM_PROFILE=1 (bench/)
        self.projector = Projector(method.gem, [s.name for s in self.memories], self.partition, self.timer)
        self.state = {"step": 0, "best": None, "best_step": None, "bad_evals": 0, "history": [], "backbone": None,
                      "gem": {"violated_steps": 0, "steps": 0, "fallbacks": 0}}
        self._trace_started = False
        self._restored_memory: torch.Tensor | None = None  # from a checkpoint, until the buffer exists
        self.stop_requested = False
        self.checkpoints = Checkpointer(self.run_dir / "checkpoints", self.engine, world.rank)

    # --- set-up -----------------------------------------------------------------------------
    def _optimizer(self):
        train = self.config.train
        decay, no_decay = [], []
        for name, param in self.model.named_parameters():
            if param.requires_grad:
                (no_decay if param.ndim < 2 else decay).append(param)
        optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": train.weight_decay},
                                       {"params": no_decay, "weight_decay": 0.0}], lr=train.lr)
        warmup = train.warmup_steps
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup) if warmup else 1.0)
        return optimizer, schedule

    def _deepspeed_config(self) -> dict:
        train = self.config.train
        per_rank = train.batch_size // self.world.size
        if train.batch_size % (self.world.size * train.gradient_accumulation):
            raise ConfigError(f"train.batch_size {train.batch_size} must divide into {self.world.size} ranks x "
                                   f"train.gradient_accumulation {train.gradient_accumulation}")
        if self.config.method.memory_batch_size % (self.world.size * train.gradient_accumulation):
            raise ConfigError(f"method.memory_batch_size {self.config.method.memory_batch_size} must divide into "
                                   f"{self.world.size} ranks x {train.gradient_accumulation} micro-batches")
        path = train.deepspeed_config.format(stage=train.zero_stage)
        path = path if Path(path).is_absolute() or Path(path).exists() else str(dist.ROOT / path)
        return dist.deepspeed_config(path, micro_batch=per_rank // train.gradient_accumulation,
                                     world_size=self.world.size, zero_stage=train.zero_stage,
                                     precision=train.precision, gradient_clipping=train.gradient_clipping)

    # --- the step ---------------------------------------------------------------------------
    def step(self, step: int) -> dict[str, float]:
        """One optimizer step of the configured method; returns what the log shows."""
        method, k = self.config.method, len(self.memories)
        stats: dict[str, float] = {}
        fresh = self.buffer is None and self._restored_memory is None
        refresh = k and (fresh or step % method.gem.refresh_every == 0 or method.name != "gem")
        losses = torch.zeros(k + 2, dtype=torch.float64)  # k+1 losses, then the preemption flag
        excess = torch.zeros(k, dtype=torch.float64) if self.reference is not None else None
        if refresh:
            for i, source in enumerate(self.memories):
                losses[i] = self._backward(source, step, row=i, excess=excess)
        losses[k] = self._backward(self.main, step, row=None)
        pieces = self.partition.pieces()  # stage 0: untouched parameters get zero gradients, in every method
        grads = memory.runs(pieces, self.layout) if self.buffer is not None or self.task_buffer is not None else []
        if self.task_buffer is not None:  # micro-batches were accumulated outside the optimizer's partition
            self.task_buffer.restore(0, grads)
        check = None
        if method.name == "mtf":
            weights = torch.tensor([[method.mtf_weights[s.name.split(".")[0]] for s in self.memories]])
            with self.timer.phase("update"):
                memory.combine(grads, self.buffer.data, weights)
        project_update = method.name == "gem" and method.gem.target == "update"
        if method.name == "gem" and not project_update:
            check = self.projector.gradient(grads, self.buffer.data, len(self.layout.group_names),
                                            self.state["gem"], stats)
        predict = self.config.eval.predicted_change and self.buffer is not None
        before = self._values() if predict or project_update else None
        with self.timer.phase("optimizer"):
            self.engine.step()
        if project_update:
            if excess is not None:  # L_i(theta) - L_i(theta_0) on this step's memory batches, global mean
                excess = dist.all_reduce_sum(excess.to(self.world.device)).cpu() / self.world.size
                stats.update({f"gem/excess/{s.name}": float(e) for s, e in zip(self.memories, excess)})
            check = self.projector.update(before, self._values(), self.layout, self.buffer.data, self.state["gem"],
                                          stats, excess)
        # one small all-reduce per step: the losses for the log, whether any rank was asked to stop, and
        # (GEM, ZeRO 1-3) this rank's part of the post-projection check and of the predicted changes, so
        # that neither costs a collective of its own
        losses[k + 1] = float(PREEMPTION.requested)
        partial = check is not None and check["partial"] is not None
        parts = [losses.to(self.world.device)]  # on the device: NCCL reduces no host tensor
        if partial:
            parts.append(check["partial"].flatten())
        if predict:
            # first order: L_i(theta + delta) - L_i(theta) ~ <g_i, delta> for the step actually taken
            # (after the optimizer, weight decay included); stage 0 holds the whole vector on every rank
            delta = self._values().sub_(before)
            parts.append((self.buffer.data @ delta).double() / (1 if self.partition.stage else self.world.size))
        with self.timer.phase("reduce_losses"):
            reduced = dist.all_reduce_sum(torch.cat(parts) if len(parts) > 1 else parts[0]).cpu()
        values = reduced.tolist()
        self.stop_requested = values[k + 1] > 0
        stats.update({f"loss/{s.name}": v / self.world.size
                      for s, v in zip([*self.memories, self.main], values) if refresh or s is self.main})
        if predict:
            stats.update({f"gem/predicted_change/{s.name}": v for s, v in zip(self.memories, values[-k:])})
        if check is not None:
            after = reduced[k + 2:k + 2 + check["scale"].numel()].view_as(check["scale"]) if partial \
                else check["after"].cpu()
            # after the update, on the gradient actually written: >= -tol means no constraint is violated
            stats["gem/min_constraint_after"] = float(((after - check["offset"]) / check["scale"]).min())
        stats["lr"] = self.engine.get_lr()[0]
        stats.update(self.timer.take())
        return stats

    def _values(self) -> torch.Tensor:
        """A float32 copy of this rank's trainable values in the memory buffer's layout, padding zeroed."""
        values = torch.cat([t.float() for t in self.partition.values()])
        if values.numel() != self.layout.numel:
            raise ConfigError(f"eval.predicted_change / method.gem.target: update: the optimizer's partition holds "
                              f"{values.numel()} values but the gradient's {self.layout.numel} (this DeepSpeed "
                              f"version lays them out differently)")
        padding = self.partition.padding()  # on the values' device, built once
        if padding.numel():
            values[padding] = 0.0
        return values

    def _backward(self, source, step: int, row: int | None, excess: torch.Tensor | None = None) -> float:
        """Forward and backward of one task over this rank's micro-batches; the loss is scaled so that
        summing over micro-batches and averaging over ranks gives the global batch's mean."""
        batch = self.streams[source.name].next()
        whole = source.batch(batch, step)  # the global batch's units (tokens, masked tokens, pairs) set the scale
        scale = self.world.size / max(source.units(whole), 1)
        # XSR ranks each pair against the whole global batch: accumulation would shrink its negatives
        accumulation = 1 if source.kind == "xsr" else self.config.train.gradient_accumulation
        micro_batches = rank_micro_batches(batch, self.world.rank, self.world.size, accumulation)
        total = 0.0
        for j, indices in enumerate(micro_batches):
            with self.timer.phase("zero"):
                self.partition.zero()
            with self.timer.phase("forward_backward"):  # DeepSpeed reduces the gradient inside backward
                tensors = whole if indices == batch else source.batch(indices, step)  # one rank: collated once
                inputs = {key: value.to(self.world.device) for key, value in tensors.items()}
                loss = self.engine(task=source.kind, scale=scale, **inputs)["loss"]
                self.engine.backward(loss)
                total += loss.detach().item()
            if excess is not None:  # the pre-trained model's loss on the same batch
                with torch.no_grad(), self.timer.phase("reference"):
                    self.reference.train(self.model.training)
                    reference = self.reference(task=source.kind, scale=scale, **inputs)["loss"]
                excess[row] += loss.detach().item() - reference.item()
            pieces = self.partition.pieces()
            self._ensure_buffers(pieces)
            if row is not None or self.task_buffer is not None:
                with self.timer.phase("capture"):
                    grads = memory.runs(pieces, self.layout)
                    if row is not None:
                        self.buffer.capture(row, grads, accumulate=j > 0)
                    else:
                        self.task_buffer.capture(0, grads, accumulate=j > 0)
        return total

    def _ensure_buffers(self, pieces) -> None:
        if self.layout is not None:
            return
        per_layer = self.config.method.name == "gem" and self.config.method.gem.per_layer
        names = [parameter_group(n) if n else "padding" for n in self.partition.piece_names()] if per_layer else None
        self.layout = memory.Layout.of(pieces, names)
        if self.memories:
            self.buffer = memory.MemoryBuffer(len(self.memories), self.layout, self.world.device)
            if self._restored_memory is not None:
                self.buffer.data.copy_(self._restored_memory)
                self._restored_memory = None
        if self.config.train.gradient_accumulation > 1:
            self.task_buffer = memory.MemoryBuffer(1, self.layout, self.world.device)

    # --- evaluation ---------------------------------------------------------------------------
    def _forward(self, task: str, batch: dict) -> dict:
        with torch.no_grad():
            return self.engine(task=task, **{k: v.to(self.world.device) for k, v in batch.items()})

    def _eval_args(self):
        return self._forward, dist.all_gather_objects, self.agree

    def evaluate_tagging(self, corpora: dict, save_as: str | None = None) -> dict[str, dict[str, float]]:
        """Scores per language; with `save_as`, also the word-level tags under predictions/<save_as>/."""
        task = self.config.task.name
        self.engine.eval()
        try:
            scores = {}
            for lang, corpus in corpora.items():
                predicted = evaluation.tagging_predictions(*self._eval_args(), corpus, self.tokenizer.pad_token_id,
                                                           self.config.eval.batch_size, self.world.rank, self.world.size)
                scores[lang] = tagging.score(task, corpus.tags, predicted)
                if save_as and self.world.rank == 0:
                    directory = self.run_dir / "predictions" / save_as
                    directory.mkdir(parents=True, exist_ok=True)
                    names = tagging.LABELS[task]
                    (directory / f"{lang}.json").write_text(json.dumps([[names[i] for i in s] for s in predicted]))
            return scores
        finally:
            self.engine.train()

    def evaluate_memory(self) -> dict:
        """MLM perplexity per language and XSR P@1/5/10 per pair (Table 1)."""
        self.engine.eval()
        try:
            ppl = {lang: evaluation.mlm_perplexity(*self._eval_args(), examples, self.tokenizer, self.config.eval.batch_size,
                                                   self.world.rank, self.world.size)
                   for lang, examples in self.corpora.mono_eval.items()}
            xsr = {lang: evaluation.xsr_precision(*self._eval_args(), pairs, self.tokenizer, self.config.eval.batch_size,
                                                  self.world.rank, self.world.size)
                   for lang, pairs in self.corpora.pairs_eval.items()}
        finally:
            self.engine.train()
        return {"mlm_perplexity": ppl, "xsr": xsr}

    def evaluate_memory_losses(self) -> dict[str, float]:
        """Each constraint's loss on `eval.memory_loss_examples` held-out examples spread over its data (the same
        examples and MLM masks every time, no dropout), split over the ranks as a training batch is."""
        size, rank = self.world.size, self.world.rank
        losses = torch.zeros(len(self.held_out), dtype=torch.float64)
        self.engine.eval()
        try:
            for i, source in enumerate(self.held_out):
                indices = spread(source.size, min(self.config.eval.memory_loss_examples, source.size) // size * size)
                if not indices:
                    continue
                scale = size / max(source.units(source.batch(indices, 0)), 1)
                mine = rank_micro_batches(indices, rank, size, 1)[0]
                with torch.no_grad():
                    inputs = {k: v.to(self.world.device) for k, v in source.batch(mine, 0).items()}
                    losses[i] = float(self.engine(task=source.kind, scale=scale, **inputs)["loss"])
        finally:
            self.engine.train()
        reduced = dist.all_reduce_sum(losses.to(self.world.device)).cpu() / size
        return {s.name: float(v) for s, v in zip(self.held_out, reduced)}

    # --- the run ------------------------------------------------------------------------------
    def train(self, resume: bool = False) -> dict:
        config = self.config
        PREEMPTION.install()
        if self.world.rank == 0:
            (self.run_dir / PREEMPTED_MARKER).unlink(missing_ok=True)
        if resume and self.checkpoints.latest() is not None:
            self._restore(self.checkpoints.load(self.checkpoints.latest()))
        log = RunLog(self.run_dir, self.world.rank == 0, config.output.tensorboard, config.train.steps, self.state["step"])
        started = time.perf_counter()
        if config.eval.before_training and self.state["backbone"] is None:
            self.state["backbone"] = self.evaluate_memory()
            log.scalars(0, _flatten("memory", self.state["backbone"]))
            if self.held_out:  # where the memory_loss curves start
                self.state["backbone"]["memory_loss"] = self.evaluate_memory_losses()
                log.scalars(0, _flatten("memory_loss", self.state["backbone"]["memory_loss"]))
        self.engine.train()  # from_pretrained returns eval mode; dropout must be on whatever ran before
        while self.state["step"] < config.train.steps:
            step = self.state["step"]
            tick = time.perf_counter()
            dist.comm_phase(f"step {step + 1}")
            stats = self.step(step)
            dist.comm_phase("between steps")
            stats["samples_per_s"] = config.train.batch_size / (time.perf_counter() - tick)
            stats.update(memory_mb(self.world.device))  # this rank's; results.json has every rank's peak
            self.state["step"] = step + 1
            every = config.eval.memory_loss_every
            held = self.evaluate_memory_losses() if self.held_out and every and (step + 1) % every == 0 else None
            if held is not None:  # observed after the step's timing: it changes nothing in training
                stats.update({f"memory_loss/{name}": v for name, v in held.items()})
            log.scalars(step + 1, stats)
            self._trace(step + 1, stats)
            log.progress(loss=stats[f"loss/{self.main.name}"])
            if (step + 1) % config.eval.every == 0 or step + 1 == config.train.steps:
                if self._evaluate_dev(step + 1, log, held):
                    log.message(f"early stopping at step {step + 1}: no improvement in {config.eval.patience} evaluations")
                    break
            if config.output.checkpoint_every and (step + 1) % config.output.checkpoint_every == 0 \
                    or self.stop_requested:
                self.checkpoints.save(f"step{step + 1}", self._client_state())
            if self.stop_requested:
                if self.world.rank == 0:
                    (self.run_dir / PREEMPTED_MARKER).write_text(f"{step + 1}\n")
                log.message(f"preempted: checkpoint at step {step + 1}; exiting with code {PREEMPTED_EXIT} to be requeued")
                log.close()
                raise Preempted(step + 1)
        train_seconds = time.perf_counter() - started
        if config.output.save_final:
            dist.save_weights(self.engine, self.model, self.run_dir / "final.safetensors", self.world.rank)
        if self.state["best_step"] is not None:
            self.checkpoints.load("best", module_only=True)
        test = self.evaluate_tagging(self.corpora.test, save_as="test" if config.output.save_predictions else None)
        after = self.evaluate_memory() if config.eval.after_training else None
        rss = dist.all_gather_objects(round(peak_rss_mb(), 1))  # per rank: the data stays memory-mapped
        results = build_results(config, self.world.size, self.state, test, after, train_seconds, rss)
        if self.world.rank == 0:
            write_json(self.run_dir / "results.json", results)
            log.scalars(self.state["step"], _flatten("test", {lang: m["score"] for lang, m in test.items()}))
            if after:
                log.scalars(self.state["step"], _flatten("memory", after))
            log.hparams(_hparams(config), {"hparam/test_average": results["test"]["average"],
                                          "hparam/dev_best": self.state["best"] or 0.0})
        log.close()
        dist.barrier()
        return results

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
            log.scalars(step, _flatten("memory", memory))
        if self.state["best"] is None or average > self.state["best"]:
            self.state.update(best=average, best_step=step, bad_evals=0)
            self.checkpoints.save("best", self._client_state())
            return False
        self.state["bad_evals"] += 1
        return 0 < self.config.eval.patience <= self.state["bad_evals"]

    def _trace(self, step: int, stats: dict) -> None:
        """Append the step's statistics to steps.jsonl (rank 0; a resumed run rewrites from its checkpoint)."""
        if self.world.rank != 0:
            return
        path = self.run_dir / "steps.jsonl"
        if self._trace_started is False:
            kept = [ln for ln in path.read_text().splitlines() if json.loads(ln)["step"] < step] if path.exists() else []
            path.write_text("".join(ln + "\n" for ln in kept))
            self._trace_started = True
        with path.open("a") as handle:
            handle.write(json.dumps({"step": step, **stats}) + "\n")

    def _client_state(self) -> dict:
        return {"state": self.state, "streams": {n: s.state_dict() for n, s in self.streams.items()},
                "memory": self.buffer.data if self.buffer is not None else None}

    def _restore(self, client: dict) -> None:
        self.state = client["state"]
        for name, stream in self.streams.items():
            stream.load_state_dict(client["streams"][name])
        if client.get("memory") is not None:
            # ZeRO 1-3 lay out this rank's gradient partition only at the first backward: the buffer is
            # filled when it is created (_ensure_buffers)
            self._restored_memory = client["memory"]


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _flatten(prefix: str, tree, out=None) -> dict[str, float]:
    out = {} if out is None else out
    if isinstance(tree, dict):
        for key, value in tree.items():
            _flatten(f"{prefix}/{key}", value, out)
    elif isinstance(tree, (int, float)) and math.isfinite(tree):
        out[prefix] = float(tree)
    return out


def _hparams(config: RunConfig) -> dict:
    m = config.method
    return {"backbone": config.model.backbone, "task": config.task.name, "method": m.name,
            "memory": "+".join(m.memory) or "none", "mlm_languages": m.mlm_languages, "seed": config.train.seed,
            "lr": config.train.lr, "zero_stage": config.train.zero_stage, "per_language": m.gem.per_language,
            "per_layer": m.gem.per_layer, "refresh_every": m.gem.refresh_every, "memory_strength": m.gem.memory_strength}


