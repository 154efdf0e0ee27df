"""`distgem world` + `distgem pretrain` as a user runs them, and the cached embedded backbone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _env(**extra) -> dict:
    return {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "DS_ACCELERATOR": "cpu",
        **extra,
    }


def _cli(*args, env=None) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "distgem.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env=env or _env(),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pretrain") / "world"
    _cli("world", "--out", out, "--preset", "test", "--seed", "1")
    return out


def test_truncated_pretrain_loads_with_auto_classes(world, tmp_path):
    import torch
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    out = tmp_path / "model"
    _cli("pretrain", "--world", world, "--out", out, "--preset", "test", "--max-steps", "6", "--threads", "1")
    summary = json.loads((out / "distgem_pretrain.json").read_text())
    assert summary["steps"] == 6 and set(summary["mlm_perplexity"]) == {"en", "es", "fr", "el", "ru", "de", "nl"}
    assert set(summary["xsr_p1"]) == {"es", "fr", "el", "ru", "de", "nl"}
    tokenizer = AutoTokenizer.from_pretrained(out)
    model = AutoModelForMaskedLM.from_pretrained(out).eval()
    assert getattr(tokenizer, "is_fast", False) and tokenizer.mask_token == "[MASK]"
    from tokenizers import Tokenizer

    trained = Tokenizer.from_file(str(out / "tokenizer.json"))  # what pre-training used: cased, accents kept
    for lang in ("de", "el", "ru"):
        line = (world / "mono" / f"{lang}.txt").read_text(encoding="utf-8").splitlines()[0]
        assert tokenizer(line)["input_ids"] == trained.encode(line).ids, lang
    batch = tokenizer(["Ένα δύο .", "один два ."], ["one two .", "one two ."], padding=True, return_tensors="pt")
    assert batch["token_type_ids"].max() == 1  # sentence pairs keep BERT's segment ids (TLM)
    with torch.no_grad():
        logits = model(**batch).logits
    assert logits.shape == (*batch["input_ids"].shape, len(tokenizer)) and torch.isfinite(logits).all()
    assert model.config.hidden_dropout_prob == summary["settings"]["dropout"]


def test_pretrain_is_deterministic(world, tmp_path):
    from safetensors.torch import load_file

    from distgem.world.pretrain import pretrain

    first = pretrain(world, tmp_path / "a", "test", seed=0, max_steps=5, threads=1, progress=False)
    second = pretrain(world, tmp_path / "b", "test", seed=0, max_steps=5, threads=1, progress=False)
    assert first["train"] == second["train"] and first["mlm_perplexity"] == second["mlm_perplexity"]
    a, b = load_file(str(tmp_path / "a" / "model.safetensors")), load_file(str(tmp_path / "b" / "model.safetensors"))
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
    assert (tmp_path / "a" / "tokenizer.json").read_bytes() == (tmp_path / "b" / "tokenizer.json").read_bytes()


def test_ensure_backbone_builds_once_even_when_two_processes_race(tmp_path):
    code = "from distgem.world.pretrain import ensure_backbone; print(ensure_backbone('test', seed=2))"
    env = _env(DISTGEM_CACHE=str(tmp_path / "cache"), DISTGEM_PRETRAIN_THREADS="1")
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env
        )
        for _ in range(2)
    ]
    paths = []
    for racer in racers:
        out, err = racer.communicate(timeout=120)
        assert racer.returncode == 0, err[-3000:]
        paths.append(out.strip().splitlines()[-1])
    assert paths[0] == paths[1]
    backbones = [p for p in (tmp_path / "cache" / "backbones").iterdir() if not p.name.startswith(".")]
    worlds = [p for p in (tmp_path / "cache" / "worlds").iterdir() if not p.name.startswith(".")]
    assert [str(p) for p in backbones] == [paths[0]] and len(worlds) == 1
    leftovers = [p for p in (tmp_path / "cache").rglob(".*") if not p.name.endswith(".lock")]
    assert leftovers == []  # no half-built temporary directories
    built = (Path(paths[0]) / "model.safetensors").stat().st_mtime_ns
    again = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert again.stdout.strip().splitlines()[-1] == paths[0]
    assert (Path(paths[0]) / "model.safetensors").stat().st_mtime_ns == built  # cached, not rebuilt
