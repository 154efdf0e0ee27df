"""Fake runs for the report's tests: results.json as `distgem train` writes them, for a few methods and seeds."""

from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path

LANGS = ["en", "es", "fr"]


def results(method: str, memory: list[str], seed: int, scores: dict, mlm_languages: str = "all") -> dict:
    targets = [scores[lang] for lang in LANGS if lang != "en"]
    memory_eval = {
        "mlm_perplexity": {lang: 10.0 + seed + len(method) for lang in LANGS},
        "xsr": {lang: {"p@1": 50.0 + seed, "p@5": 70.0, "p@10": 80.0} for lang in ("es", "fr")},
    }
    return {
        "run": {"task": "pos", "method": method, "seed": seed},
        "test": {
            "per_language": {lang: {"score": s} for lang, s in scores.items()},
            "average": statistics.fmean(targets),
        },
        "backbone": {
            "mlm_perplexity": {lang: 9.0 for lang in LANGS},
            "xsr": {lang: {"p@1": 90.0, "p@5": 95.0, "p@10": 99.0} for lang in ("es", "fr")},
        },
        "after": memory_eval,
        "config": {
            "method": {
                "name": method,
                "memory": memory,
                "mlm_languages": mlm_languages,
                "gem": {"per_language": False, "per_layer": False, "refresh_every": 1, "memory_strength": 0.0},
            }
        },
    }


SEEDS = {
    ("naive", ()): [
        {"en": 95, "es": 70, "fr": 72},
        {"en": 95.5, "es": 71, "fr": 71},
        {"en": 94, "es": 70.5, "fr": 72.5},
    ],
    ("gem", ("mlm", "xsr")): [
        {"en": 95, "es": 76, "fr": 77},
        {"en": 95, "es": 75.5, "fr": 77.5},
        {"en": 96, "es": 76.2, "fr": 76.8},
    ],
    ("mtf", ("mlm",)): [{"en": 94, "es": 65, "fr": 66}, {"en": 94, "es": 67, "fr": 64}],
}


def write_runs(root: Path) -> Path:
    """One run directory per method and seed of SEEDS under `root/runs`."""
    for (method, memory), seeds in SEEDS.items():
        for seed, scores in enumerate(seeds):
            run_dir = root / "runs" / f"{method}-{'-'.join(memory)}-seed{seed}"
            run_dir.mkdir(parents=True)
            (run_dir / "results.json").write_text(json.dumps(results(method, list(memory), seed, scores)))
    return root / "runs"


def read_csv(path: Path) -> list[dict]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))
