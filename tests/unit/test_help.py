"""Every subcommand's arguments say what they are, and `train --help` shows runnable examples."""

from __future__ import annotations

import argparse
import importlib
import re

import pytest

from distgem.cli import COMMANDS, main
from tests.support import ROOT


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_argument_has_a_help_string(command):
    parser = argparse.ArgumentParser()
    importlib.import_module(COMMANDS[command][0]).add_arguments(parser)
    silent = [a.dest for a in parser._actions if a.help is None]
    assert not silent, f"distgem {command}: arguments without help: {silent}"


def test_train_help_shows_examples_whose_files_exist(capsys):
    with pytest.raises(SystemExit) as done:
        main(["train", "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    assert "examples:" in text and "exit codes:" in text
    configs = re.findall(r"--config (configs/\S+\.yaml)", text)
    assert len(configs) >= 5 and all((ROOT / c).is_file() for c in configs), configs
