"""Training on `device` equals the CPU reference: every method at ZeRO 0-3, bf16, resume, export.

On CUDA each run is one process on one GPU with the NCCL backend, compared with one CPU process at ZeRO 0
(fp32) on the same micro fixture and global batch. The CPU case of each test runs a few of the same
comparisons on CPU (ZeRO s against ZeRO 0 in one process), so that this file runs in CI; the 2-rank CPU
equivalence lives in tests/distributed/test_equivalence.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.support import ROOT, read_steps, read_weights

STEPS = 10
COMMON = {
    "train.steps": STEPS,
    "eval.every": 5,
    "eval.before_training": "false",
    "eval.after_training": "false",
    "eval.memory_loss_examples": 0,
    "output.save_final": "true",
    "output.save_predictions": "true",
}
METHODS = {
    "naive": {"method.name": "naive"},
    "frozen": {"method.name": "frozen"},
    "mtf-both": {"method.name": "mtf", "method.memory": "[mlm, xsr]"},
    "gem-both": {"method.name": "gem", "method.memory": "[mlm, xsr]"},
    "gem-per-language": {"method.name": "gem", "method.memory": "[mlm, xsr]", "method.gem.per_language": "true"},
    "gem-per-layer": {"method.name": "gem", "method.memory": "[mlm, xsr]", "method.gem.per_layer": "true"},
    # the optimizer's step projected: the master weights are rewritten after the step, at every stage
    "gem-update": {"method.name": "gem", "method.memory": "[mlm, xsr]", "method.gem.target": "update"},
}
CPU_CASES = {("mtf-both", 1), ("gem-both", 3), ("gem-update", 2)}
"""What the CPU case runs (every method and stage runs on CUDA): one method of each kind, at a stage other than
the reference's, so that CI keeps every line of the test alive for six short runs."""
LOSS_TOL = 5e-5
"""|loss - reference| per task and step, as tests/distributed/test_equivalence.py holds 2 CPU ranks to (fp32 in
another order of summation; measured <= 1.5e-6 there). On CUDA fp32 products do not use TF32 (torch's default)."""
PARAM_TOL = 2e-4
"""max |parameter - reference| at the end: Adam amplifies rounding near zero (<= 3e-5 measured on 2 CPU ranks)."""
CONSTRAINT_TOL = 1e-5
"""gem/min_constraint_after (<g_i, g~> over its scale, on the gradient actually written), at every step."""
BF16_CONSTRAINT_TOL = 2**-7
"""The same in bf16: the projected gradient is rounded to bf16 (relative 2^-8) when it is written back."""
BF16_FIRST_LOSS_REL = 0.02
"""bf16's first losses against fp32's: a wrong cast or scale moves them by far more than bf16 rounding does."""


@pytest.mark.parametrize("stage", [0, 1, 2, 3])
@pytest.mark.parametrize("method", list(METHODS))
def test_fp32_run_equals_the_cpu_reference(device, train, record, method, stage):
    if device.type == "cpu" and (method, stage) not in CPU_CASES:
        pytest.skip("CPU: the subset CPU_CASES (the whole matrix runs on CUDA)")
    settings = {**COMMON, **METHODS[method]}
    reference = train("cpu", {**settings, "train.zero_stage": 0})
    run = train(device.type, {**settings, "train.zero_stage": stage})
    assert_on_device(run, device)
    one, two = read_steps(reference), read_steps(run)
    assert len(one) == len(two) == STEPS
    loss_keys = [k for k in one[0] if k.startswith("loss/")]
    w1, w2 = read_weights(reference), read_weights(run)
    assert w1.keys() == w2.keys()
    worst_loss = max(abs(b[key] - a[key]) for a, b in zip(one, two) for key in loss_keys)
    worst_param = max(float((w1[k] - w2[k]).abs().max()) for k in w1)
    record(loss=worst_loss, loss_tol=LOSS_TOL, param=worst_param, param_tol=PARAM_TOL)
    for a, b in zip(one, two):
        for key in loss_keys:
            assert b[key] == pytest.approx(a[key], abs=LOSS_TOL), (a["step"], key)
    assert worst_param < PARAM_TOL
    if method.startswith("gem"):
        assert any(s["gem/violated"] for s in two), "no step was projected: the test would prove nothing"
        record(min_constraint_after=min(s["gem/min_constraint_after"] for s in two), tol=CONSTRAINT_TOL)
        for a, b in zip(one, two):
            assert b["gem/min_constraint_after"] >= -CONSTRAINT_TOL, b["step"]
            assert b["gem/violated"] == a["gem/violated"], b["step"]


@pytest.mark.parametrize("stage", [0, 1, 2, 3])
def test_bf16_projection_holds_to_bf16_rounding(device, train, record, stage):
    if device.type == "cpu" and stage != 2:
        pytest.skip("CPU: stage 2 only (tests/distributed/test_equivalence.py runs bf16 on 2 CPU ranks)")
    settings = {**COMMON, **METHODS["gem-both"]}
    run = train(device.type, {**settings, "train.zero_stage": stage, "train.precision": "bf16"})
    assert_on_device(run, device)
    steps, fp32 = read_steps(run), read_steps(train("cpu", {**settings, "train.zero_stage": 0}))
    assert len(steps) == STEPS and any(s["gem/violated"] for s in steps)
    losses = [k for k in steps[0] if k.startswith("loss/")]
    assert all(s[k] == s[k] for s in steps for k in losses), "NaN loss"
    worst = min(s["gem/min_constraint_after"] for s in steps)
    first = max(abs(steps[0][k] - fp32[0][k]) / abs(fp32[0][k]) for k in losses)
    record(min_constraint_after=worst, tol=BF16_CONSTRAINT_TOL, first_loss_rel=first)
    assert worst >= -BF16_CONSTRAINT_TOL
    assert first < BF16_FIRST_LOSS_REL


