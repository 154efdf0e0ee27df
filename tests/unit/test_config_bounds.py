"""Every numeric setting has its range: out-of-range and non-finite values stop with the dotted key, exit 2.

The ranges are part of the config's own fields (`bounded(...)` in distgem/config/sections.py), so this test
finds every bounded field itself: a new numeric setting without a range fails the completeness test below.
"""

from __future__ import annotations

import dataclasses
import math
import typing

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from distgem.cli import main
from distgem.config.sections import RunConfig, load_run_config
from distgem.errors import ConfigError


def numeric_fields(cls=RunConfig, prefix: str = "") -> dict[str, tuple[type, dict]]:
    """dotted key -> (int or float, bounds) for every numeric field of the run config."""
    out = {}
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        hint = hints[field.name]
        if dataclasses.is_dataclass(hint):
            out.update(numeric_fields(hint, f"{prefix}{field.name}."))
            continue
        kinds = [t for t in (typing.get_args(hint) or (hint,)) if t in (int, float)]
        if kinds:
            out[prefix + field.name] = (kinds[0], dict(field.metadata.get("bounds", {})))
    return out


FIELDS = numeric_fields()
# checked elsewhere: a layer index against the backbone once it is loaded, the MTF weights each (>= 0, finite)
UNBOUNDED = {"method.xsr_layer", "method.mtf_weights"}


def test_every_numeric_setting_has_a_range():
    missing = sorted(key for key, (_, bounds) in FIELDS.items() if not bounds and key not in UNBOUNDED)
    assert not missing, f"numeric settings without bounds: {missing}"
    assert len(FIELDS) >= 30  # the walk found the sections' fields


@st.composite
def out_of_range(draw):
    """(dotted key, a value outside its range or not finite, as --set text)."""
    key = draw(st.sampled_from(sorted(k for k, (_, b) in FIELDS.items() if b)))
    kind, bounds = FIELDS[key]
    candidates = []
    step = draw(st.integers(1, 10**6)) if kind is int else draw(st.floats(1e-6, 1e6))
    if "ge" in bounds:
        candidates.append(bounds["ge"] - step)
    if "gt" in bounds:
        candidates.append(bounds["gt"] - (step - 1 if kind is int else step * draw(st.sampled_from([0, 1]))))
    if "lt" in bounds:
        candidates.append(bounds["lt"] + (step - 1 if kind is int else step * draw(st.sampled_from([0, 1]))))
    if "le" in bounds:
        candidates.append(bounds["le"] + step)
    value = draw(st.sampled_from(candidates))
    text = str(int(value)) if kind is int else repr(float(value))
    if kind is float:
        text = draw(st.sampled_from([text, "inf", "-inf", "nan"]))
    return key, text


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(out_of_range())
def test_out_of_range_values_stop_with_the_key_named(case):
    key, text = case
    with pytest.raises(ConfigError) as err:
        load_run_config([], [f"{key}={text}"])
    assert f"'{key}'" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    "setting",
    [
        "eval.every=0",
        "eval.batch_size=0",
        "model.dropout=1.5",
        "train.lr=inf",
        "train.warmup_steps=-1",
        "eval.patience=-1",
        "output.checkpoint_every=-1",
        "train.gradient_clipping=-1",
        "train.weight_decay=-0.1",
        "method.gem.memory_strength=inf",
        "model.dropout=-0.1",
    ],
)
def test_the_cli_exits_2_with_one_line_and_no_traceback(setting, capsys):
    assert main(["train", "--set", setting]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err and setting.split("=")[0] in err


def test_values_at_the_edge_of_their_range_are_accepted():
    config = load_run_config(
        [],
        [
            "model.dropout=0",
            "train.warmup_steps=0",
            "eval.patience=0",
            "eval.every=1",
            "train.lr=1e-12",
            "method.gem.memory_strength=0",
        ],
    )
    assert config.model.dropout == 0 and config.eval.every == 1 and not math.isinf(config.train.lr)
