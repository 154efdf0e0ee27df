"""The step's phase timer: free and silent unless DISTGEM_PROFILE is set, per-phase sums when it is."""

from __future__ import annotations

import time

import torch

from distgem.train.timer import PhaseTimer


def test_disabled_timer_records_nothing(monkeypatch):
    monkeypatch.delenv("DISTGEM_PROFILE", raising=False)
    timer = PhaseTimer(torch.device("cpu"))
    with timer.phase("gram"):
        time.sleep(0.01)
    assert not timer.enabled and timer.take() == {}
    assert timer.phase("a") is timer.phase("b"), "off, every phase is one shared null context"


def test_enabled_timer_sums_each_phase_until_taken(monkeypatch):
    monkeypatch.setenv("DISTGEM_PROFILE", "1")
    timer = PhaseTimer(torch.device("cpu"))
    for _ in range(2):
        with timer.phase("capture"):
            time.sleep(0.01)
    with timer.phase("qp"):
        pass
    times = timer.take()
    assert set(times) == {"time/capture_ms", "time/qp_ms"}
    assert times["time/capture_ms"] >= 20 > times["time/qp_ms"]
    assert timer.take() == {}
