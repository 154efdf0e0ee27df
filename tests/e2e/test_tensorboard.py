"""TensorBoard for real: a tensorboard server on loopback serves the engine's scalar tags for a run."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request

from tests.support import free_port, run_training

EXPECTED = {
    "loss/pos",
    "loss/mlm",
    "loss/xsr",
    "gem/violated",
    "gem/norm_ratio",
    "gem/projection_ms",
    "gem/cosine/mlm",
    "gem/cosine/xsr",
    "gem/dual/mlm",
    "gem/min_constraint_after",
    "lr",
    "samples_per_s",
    "system/rss_mb",
    "system/peak_rss_mb",
    "dev/es",
    "dev/el",
    "dev/average",
    "test/es",
    "memory/mlm_perplexity/es",
    "memory/xsr/el/p@1",
    "tested/step",
    "tested/memory/xsr/el/p@1",
}


def test_tensorboard_serves_the_engine_tags(micro, tmp_path):
    run_dir = tmp_path / "runs" / "gem"
    run_training(
        micro,
        run_dir,
        1,
        {
            "train.steps": 4,
            "eval.every": 2,
            "output.tensorboard": "true",
            "method.name": "gem",
            "method.memory": "[mlm, xsr]",
        },
    )
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tensorboard.main",
            "--logdir",
            str(tmp_path / "runs"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--load_fast",
            "false",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        tags = {}
        deadline = time.time() + 90
        while time.time() < deadline and "gem/tensorboard" not in tags:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/data/plugin/scalars/tags", timeout=5) as response:
                    tags = json.loads(response.read())
            except OSError:
                pass
            time.sleep(0.5)
        assert "gem/tensorboard" in tags, f"tensorboard served no run: {tags}"
        missing = EXPECTED - set(tags["gem/tensorboard"])
        assert not missing, f"tags missing: {sorted(missing)}"
        query = f"http://127.0.0.1:{port}/data/plugin/scalars/scalars?run=gem%2Ftensorboard&tag=loss%2Fpos"
        with urllib.request.urlopen(query, timeout=5) as response:
            points = json.loads(response.read())
        assert [p[1] for p in points] == [1, 2, 3, 4]
        # one value per evaluated step on a curve: the tested checkpoint's scores have tags of their own
        for tag, steps in (("memory%2Fxsr%2Fel%2Fp%401", [0, 2, 4]), ("tested%2Fmemory%2Fxsr%2Fel%2Fp%401", [4])):
            query = f"http://127.0.0.1:{port}/data/plugin/scalars/scalars?run=gem%2Ftensorboard&tag={tag}"
            with urllib.request.urlopen(query, timeout=5) as response:
                assert [p[1] for p in json.loads(response.read())] == steps, tag
    finally:
        server.terminate()
        server.wait(timeout=30)