def test_checkpoint_and_resume_continue_identically(device, train, record):
    """Steps 1-4 and their checkpoint in one process, steps 5-8 resumed from it in another, against 8 steps in
    one process. Dropout is on, so the random state must travel with the checkpoint (on CUDA, the GPU's
    generator too); the memories are refreshed every 3 steps, so steps 5 and 6 project on the memories of
    step 4, restored from the checkpoint (at ZeRO 2, where the partition exists only after a backward). On
    CUDA the bound is what two uninterrupted runs differ by (0 where the kernels are deterministic)."""
    settings = {
        **COMMON,
        "train.steps": 8,
        "eval.every": 4,
        "output.checkpoint_every": 4,
        "model.dropout": 0.1,
        **METHODS["gem-both"],
        "method.gem.refresh_every": 3,
        "train.zero_stage": 2,
    }
    whole = train(device.type, settings)
    first = train(device.type, {**settings, "train.steps": 4}, tag="resume")
    assert (first / "checkpoints" / "step4").is_dir()
    resumed = train(
        device.type, settings, args=("--resume", "--allow-config-change"), tag="resume"
    )  # the same directory: continues
    assert_on_device(resumed, device)
    assert [s["step"] for s in read_steps(resumed)] == list(range(1, 9))
    loss, param = _differences(whole, resumed)
    noise = (0.0, 0.0)
    if device.type == "cuda":
        noise = _differences(whole, train(device.type, settings, tag="resume-whole-again"))
    record(loss=loss, param=param, run_to_run_loss=noise[0], run_to_run_param=noise[1])
    assert loss <= 10 * noise[0] and param <= 10 * noise[1], (loss, param, noise)
    assert noise[1] < PARAM_TOL


def test_export_from_a_device_run_loads_on_cpu(device, train, micro_shared, tmp_path):
    """A run trained on the device (ZeRO 3) is exported by a process that sees no GPU (its checkpoint holds
    the device's tensors), loads there with transformers and tags as the run did."""
    run = train(device.type, {**COMMON, **METHODS["gem-both"], "train.zero_stage": 3})
    cpu_only = {
        **os.environ,
        "CUDA_VISIBLE_DEVICES": "",
        "DS_ACCELERATOR": "cpu",
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
    }
    export = "import sys; from distgem.cli import main; sys.exit(main(['export', sys.argv[1], '--out', sys.argv[2]]))"
    done = subprocess.run(
        [sys.executable, "-c", export, str(run), str(tmp_path / "model")],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env=cpu_only,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    corpus = micro_shared[0] / "pos" / "es-test.conllu"
    done = subprocess.run(
        [sys.executable, "-c", TAG_ON_CPU, str(tmp_path / "model"), str(corpus), "16"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env=cpu_only,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    exported = json.loads(done.stdout)
    engine = json.loads((run / "predictions" / "test" / "es.json").read_text())
    whole = [i for i, tags in enumerate(exported) if tags is not None]  # sentences that fit one window
    assert len(whole) >= len(engine) // 2 and all(exported[i] == engine[i] for i in whole)


TAG_ON_CPU = """
import json, sys, torch
from transformers import AutoModelForTokenClassification, AutoTokenizer
from distgem.data.conllu import read_conllu
assert not torch.cuda.is_available()
model_dir, corpus, window = sys.argv[1], sys.argv[2], int(sys.argv[3])
model = AutoModelForTokenClassification.from_pretrained(model_dir).eval()
tokenizer = AutoTokenizer.from_pretrained(model_dir)
out = []
for sentence in read_conllu(corpus):
    encoded = tokenizer(list(sentence.words), is_split_into_words=True, return_tensors="pt")
    if encoded["input_ids"].shape[1] > window:
        out.append(None)  # the engine tags it in windows
        continue
    with torch.no_grad():
        labels = model(**encoded).logits[0].argmax(-1).tolist()
    tags, previous = [], None
    for position, word in enumerate(encoded.word_ids()):
        if word is not None and word != previous:
            tags.append(model.config.id2label[labels[position]])
        previous = word
    out.append(tags)
print(json.dumps(out))
"""
"""Tags every sentence that fits one window with the exported model, first subword of each word (the engine's rule)."""


def assert_on_device(run_dir, device) -> None:
    """The run trained on `device` (a CUDA run logs its GPU memory every step), and on CUDA DeepSpeed compiled
    no op on the way (torch's AdamW: no FusedAdam or other JIT-built extension in the device's time)."""
    steps = read_steps(run_dir)
    if device.type == "cuda":
        assert all(s.get("system/gpu_peak_mb", 0) > 0 for s in steps), "the run did not train on the GPU"
        built = run_dir / "torch_extensions"
        assert not built.exists() or not any(built.iterdir()), f"DeepSpeed compiled ops: {sorted(built.iterdir())}"
    else:
        assert not any("system/gpu_peak_mb" in s for s in steps)


def _differences(a, b) -> tuple[float, float]:
    """(largest |loss difference| over steps and tasks, largest |parameter difference|) of two runs."""
    sa, sb = read_steps(a), read_steps(b)
    loss = max(abs(x[k] - y[k]) for x, y in zip(sa, sb, strict=True) for k in x if k.startswith("loss/"))
    wa, wb = read_weights(a), read_weights(b)
    return loss, max(float((wa[k] - wb[k]).abs().max()) for k in wa)
