"""Config: precedence, strictness with the offending dotted key and its source, YAML round trip."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from distgem.config.loader import build, dump_yaml
from distgem.config.sections import RunConfig, load_run_config
from distgem.errors import ConfigError


def test_defaults_then_yaml_then_overrides(write):
    write("base.yaml", "train:\n  lr: 2e-5\n  steps: 50\nmethod:\n  name: gem\n  memory: [mlm, xsr]\n")
    top = write("top.yaml", "include: base.yaml\ntrain:\n  steps: 70\n")
    config = load_run_config([top], ["train.seed=3", "method.gem.memory_strength=0.5", "train.zero_stage=2"])
    assert config.train.lr == 2e-5 and isinstance(config.train.lr, float)  # YAML 1.1 reads 2e-5 as text
    assert config.train.steps == 70  # the including file wins over what it includes
    assert config.train.seed == 3 and config.train.zero_stage == 2
    assert config.method.memory == ["mlm", "xsr"] and config.method.gem.memory_strength == 0.5
    assert config.eval.every == RunConfig().eval.every  # untouched defaults stay


def test_override_values_parse_to_the_field_type(write):
    config = load_run_config(
        [],
        [
            "task.targets=[es, fr]",
            "output.tensorboard=false",
            "method.name=mtf",
            "method.memory=xsr",
            "method.mtf_weights={mlm: 0.5, xsr: 2}",
            "model.backbone=bert-base-multilingual-cased",
        ],
    )
    assert config.task.targets == ["es", "fr"] and config.output.tensorboard is False
    assert config.method.memory == ["xsr"] and config.method.mtf_weights == {"mlm": 0.5, "xsr": 2.0}
    assert config.model.backbone == "bert-base-multilingual-cased"


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["train.lrr=1"], "--set train.lrr: unknown key 'train.lrr' (did you mean 'train.lr'?)"),
        (["trian.lr=1"], "--set trian.lr: unknown key 'trian' (did you mean 'train'?)"),
        (["train.steps=ten"], "--set train.steps: 'train.steps' must be int, got 'ten'"),
        (["train.steps=1.5"], "--set train.steps: 'train.steps' must be int, got '1.5'"),
        (["train.zero_stage=4"], "--set train.zero_stage: 'train.zero_stage' must be one of 0, 1, 2, 3, got '4'"),
        (
            ["method.gem.memory_strength=-1"],
            "--set method.gem.memory_strength: 'method.gem.memory_strength' must be >= 0, got -1.0",
        ),
        (["train=3"], "--set train: 'train' is a section; set its keys, e.g. train.<key>=..."),
        (["train.lr"], "--set 'train.lr': expected section.key=value"),
    ],
)
def test_bad_overrides_name_the_key(overrides, message):
    with pytest.raises(ConfigError) as err:
        load_run_config([], overrides)
    assert str(err.value) == message


def test_bad_yaml_names_file_and_key(write):
    path = write("c.yaml", "method:\n  name: gem\n  memory: [mlm]\n  gem:\n    solver: fast\n")
    with pytest.raises(
        ConfigError, match=rf"^{path}: 'method.gem.solver' must be one of auto, exact, qpth, got 'fast'$"
    ):
        load_run_config([path])
    bad_type = write("d.yaml", "train:\n  steps: true\n")
    with pytest.raises(ConfigError, match=rf"^{bad_type}: 'train.steps' must be int, got 'True'$"):
        load_run_config([bad_type])
    broken = write("e.yaml", "train:\n  steps: [1\n")
    with pytest.raises(ConfigError, match=rf"^{broken}:\d+: invalid YAML"):
        load_run_config([broken])
    with pytest.raises(ConfigError, match="no such config file"):
        load_run_config([write("f.yaml", "include: missing.yaml\n").parent / "missing.yaml"])


def test_an_error_in_an_included_file_names_that_file(write):
    """The file that set the value is named, not the one that included it (nested includes too)."""
    bad = write("unknown.yaml", "train:\n  lr: abc\n")
    inner = write("inner.yaml", "include: unknown.yaml\n")
    outer = write("inc.yaml", "include: inner.yaml\neval:\n  every: 10\n")
    with pytest.raises(ConfigError, match=rf"^{bad}: 'train.lr' must be float, got 'abc'$"):
        load_run_config([outer])
    typo = write("typo.yaml", "train:\n  stepz: 3\n")
    with pytest.raises(ConfigError, match=rf"^{typo}: unknown key 'train.stepz'"):
        load_run_config([write("top.yaml", "include: typo.yaml\n")])
    # and a value the including file overrides is the including file's
    fixed = write("fixed.yaml", "include: unknown.yaml\ntrain:\n  lr: 0\n")
    with pytest.raises(ConfigError, match=rf"^{fixed}: 'train.lr' must be > 0, got 0.0$"):
        load_run_config([fixed])
    assert inner.exists()


def test_cross_field_check_names_the_section_key(write):
    path = write("g.yaml", "method:\n  name: gem\n")
    with pytest.raises(ConfigError, match=rf"^{path}: 'method.memory': gem takes one or more memory tasks$"):
        load_run_config([path])


@dataclass
class Inner:
    path: str


@dataclass
class Strict:
    inner: Inner


def test_missing_required_value_is_named():
    with pytest.raises(ConfigError, match=r"missing required value 'inner\.path'"):
        build(Strict, {"inner": {}})
    assert build(Strict, {"inner": {"path": "p"}}).inner.path == "p"


def test_resolved_config_round_trips_through_yaml(write):
    config = load_run_config([], ["method.name=gem", "method.memory=[mlm, xsr]", "train.lr=3e-5", "task.targets=[es]"])
    path = write("resolved.yaml", dump_yaml(config))
    assert load_run_config([path]) == config


def test_usage_config_reference_is_current():
    from distgem.config.reference import BEGIN, END, reference
    from tests.support import ROOT

    text = (ROOT / "docs" / "USAGE.md").read_text()
    assert text[text.index(BEGIN) : text.index(END) + len(END)] == reference(), "run python -m distgem.config.reference"
