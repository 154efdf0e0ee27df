"""The DeepSpeed adapter refuses a DeepSpeed outside the range it was tested with, in one line, and the pins agree."""

from __future__ import annotations

import re

import pytest

from distgem.distributed.deepspeed import SUPPORTED, check_version
from distgem.errors import UserError
from tests.support import ROOT


@pytest.mark.parametrize("version", ["0.14.0", "0.19.7", "0.20.0", "1.0.0"])
def test_an_unsupported_deepspeed_is_refused_with_the_range_named(version, monkeypatch):
    monkeypatch.delenv("DISTGEM_ALLOW_DEEPSPEED", raising=False)
    with pytest.raises(UserError) as err:
        check_version(version)
    message = str(err.value)
    assert f"deepspeed {version} is not supported" in message and f">={SUPPORTED[0]},<{SUPPORTED[1]}" in message
    assert "\n" not in message
    monkeypatch.setenv("DISTGEM_ALLOW_DEEPSPEED", "1")
    check_version(version)  # the user's explicit choice


@pytest.mark.parametrize("version", ["0.19.8", "0.19.9", "0.19.10rc1"])
def test_supported_versions_pass(version, monkeypatch):
    monkeypatch.delenv("DISTGEM_ALLOW_DEEPSPEED", raising=False)
    check_version(version)


def test_the_installed_deepspeed_and_the_pins_agree_with_the_adapter():
    check_version()  # the environment the tests run in is a supported one
    pin = f"deepspeed>={SUPPORTED[0]},<{SUPPORTED[1]}"
    assert re.search(rf'"{re.escape(pin)}"', (ROOT / "pyproject.toml").read_text()), "pyproject.toml pins another range"
    assert pin in (ROOT / "constraints.txt").read_text().splitlines(), "constraints.txt pins another range"
