"""What the performance benchmarks share: the device's copy bandwidth, GEM's floor, model shapes, timing.

The floor (docs/PERFORMANCE.md): besides its k+1 forward-backward passes GEM moves, per rank and step,
2k p values to capture the memories, (k+1) p for the Gram and (k+2) p for the update on a violated
step, p = this rank's gradient partition: (4k+3) x 4p bytes at the bandwidth of a large copy.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # runnable from a checkout without install

COPY_BYTES = {"cpu": 256 << 20, "cuda": 1 << 30}
"""Size of the copy that measures bandwidth: far beyond the last-level cache of either device."""
SHAPES = {
    # the embedded default (distgem/world/pretrain.py, preset tiny); the others get random weights
    "tiny": dict(
        vocab_size=5000,
        hidden_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=512,
        max_position_embeddings=256,
    ),
    "small": dict(vocab_size=8000, hidden_size=160, num_hidden_layers=4, num_attention_heads=4, intermediate_size=640),
    "mbert": dict(
        vocab_size=119547,
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
        max_position_embeddings=512,
        type_vocab_size=2,
    ),
}
"""`mbert` is bert-base-multilingual-cased's config.json; `small` the width of the embedded small preset."""


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_ms(fn, device: torch.device) -> float:
    """Wall time of one call in ms, the device synchronised on both sides."""
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return 1000 * (time.perf_counter() - start)


class Bandwidth:
    """Copy bandwidth of the device, (read + write bytes) / s, measured on demand between other timings."""

    def __init__(self, device: torch.device, nbytes: int | None = None):
        numel = (nbytes or COPY_BYTES[device.type]) // 4
        self.device = device
        self.src = torch.ones(numel, device=device)
        self.dst = torch.empty_like(self.src)
        self.samples: list[float] = []

    def measure(self) -> float:
        """One copy; returns its bandwidth in GB/s and keeps it for `median`."""
        ms = timed_ms(lambda: self.dst.copy_(self.src), self.device)
        self.samples.append(2 * 4 * self.src.numel() / ms / 1e6)
        return self.samples[-1]

    @property
    def median(self) -> float:
        return statistics.median(self.samples)


def floor_values(k: int, p: int, refreshed: bool = True, violated: bool = True) -> int:
    """Values GEM's overhead must move on one step: capture 2kp (refresh steps), Gram (k+1)p, update (k+2)p."""
    return (2 * k * p if refreshed else 0) + (k + 1) * p + ((k + 2) * p if violated else 0)


def floor_ms(values: int, bandwidth_gbs: float, itemsize: int = 4) -> float:
    return values * itemsize / bandwidth_gbs / 1e6


def parameter_count(shape: str) -> int:
    """Parameters of backbone + MLM head + a 17-tag head in this shape (built on the meta device)."""
    from transformers import BertConfig, BertForMaskedLM

    with torch.device("meta"):
        model = BertForMaskedLM(BertConfig(**SHAPES[shape]))
    hidden = SHAPES[shape]["hidden_size"]
    return sum(p.numel() for p in model.parameters()) + hidden * 17 + 17


def random_backbone(shape: str, tokenizer_from: str, workdir: Path) -> str:
    """A saved BertForMaskedLM of `shape` with random weights and the tokenizer of `tokenizer_from` (cached)."""
    from transformers import AutoTokenizer, BertConfig, BertForMaskedLM

    from distgem.model.backbone import resolve

    directory = workdir / f"random-{shape}"
    if not (directory / "config.json").exists():
        torch.manual_seed(0)
        tokenizer = AutoTokenizer.from_pretrained(resolve(tokenizer_from))
        config = BertConfig(**SHAPES[shape])
        if config.vocab_size < len(tokenizer):
            raise SystemExit(f"{shape}: vocabulary {config.vocab_size} smaller than the tokenizer's {len(tokenizer)}")
        BertForMaskedLM(config).save_pretrained(directory)
        tokenizer.save_pretrained(directory)
    return str(directory)


def load_average() -> str:
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


def environment(device: torch.device) -> str:
    """One line: date, device, threads, versions, load (the doc quotes it with every table)."""
    import datetime
    import platform

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or "cpu")
    return (
        f"{datetime.datetime.now():%Y-%m-%d %H:%M}, {device.type} ({name}), {torch.get_num_threads()} thread(s), "
        f"torch {torch.__version__}, load average {load_average()}"
    )


def long_corpus(root: Path, words: int, sentences: int = 48, seed: int = 0) -> Path:
    """The micro corpus (tests/support.py) with every sentence about `words` words long (at least as many tokens),
    so that batches are full windows."""
    from tests.support import write_micro_corpus

    return write_micro_corpus(root, seed, sentences, length=words)


def launcher(ranks: int) -> list[str]:
    """The command that starts a script on `ranks` CPU processes: this Python for one, torchrun on a free port
    (the tests' own, tests/support.torchrun) for more."""
    from tests.support import torchrun

    return [sys.executable] if ranks == 1 else torchrun(ranks)
