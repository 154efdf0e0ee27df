"""The `datasets` cache at scale: preparation time, reuse, disk, and per-rank memory of a 2-rank run.

    python bench/data.py prepare [--sentences 1000000] [--procs 1 2] [--quick]
    python bench/data.py rss [--sentences 2000000] [--small 10000] [--steps 8] [--quick]

prepare: a generated corpus (Zipf-distributed synthetic words, 5-25 per sentence) and a WordPiece
tokenizer (16K) trained on part of it. Times, each in a fresh process (as a job of a sweep would):
the in-memory path (read + one batched tokenizer call: `distgem.tasks.mlm.load_mono`), the first
cached preparation with each num_proc, and the second load (hash the text, verify the entry, map
it); the cache's size on disk.

rss: the micro corpus and backbone of the tests with mono files of N sentences over en, es, el;
`distgem data prepare`, then a 2-rank (torchrun, gloo) GEM run with MLM(all) memory; each rank's
peak RSS from results.json, for N = --small and N = --sentences.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from common import launcher  # noqa: E402  (bench/ is sys.path[0] when run as a script)

ENV = {
    **os.environ,
    "OMP_NUM_THREADS": "1",
    "DS_ACCELERATOR": "cpu",
    "TOKENIZERS_PARALLELISM": "false",
    "HF_HUB_OFFLINE": "1",
    "PYTHONPATH": str(ROOT),
}


# --- prepare -------------------------------------------------------------------------------------


def write_corpus(path: Path, sentences: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    syllables = [c + v for c in "bcdfghklmnprstvz" for v in "aeiou"]
    lexicon = ["".join(rng.choice(syllables) for _ in range(rng.randint(1, 4))) for _ in range(30_000)]
    cumulative = list(itertools.accumulate(1 / (rank + 1) for rank in range(len(lexicon))))  # Zipf
    with path.open("w", encoding="utf-8") as handle:
        for _ in range(sentences):
            words = rng.choices(lexicon, cum_weights=cumulative, k=rng.randint(5, 25))
            handle.write(" ".join(words).capitalize() + " .\n")


def write_tokenizer(corpus: Path, directory: Path, sample: int = 100_000) -> None:
    from distgem.world import wordpiece

    with corpus.open(encoding="utf-8") as handle:
        texts = list(itertools.islice(handle, sample))
    wordpiece.bert_tokenizer(wordpiece.cased_vocabulary(texts, 16_000)).save_pretrained(directory)


def measure(mode: str, root: str, tokenizer: str, cache: str, procs: int) -> dict:
    """One timing in this (fresh) process: `plain` or `cached` (first or second load, whichever it is)."""
    import resource

    from transformers import AutoTokenizer

    from distgem.config.sections import load_run_config
    from distgem.data.cache import DatasetCache
    from distgem.data.corpora import mono_examples
    from distgem.tasks.mlm import load_mono

    tok = AutoTokenizer.from_pretrained(tokenizer)
    data = load_run_config([], [f"data.root={root}", f"data.cache_dir={cache}", f"data.num_proc={procs}"]).data
    started = time.perf_counter()
    if mode == "plain":
        rows = load_mono(f"{root}/mono/en.txt", tok, 128)
        built, size = None, None
    else:
        store = DatasetCache(cache, procs)
        rows = mono_examples(store, data, "en", tok, 128)
        built, size = store.entries[0].built, store.entries[0].bytes
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "rows": len(rows),
        "row_probe": list(rows[len(rows) * 5 // 8]),
        "built": built,
        "bytes": size,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def _measure_in_child(*args) -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), "_measure", *map(str, args)]
    result = subprocess.run(command, capture_output=True, text=True, env=ENV)
    if result.returncode:
        raise SystemExit(f"{args[0]} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def bench_prepare(sentences: int, procs: list[int], work: Path) -> None:
    (work / "mono").mkdir(parents=True, exist_ok=True)
    text = work / "mono" / "en.txt"
    write_corpus(text, sentences)
    write_tokenizer(text, work / "tokenizer")
    plain = _measure_in_child("plain", work, work / "tokenizer", work / "unused", 1)
    print(
        f"\n{sentences:,} sentences, {text.stat().st_size / 2**20:.1f} MiB of text, {plain['rows']:,} MLM examples "
        f"(max_length 128)\n"
    )
    print(
        "| path | num_proc | first (s) | vs in-memory | second load (s) | second / first | cache on disk "
        "| peak RSS first / second (MB) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    print(
        f"| in-memory `load_mono` (read + one batched tokenizer call) | 1 | {plain['seconds']:.1f} | 1.00 | "
        f"{plain['seconds']:.1f} (every run) | 100% | - | {plain['peak_rss_mb']:.0f} |"
    )
    for n in procs:
        cache = work / f"cache-np{n}"
        first = _measure_in_child("cached", work, work / "tokenizer", cache, n)
        second = _measure_in_child("cached", work, work / "tokenizer", cache, n)
        assert first["built"] and not second["built"], (first, second)
        assert first["rows"] == second["rows"] == plain["rows"] and first["row_probe"] == plain["row_probe"]
        print(
            f"| `datasets` cache | {n} | {first['seconds']:.1f} | {first['seconds'] / plain['seconds']:.2f} | "
            f"{second['seconds']:.3f} | {100 * second['seconds'] / first['seconds']:.2f}% | "
            f"{first['bytes'] / 2**20:.1f} MiB | {first['peak_rss_mb']:.0f} / {second['peak_rss_mb']:.0f} |"
        )


# --- rss ---------------------------------------------------------------------------------------------


def bench_rss(sizes: list[int], steps: int, work: Path) -> None:
    from tests.support import micro_overrides, write_micro_backbone, write_micro_corpus, write_mono

    corpus = write_micro_corpus(work / "corpus")
    backbone = write_micro_backbone(work / "backbone", corpus)
    print(
        "\n| MLM sentences (en+es+el) | prepare (s) | MLM cache on disk | rank 0 peak RSS (MB) | rank 1 peak RSS (MB) "
        "| train (s) |"
    )
    print("|---|---|---|---|---|---|")
    for size in sizes:
        root = work / f"corpus-{size}"
        subprocess.run(["cp", "-r", str(corpus), str(root)], check=True)
        for i, lang in enumerate(("en", "es", "el")):
            write_mono(root / "mono" / f"{lang}.txt", lang, size // 3, seed=i)
        run_dir = work / f"run-{size}"
        overrides = micro_overrides(
            root,
            backbone,
            run_dir,
            **{
                "data.cache_dir": str(work / f"cache-{size}"),
                "data.num_proc": 2,
                "method.name": "gem",
                "method.memory": "[mlm]",
                "method.mlm_languages": "all",
                "train.steps": steps,
                "eval.every": steps,
                "data.mlm_eval_sentences": 500,
                "train.batch_size": 16,
                "method.memory_batch_size": 16,
            },
        )
        flags = [a for o in overrides for a in ("--set", o)]
        started = time.perf_counter()
        prepared = subprocess.run(
            [sys.executable, "-m", "distgem.cli", "data", "prepare", *flags],
            capture_output=True,
            text=True,
            env=ENV,
            cwd=ROOT,
        )
        prepare_seconds = time.perf_counter() - started
        if prepared.returncode:
            raise SystemExit(prepared.stderr[-3000:])
        disk = sum(f.stat().st_size for d in (work / f"cache-{size}").glob("mlm-*") for f in d.iterdir())
        command = [
            *launcher(2),
            str(ROOT / "launch" / "train.py"),
            *flags,
        ]
        started = time.perf_counter()
        trained = subprocess.run(command, capture_output=True, text=True, env=ENV, cwd=ROOT)
        if trained.returncode:
            raise SystemExit(trained.stderr[-3000:])
        results = json.loads((run_dir / "results.json").read_text())
        rss = results["train"]["peak_rss_mb"]
        print(
            f"| {size:,} | {prepare_seconds:.1f} | {disk / 2**20:.1f} MiB | {rss[0]:.0f} | "
            f"{rss[1]:.0f} | {time.perf_counter() - started:.1f} |"
        )


def main() -> int:
    if sys.argv[1:2] == ["_measure"]:
        mode, root, tokenizer, cache, procs = sys.argv[2:7]
        print(json.dumps(measure(mode, root, tokenizer, cache, int(procs))))
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="bench", required=True)
    prepare = sub.add_parser("prepare")
    prepare.add_argument("--sentences", type=int, default=1_000_000)
    prepare.add_argument("--procs", type=int, nargs="+", default=[1, 2])
    prepare.add_argument("--quick", action="store_true", help="2,000 sentences, num_proc 1 (CI: it still runs)")
    rss = sub.add_parser("rss")
    rss.add_argument("--sentences", type=int, default=2_000_000)
    rss.add_argument("--small", type=int, default=10_000)
    rss.add_argument("--steps", type=int, default=8)
    rss.add_argument("--quick", action="store_true", help="200 and 2,000 sentences, 2 steps (CI: it still runs)")
    parser.add_argument("--workdir", help="keep the corpora and caches here (default: a temporary directory)")
    args = parser.parse_args()
    if args.quick and args.bench == "prepare":
        args.sentences, args.procs = 2_000, [1]
    elif args.quick:
        args.small, args.sentences, args.steps = 200, 2_000, 2
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.workdir or tmp)
        if args.bench == "prepare":
            bench_prepare(args.sentences, args.procs, work)
        else:
            bench_rss([args.small, args.sentences], args.steps, work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
