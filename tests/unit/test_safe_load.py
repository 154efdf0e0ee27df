"""Checkpoint loading never unpickles arbitrary objects: weights-only, with DeepSpeed's own types allowed."""

from __future__ import annotations

import collections
import pickle

import pytest
import torch

from distgem.distributed.checkpoint import safe_torch_load


class Payload:
    """Stands for any object a tampered checkpoint could carry (its __reduce__ could run code)."""

    def __reduce__(self):
        return (print, ("unpickled arbitrary code",))


def test_arbitrary_objects_are_refused(tmp_path):
    path = tmp_path / "mp_rank_00_model_states.pt"
    torch.save({"module": {"w": torch.ones(2)}, "evil": Payload()}, path)
    with safe_torch_load(), pytest.raises(pickle.UnpicklingError):
        torch.load(path)
    assert torch.load is not None and torch.load.__name__ == "load"  # restored after the context


def test_tensors_and_deepspeed_types_load(tmp_path):
    from deepspeed.runtime.zero.config import ZeroStageEnum

    path = tmp_path / "ok.pt"
    state = {"module": collections.OrderedDict(w=torch.arange(3.0)), "stage": ZeroStageEnum.weights, "step": 7}
    torch.save(state, path)
    with safe_torch_load():
        loaded = torch.load(path, weights_only=False)  # callers asking for more still get weights-only
    assert (
        loaded["stage"] == ZeroStageEnum.weights and loaded["step"] == 7 and loaded["module"]["w"].tolist() == [0, 1, 2]
    )
