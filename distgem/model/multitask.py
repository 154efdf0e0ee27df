"""The multi-task model: a Hugging Face encoder with a tagging head, its MLM head, and sentence embeddings.

A plain nn.Module that imports nothing distributed. `forward(task, **batch)` runs one task and
returns a dict with the task's loss (a *sum* over the batch's units, scaled by `batch["scale"]`,
so that any split of a global batch over ranks and micro-batches adds up to the global mean).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

IGNORE = -100


def identity_gather(tensor: torch.Tensor) -> tuple[torch.Tensor, int]:
    return tensor, 0


class MultiTaskModel(nn.Module):
    """Encoder + token-classification head + (if the backbone has one) masked-LM head."""

    def __init__(
        self,
        backbone: nn.Module,
        num_labels: int,
        xsr_layer: int = -1,
        xsr_scale: float = 20.0,
        gather: Callable[[torch.Tensor], tuple[torch.Tensor, int]] = identity_gather,
        embed_chunk_tokens: int = 0,
        agree_chunks: Callable[[int], int] | None = None,
    ):
        super().__init__()
        self.config = backbone.config  # the backbone itself is not registered twice: encoder + head are its parts
        self.encoder = backbone.base_model
        self.mlm_head = _mlm_head(backbone)
        hidden = backbone.config.hidden_size
        self.dropout = nn.Dropout(getattr(backbone.config, "hidden_dropout_prob", 0.1))
        self.tagger = nn.Linear(hidden, num_labels)
        nn.init.normal_(self.tagger.weight, std=getattr(backbone.config, "initializer_range", 0.02))
        nn.init.zeros_(self.tagger.bias)
        self.xsr_layer = xsr_layer
        self.xsr_scale = xsr_scale
        # all-gather with autograd across data-parallel processes: (every process's rows, where this one's start)
        self.gather = gather
        self.embed_chunk_tokens = embed_chunk_tokens
        # ZeRO-3 gathers each layer's parameters collectively per forward: every rank must run as many chunks
        # (the most any rank needs; `agree_chunks` is that all-reduce, None where forwards have no collectives)
        self.agree_chunks = agree_chunks

    def forward(self, task: str, **batch) -> dict[str, torch.Tensor]:
        if task == "tag":
            return self.tag(**batch)
        if task == "mlm":
            return self.mlm(**batch)
        if task == "xsr":
            return self.xsr(**batch)
        if task == "embed":
            return {"embedding": self.embed(batch["input_ids"], batch["attention_mask"], batch["pool_mask"])}
        raise ValueError(f"unknown task {task!r}")

    def tag(self, input_ids, attention_mask, labels=None, scale=None) -> dict[str, torch.Tensor]:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        logits = self.tagger(self.dropout(hidden))
        out = {"logits": logits}
        if labels is not None:
            nll = F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE, reduction="sum")
            out["loss"] = nll * scale if scale is not None else nll / (labels != IGNORE).sum().clamp(min=1)
        return out

    def mlm(self, input_ids, attention_mask, labels, scale=None) -> dict[str, torch.Tensor]:
        if self.mlm_head is None:
            raise ValueError("this backbone has no masked-LM head: use the XSR memory task only")
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        masked = labels != IGNORE
        # the vocabulary projection only at masked positions: 15% of the (B, T, V) logits
        logits = self.mlm_head(hidden[masked])
        nll = F.cross_entropy(logits.float(), labels[masked], reduction="sum")
        loss = nll * scale if scale is not None else nll / masked.sum().clamp(min=1)
        return {"loss": loss, "nll": nll.detach(), "tokens": masked.sum()}

    def embed(self, input_ids, attention_mask, pool_mask) -> torch.Tensor:
        """Sentence embedding: masked mean of hidden layer `xsr_layer` over non-special tokens. A batch padded
        past `embed_chunk_tokens` runs in length-sorted chunks, each cut to its longest sentence (rows are
        right-padded): one long sentence no longer pads every other row of the batch to its length."""
        if not self.embed_chunk_tokens:
            return self._embed(input_ids, attention_mask, pool_mask)
        lengths = attention_mask.sum(1).tolist()
        chunks = length_chunks(lengths, self.embed_chunk_tokens)
        count = self.agree_chunks(len(chunks)) if self.agree_chunks is not None else len(chunks)
        chunks = split_chunks(chunks, lengths, count)
        if len(chunks) == 1:
            return self._embed(input_ids, attention_mask, pool_mask)
        parts, order = [], []
        for rows in chunks:
            index = torch.tensor(rows, device=input_ids.device)
            width = max(lengths[r] for r in rows)
            parts.append(self._embed(input_ids[index, :width], attention_mask[index, :width], pool_mask[index, :width]))
            order += rows
        for _ in range(count - len(chunks)):
            # an evaluation shard one row short of the agreed count: a forward whose output is dropped keeps the
            # ranks' collectives in step (never in training, where every rank holds as many rows)
            if torch.is_grad_enabled():
                raise RuntimeError(f"{len(lengths)} rows cannot run as the {count} chunks the other ranks run")
            self._embed(input_ids[:1, : lengths[0]], attention_mask[:1, : lengths[0]], pool_mask[:1, : lengths[0]])
        return torch.cat(parts)[torch.tensor(order, device=input_ids.device).argsort()]

    def _embed(self, input_ids, attention_mask, pool_mask) -> torch.Tensor:
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
        hidden = out.hidden_states[self.xsr_layer]
        weights = pool_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1)

    def xsr(self, input_ids, attention_mask, pool_mask, scale=None) -> dict[str, torch.Tensor]:
        """In-batch translation ranking, both directions; rows [0, n) are sources, [n, 2n) their targets."""
        embedding = F.normalize(self.embed(input_ids, attention_mask, pool_mask).float(), dim=-1)
        n = embedding.shape[0] // 2
        source, target = embedding[:n], embedding[n:]
        (all_source, offset), (all_target, _) = self.gather(source), self.gather(target)
        positives = torch.arange(n, device=embedding.device) + offset  # this process's pairs among everyone's
        nll = (
            F.cross_entropy(self.xsr_scale * source @ all_target.T, positives, reduction="sum")
            + F.cross_entropy(self.xsr_scale * target @ all_source.T, positives, reduction="sum")
        ) / 2
        loss = nll * scale if scale is not None else nll / max(n, 1)
        return {"loss": loss}


def length_chunks(lengths: list[int], budget: int) -> list[list[int]]:
    """Row indices in chunks of at most `budget` padded tokens (rows x longest row), shortest rows first; a
    row longer than the budget is a chunk of its own. One chunk in the original order when the whole batch
    fits, or with budget 0 (one pass, as without chunking)."""
    if not budget or len(lengths) * max(lengths, default=0) <= budget:
        return [list(range(len(lengths)))]
    chunks, current = [], []
    for row in sorted(range(len(lengths)), key=lambda r: lengths[r]):
        if current and (len(current) + 1) * lengths[row] > budget:
            chunks.append(current)
            current = []
        current.append(row)
    return chunks + [current]


def split_chunks(chunks: list[list[int]], lengths: list[int], count: int) -> list[list[int]]:
    """`chunks` split until there are `count` (or every chunk is one row): the chunk with the most padded
    tokens is cut in two between its shorter and its longer rows."""
    chunks = [list(rows) for rows in chunks]
    while len(chunks) < count:
        splittable = [c for c in chunks if len(c) > 1]
        if not splittable:
            break
        rows = max(splittable, key=lambda c: len(c) * max(lengths[r] for r in c))
        chunks.remove(rows)
        rows = sorted(rows, key=lambda r: lengths[r])
        chunks += [rows[: len(rows) // 2], rows[len(rows) // 2 :]]
    return chunks


def _mlm_head(backbone: nn.Module) -> nn.Module | None:
    """The module that maps hidden states to vocabulary logits (BERT: `cls`, XLM-R: `lm_head`)."""
    for name in ("cls", "lm_head", "lm_loss", "predictions"):
        head = getattr(backbone, name, None)
        if isinstance(head, nn.Module):
            return head
    return None


def layer_index(name: str) -> int | None:
    """Encoder layer number of a parameter name (`...encoder.layer.3.attention...` -> 3), else None."""
    parts = name.split(".")
    for i, part in enumerate(parts[:-1]):
        if part in ("layer", "layers") and parts[i + 1].isdigit():
            return int(parts[i + 1])
    return None


def freeze_bottom(model: MultiTaskModel, layers: int) -> int:
    """Freeze the embeddings and encoder layers [0, layers); returns the number of frozen parameters."""
    frozen = 0
    for name, param in model.encoder.named_parameters():
        index = layer_index(name)
        if "embeddings" in name or (index is not None and index < layers):
            param.requires_grad_(False)
            frozen += param.numel()
    return frozen


def parameter_group(name: str) -> str:
    """Per-layer GEM group of a parameter: embeddings, layer.N, or the rest (pooler and heads)."""
    if "embeddings" in name:
        return "embeddings"
    index = layer_index(name)
    return f"layer.{index}" if index is not None else "heads"
