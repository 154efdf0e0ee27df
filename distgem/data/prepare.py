"""`distgem data prepare`: tokenise and cache every corpus a config reads, ahead of a sweep.

The corpora are exactly those a run of the config opens (same resolution, same keys), so the jobs
of a Slurm array find every entry cached and start training at once.
"""

from __future__ import annotations

import argparse
import sys
import time

from distgem.config import loader


def add_arguments(parser: argparse.ArgumentParser) -> None:
    loader.add_arguments(parser)  # the corpora of the run these --config/--set would train


def run(args: argparse.Namespace) -> int:
    from distgem.config.sections import load_run_config
    from distgem.data.cache import DatasetCache
    from distgem.data.corpora import load_corpora, needed
    from distgem.model import backbone

    config = load_run_config(args.config, args.overrides)
    started = time.perf_counter()
    tokenizer, model_config = backbone.load_tokenizer(config.model.backbone)
    mono, pairs = needed(config.task, backbone.has_mlm_head(model_config))
    data = config.data
    cache = DatasetCache(data.cache_dir or None, data.num_proc, progress=True)
    load_corpora(data, config.task, config.model, tokenizer, mono, pairs, cache=cache)
    print(format_entries(cache, time.perf_counter() - started))
    return 0


def format_entries(cache, seconds: float) -> str:
    """One line per corpus (built or already cached, rows, size), then the totals."""
    lines = []
    for entry in cache.entries:
        state = "built " if entry.built else "cached"
        lines.append(
            f"  {state} {entry.name:<16} {entry.rows:>10,} rows {_size(entry.bytes):>10}  "
            f"{entry.seconds:6.1f} s  {entry.path.name}"
        )
    built = sum(e.built for e in cache.entries)
    total = sum(e.bytes for e in cache.entries)
    head = (
        f"prepared {len(cache.entries)} corpora in {cache.directory} ({built} built, "
        f"{len(cache.entries) - built} already cached; {_size(total)} on disk) in {seconds:.1f} s"
    )
    return "\n".join([head, *lines])


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    add_arguments(parser)
    sys.exit(run(parser.parse_args()))
